"""One (database, user) pool as the running pooler sees it: the synchronous core plus its
server login identity, welcome parameters, login-failure memory and counters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pgmux.pool.core import PoolCore, PoolLimits
from pgmux.stats.counters import Counters


class Pool:
    """State of one pool; the pooler makes the decisions that need the loop."""

    __slots__ = ("name", "user", "host", "port", "dbname", "server_user", "server_password",
                 "pool_mode", "connect_query", "extra_startup", "core", "welcome",
                 "welcome_cache", "welcome_waiters", "last_login_failed", "last_login_sqlstate",
                 "last_login_error", "login_transient", "login_retry_at", "login_backoff",
                 "stats", "scram_keys", "round_robin", "host_counter", "host_failed",
                 "last_lifetime_close", "canonical")

    def __init__(
        self,
        name: str,
        user: str,
        *,
        host: str | None,
        port: int,
        dbname: str,
        server_user: str,
        server_password: str | None,
        pool_mode: str,
        limits: PoolLimits,
        connect_query: str | None = None,
        startup: dict[str, str] | None = None,
        round_robin: bool = True,
    ) -> None:
        self.name = name                  # database name as clients see it
        self.user = user                  # client login user
        self.host = host
        self.port = port
        self.dbname = dbname              # database name on the server
        self.server_user = server_user
        self.server_password = server_password
        self.pool_mode = pool_mode
        self.connect_query = connect_query
        self.extra_startup = dict(startup or {})
        self.core: PoolCore[Any, Any] = PoolCore(limits)
        self.welcome: dict[str, str] | None = None   # ParameterStatus set from the first login
        # startup parameters -> (ParameterStatus bytes, tracked values), built by the pooler
        self.welcome_cache: dict[tuple[tuple[str, str], ...], tuple[bytes, dict[str, str]]] = {}
        self.welcome_waiters: list[Callable[[str | None], None]] = []
        # NOTE: login-failure memory, written by proxy/launch.py alone.
        self.last_login_failed = 0.0      # monotonic time of the last failed login, 0 if none
        self.last_login_sqlstate = "08P01"
        self.last_login_error = ""        # what the last failed login said
        self.login_transient = False      # the server was unreachable, starting or full
        self.login_retry_at = 0.0         # no new login before this monotonic time
        self.login_backoff = 0.0          # the wait before the next retry of a transient one
        self.stats = Counters()
        self.scram_keys: Any = None       # a client's SCRAM keys, to log in with a verifier
        # NOTE: host=a,b,c: load_balance_hosts = round-robin (True) or disable, the pool's
        # position in the list and whether the last connect failed (proxy/launch.py's).
        self.round_robin = round_robin
        self.host_counter = 0
        self.host_failed = False
        # NOTE: monotonic time the pool last closed a server for server_lifetime (0: never);
        # such closes are spread server_lifetime / pool_size apart (proxy/limits.py life_over).
        self.last_lifetime_close = 0.0
        # NOTE: (parameter, value a client asked for) -> the value the server holds then
        # ("DateStyle", "ISO") -> "ISO, MDY": a client asking for one spelling is not seen as
        # differing from a server reporting the other (protocol/state.py: canonical_values).
        self.canonical: dict[tuple[str, str], str] = {}

    @property
    def limits(self) -> PoolLimits:
        return self.core.limits

    def learn_canonical(self, learnt: dict[tuple[str, str], str]) -> None:
        """Values a server turned the asked ones into; welcomes built before are stale."""
        changed = False
        for key, value in learnt.items():
            if self.canonical.get(key) != value and len(self.canonical) < 1024:
                self.canonical[key] = value
                changed = True
        if changed:
            self.welcome_cache.clear()

    def startup_params(self) -> dict[str, str]:
        params = {"user": self.server_user, "database": self.dbname}
        params.update(self.extra_startup)
        return params

    def __repr__(self) -> str:
        return f"<Pool {self.name}/{self.user}>"
