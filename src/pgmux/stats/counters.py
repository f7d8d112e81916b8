"""Per-pool traffic counters, the raw material of SHOW STATS and the Prometheus series."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(slots=True)
class Counters:
    """Monotonic totals; times in microseconds, as PgBouncer reports them."""

    server_assignment_count: int = 0
    xact_count: int = 0
    query_count: int = 0
    bytes_received: int = 0   # from clients
    bytes_sent: int = 0       # to clients
    xact_time: int = 0
    query_time: int = 0
    wait_time: int = 0
    client_parse_count: int = 0
    server_parse_count: int = 0
    bind_count: int = 0
    session_replays: int = 0    # pgmux: session state brought to a server at a link
    session_readbacks: int = 0  # pgmux: session state read back after a transaction

    def copy(self) -> Counters:
        return Counters(*(getattr(self, f.name) for f in fields(self)))

    def add(self, other: Counters) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def minus(self, other: Counters) -> Counters:
        return Counters(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))


COUNTER_NAMES = tuple(f.name for f in fields(Counters))
