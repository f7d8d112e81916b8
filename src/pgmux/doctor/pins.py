"""Pure rules over what a pooler's console showed: what was read, and pools whose servers are
mostly pinned by their clients' session state (facts in, findings out)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from pgmux.doctor.console import ConsoleFacts, ConsolePool, ConsoleSocket
from pgmux.doctor.facts import ServerFacts
from pgmux.doctor.findings import Finding, Severity, Thresholds

MAX_LISTED = 10  # pinned clients listed in a finding's evidence


def pooler_console(facts: ServerFacts, t: Thresholds) -> list[Finding]:
    """What the doctor read from the pooler's console, or why it could not."""
    c = facts.console
    if c is None:
        return []
    how = "--pooler" if c.source == "flag" else "tried because the URL seems to go through a pooler"
    evidence: dict[str, Any] = {"where": c.where, "source": c.source, "read": c.read}
    if not c.read:
        # NOTE: a console the operator named and cannot be read is worth a warning; one the
        # doctor only guessed at is not (the relay may be no pooler, or PgBouncer's console may
        # refuse this user).
        severity: Severity = "warning" if c.source == "flag" else "info"
        message = f"could not read the pooler console {c.where} ({how}): {c.error}"
        if c.source == "auto":
            message += "; --pooler ADMIN_URL names it (a user in admin_users or stats_users)"
        return [Finding("pooler-console", severity, message, {**evidence, "error": c.error})]
    pinned = [s for s in c.servers if s.pin_reasons]
    message = (
        f"read the pooler console {c.where} ({how}): {len(c.pools)} pool(s), "
        f"{len(c.servers)} server connection(s), {len(c.clients)} client(s)"
    )
    message += (
        f", {len(pinned)} server(s) pinned"
        if c.shows_pins
        else "; no `pinned` column (not pgmux?), so pins are not known"
    )
    evidence.update(
        pools=len(c.pools),
        servers=len(c.servers),
        clients=len(c.clients),
        shows_pins=c.shows_pins,
        pinned_servers=len(pinned),
    )
    return [Finding("pooler-console", "info", message, evidence)]


def _of(pool: ConsolePool, sockets: Iterable[ConsoleSocket]) -> list[ConsoleSocket]:
    return [s for s in sockets if s.database == pool.database and s.user == pool.user]


def _reasons(pinned_clients: list[ConsoleSocket], pinned_servers: list[ConsoleSocket]
             ) -> dict[str, int]:
    """Pinned clients per reason, from SHOW CLIENTS; the servers' column when no client row
    says (the console was read between the two SHOWs)."""
    rows = pinned_clients or pinned_servers
    counts = Counter(reason for s in rows for reason in s.pin_reasons)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _pinned_pool(c: ConsoleFacts, pool: ConsolePool, t: Thresholds) -> Finding | None:
    servers = _of(pool, c.servers)
    pinned = [s for s in servers if s.pin_reasons]
    # NOTE: the pool's servers are as many as its pool_size allows (SHOW DATABASES), or as many
    # as are open when more are: a pool of 10 with 2 servers open, both pinned, can still open
    # 8 more for everyone else.
    size = max(len(servers), c.pool_sizes.get(pool.database, 0))
    if not pinned or len(pinned) <= size * t.pinned_share:
        return None
    clients = [s for s in _of(pool, c.clients) if s.pin_reasons]
    reasons = _reasons(clients, pinned)
    why = ", ".join(f"{reason}: {n}" for reason, n in reasons.items())
    free = size - len(pinned)
    message = (
        f"pool {pool.database}/{pool.user}: {len(pinned)} of {size} server connection(s) "
        f"pinned by clients' session state ({why}); {free} left for every other client"
    )
    if pool.cl_waiting:
        message += f", {pool.cl_waiting} client(s) waiting"
    evidence: Mapping[str, Any] = {
        "database": pool.database,
        "user": pool.user,
        "pool_mode": pool.pool_mode,
        "pinned_servers": len(pinned),
        "servers": len(servers),
        "pool_size": c.pool_sizes.get(pool.database),
        "reasons": reasons,
        "pinned_clients": len(clients),
        "cl_waiting": pool.cl_waiting,
        "maxwait": round(pool.maxwait, 3),
        "clients": [
            {"addr": s.addr, "port": s.port, "application_name": s.application_name,
             "pinned": s.pinned}
            for s in clients[:MAX_LISTED]
        ],
    }
    return Finding("pinned-servers", "warning", message, evidence)


def pinned_servers(facts: ServerFacts, t: Thresholds) -> list[Finding]:
    """Pools whose servers are mostly (more than `pinned_share`, at least one) pinned: the
    rest of the pool's clients share what is left."""
    c = facts.console
    if c is None or not c.read:
        return []
    findings = [_pinned_pool(c, pool, t) for pool in c.pools]
    return [f for f in findings if f is not None]


def pins_advice(findings: Iterable[Finding]) -> list[str]:
    """What to do about pools that pins take over."""
    pools = sorted(
        f"{f.evidence['database']}/{f.evidence['user']}"
        for f in findings
        if f.code == "pinned-servers"
    )
    if not pools:
        return []
    return [
        f"Pinned servers in {', '.join(pools)}: let clients drop session state as soon as they "
        "are done with it (pg_advisory_unlock, UNLISTEN, DROP TABLE or DISCARD TEMP, CLOSE); "
        "take pg_advisory_xact_lock where one transaction is enough; give clients that need a "
        "session throughout `options=-c pgmux.pool_mode=session` and a pool sized for them; "
        "[pgmux] max_pinned_servers caps pins per pool (docs/session-state.md)."
    ]
