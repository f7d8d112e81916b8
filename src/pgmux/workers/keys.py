"""Cancel keys that say where their client lives: PgBouncer's peer_id (the key's 2nd and 3rd
bytes, with a forwarding TTL in the last two bits), and the worker (the 4th byte)."""

from __future__ import annotations

from dataclasses import dataclass

TTL_MASK = 0x3  # NOTE: as PgBouncer: a cancel may be forwarded between peers 3 times at most


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """How this process marks its cancel keys; peer_id 0 and worker None mark nothing."""

    peer_id: int = 0
    worker: int | None = None

    def stamp(self, pid: int, secret: int) -> tuple[int, int]:
        """A random (pid, secret) with this process's marks written in."""
        if self.peer_id:
            pid = (pid & 0xFF0000FF) | ((self.peer_id & 0xFF) << 16) | \
                ((self.peer_id >> 8) << 8)
            secret |= TTL_MASK
        if self.worker is not None:
            pid = (pid & 0xFFFFFF00) | self.worker
        return pid & 0x7FFFFFFF, secret


def peer_of(pid: int) -> int:
    """The peer_id a key names (0 when the process that made it has none)."""
    return ((pid >> 16) & 0xFF) | (((pid >> 8) & 0xFF) << 8)


def worker_of(pid: int) -> int:
    return pid & 0xFF


def ttl_of(secret: int) -> int:
    return secret & TTL_MASK
