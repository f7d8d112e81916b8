"""Recognise poolers, purely from collected facts: a pooler's own server connections among a
server's sessions, and a pooler or relay between the doctor and the server."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pgmux.doctor.facts import Endpoints, Session

# NOTE: the first word of application_name, lower-cased. A pooler's server connections carry
# such a name when its database entry sets application_name (pgmux's helper connections are
# `pgmux auth_query` and `pgmux pool_size=auto`). `pgmux-doctor` (this tool) is one word and
# no pooler.
POOLER_NAMES = {
    "pgmux": "pgmux",
    "pgbouncer": "PgBouncer",
    "pgcat": "PgCat",
    "pgdog": "PgDog",
    "odyssey": "Odyssey",
    "pgpool": "Pgpool-II",
    "supavisor": "Supavisor",
}
# NOTE: application_name_add_host (PgBouncer and pgmux) appends " - ADDRESS:PORT" of the
# client to the name the client gave; a server connection that carries it was handed out by a
# pooler.
_ADD_HOST = re.compile(r" - (?:\d{1,3}(?:\.\d{1,3}){3}|\[?[0-9A-Fa-f:.]+\]?):\d{1,5}$")
# NOTE: the reset query PgBouncer (session mode) and pgmux run on a server connection before it
# goes back to the pool: an idle session whose last query it was sits in a pool.
RESET_QUERIES = frozenset({"discard all", "discard all;"})


@dataclass(frozen=True)
class Pooled:
    """Which pooler (or kind of pool) holds a session, and the evidence for it."""

    pooler: str  # "pgmux", "PgBouncer", ..., or "a pooler" / "a pool" when unknown
    sign: str  # what gave it away, for the report


def pooled_by(session: Session) -> Pooled | None:
    """The pooler whose server connection `session` is, or None for an ordinary client."""
    name = session.application_name.strip()
    words = name.split()
    if words and words[0].lower() in POOLER_NAMES:
        return Pooled(POOLER_NAMES[words[0].lower()], f"application_name {name!r}")
    if _ADD_HOST.search(name):
        return Pooled("a pooler", "application_name_add_host suffix in application_name")
    if session.state == "idle" and " ".join(session.query.split()).lower() in RESET_QUERIES:
        return Pooled("a pool", "its last query was a pool's reset query (DISCARD ALL)")
    return None


def is_pooled(session: Session) -> bool:
    return pooled_by(session) is not None


# --- a pooler between the doctor and the server ------------------------------------------


@dataclass(frozen=True)
class PoolerGuess:
    """`pooler` (statements moved between backends), `relay` (something in between) or `none`."""

    kind: Literal["pooler", "relay", "none"]
    signals: tuple[str, ...] = ()

    @property
    def detected(self) -> bool:
        return self.kind != "none"

    def to_json(self) -> dict[str, Any]:
        return {"detected": self.detected, "kind": self.kind, "signals": list(self.signals)}


def _plain_addr(addr: str | None) -> str | None:
    if addr is not None and addr.startswith("::ffff:"):
        return addr[len("::ffff:") :]  # NOTE: an IPv4 peer seen on an IPv6 socket
    return addr


def detect_pooler(e: Endpoints) -> PoolerGuess:
    """Guess whether a pooler or proxy sits between the doctor and PostgreSQL.

    A normal connection cannot ask "are you a pooler?", so compare both ends of it:
    1. pg_backend_pid() differs between transactions: a transaction-mode pooler (certain);
    2. we dialled TCP but the server sees a Unix-socket client: a local relay (certain);
    3. the server sees our connection coming from another address:port than our socket's own:
       a pooler, a proxy, or NAT (e.g. a container port mapping);
    4. the port in the URL is not the port the server listens on (inet_server_port());
    5. the server saw another application_name than the one we sent.
    Signals 1-2 alone make it a pooler/relay; of 3-5 it takes two (one is often a port mapping).
    """
    strong: list[str] = []
    weak: list[str] = []
    if len(e.backend_pids) > 1:
        strong.append(
            f"pg_backend_pid() changed between transactions ({', '.join(map(str, e.backend_pids))})"
        )
    tcp = e.local_port is not None
    if tcp and e.server_port is None and e.seen_client_port is None:
        strong.append("connected over TCP but the server sees a Unix-socket client")
    elif tcp and e.seen_client_port is not None:
        ours = (_plain_addr(e.local_addr), e.local_port)
        seen = (_plain_addr(e.seen_client_addr), e.seen_client_port)
        if ours != seen:
            weak.append(
                f"the server sees this connection from {seen[0]}:{seen[1]}, "
                f"it left from {ours[0]}:{ours[1]}"
            )
    if e.dialled_port is not None and e.server_port is not None and e.dialled_port != e.server_port:
        weak.append(f"URL port {e.dialled_port}, server port {e.server_port}")
    if e.seen_application_name is not None and e.seen_application_name != e.sent_application_name:
        weak.append(
            f"application_name {e.sent_application_name!r} arrived as {e.seen_application_name!r}"
        )
    if len(e.backend_pids) > 1:
        return PoolerGuess("pooler", tuple(strong + weak))
    if strong or len(weak) >= 2:
        return PoolerGuess("relay", tuple(strong + weak))
    return PoolerGuess("none", tuple(weak))
