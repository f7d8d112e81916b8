"""Pure rules that turn a server's facts into findings and advice: no I/O, no clock."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

from pgmux.doctor.facts import ServerFacts, Session
from pgmux.doctor.findings import Diagnosis, Finding, Severity, Thresholds
from pgmux.doctor.pins import pinned_servers, pins_advice, pooler_console
from pgmux.doctor.plan import POOLER_SHARE, auto_pool_size
from pgmux.doctor.poolers import Pooled, detect_pooler, pooled_by
from pgmux.doctor.share import share_note
from pgmux.doctor.units import format_duration

LOCAL_SOCKET = "local socket"  # how a Unix-socket client (client_addr NULL) is named


def _ladder(share: float, t: Thresholds) -> Severity:
    if share >= t.at_limit:
        return "critical"
    if share >= t.near_limit:
        return "warning"
    return "info"


def _client(session: Session) -> str:
    return session.client_addr or LOCAL_SOCKET


def _group_key(session: Session) -> tuple[str, str, str]:
    return (session.application_name, session.user or "?", _client(session))


def _grouped(sessions: Iterable[Session]) -> dict[tuple[str, str, str], list[Session]]:
    groups: dict[tuple[str, str, str], list[Session]] = defaultdict(list)
    for session in sessions:
        groups[_group_key(session)].append(session)
    # NOTE: biggest group first: it is the likeliest culprit and the one a reader should see.
    return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def _app_label(application_name: str) -> str:
    return repr(application_name) if application_name else "an unnamed application"


# --- the rules: each takes facts and thresholds and returns its findings ---------------------


def connection_usage(facts: ServerFacts, t: Thresholds) -> list[Finding]:
    """All client backends against max_connections minus every reserved slot."""
    limits = facts.limits
    used = len(facts.sessions)
    usable = limits.usable
    share = used / usable if usable else 1.0
    severity = _ladder(share, t)
    if severity == "info":
        return []
    code = "connections-at-limit" if severity == "critical" else "connections-near-limit"
    return [
        Finding(
            code,
            severity,
            f"{used} of {usable} usable connections in use ({share:.0%}); new connections "
            + ("are about to be refused" if severity == "critical" else "will soon be refused"),
            {
                "used": used,
                "usable": usable,
                "max_connections": limits.max_connections,
                "reserved": limits.reserved_total,
                "share": round(share, 3),
            },
        )
    ]


def _unpooled(facts: ServerFacts) -> list[Session]:
    """Every session but the doctor's own and a pooler's server connections."""
    return [s for s in facts.others if pooled_by(s) is None]


def idle_connections(facts: ServerFacts, t: Thresholds) -> list[Finding]:
    """Idle connections grouped by application, user and client, a pooler's own excepted:
    past the threshold a likely leak; below it, a group of idle_group_warning or more is
    listed with its age."""
    at = facts.collected_at
    idle = [s for s in _unpooled(facts) if s.state == "idle"]
    findings = []
    usable = facts.limits.usable or 1
    for (app, user, client), group in _grouped(idle).items():
        longest = max(s.state_duration(at) or 0.0 for s in group)
        big = len(group) >= t.idle_group_warning or len(group) * 10 >= usable
        old = [s for s in group if (s.state_duration(at) or 0.0) >= t.idle]
        who = f"from {_app_label(app)} (user {user}, {client})"
        if old:
            group, big = old, len(old) >= t.idle_group_warning or len(old) * 10 >= usable
            severity: Severity = "warning" if big else "info"
            message = (
                f"{len(group)} connection(s) {who} "
                + (f"idle for more than {format_duration(t.idle)}" if t.idle > 0 else "idle")
                + f" (longest {format_duration(longest)}): "
                + ("a likely connection leak" if big else "held but unused")
            )
        elif len(group) >= t.idle_group_warning:
            severity = "info"
            message = (
                f"{len(group)} connection(s) {who} idle (longest {format_duration(longest)}), "
                f"holding {len(group)} of {facts.limits.usable} usable slots: a leak if they "
                f"stay idle past {format_duration(t.idle)}"
            )
        else:
            continue
        findings.append(
            Finding(
                "idle-connections",
                severity,
                message,
                {
                    "application_name": app,
                    "user": user,
                    "client_addr": client,
                    "count": len(group),
                    "longest_idle": round(longest, 3),
                    "past_threshold": bool(old),
                    "pids": [s.pid for s in group],
                },
            )
        )
    return findings


def _stuck_severity(seconds: float, t: Thresholds) -> Severity:
    if seconds >= max(t.idle_in_transaction_critical, t.idle_in_transaction):
        return "critical"
    return "warning" if seconds >= t.idle_in_transaction else "info"


def idle_in_transaction(facts: ServerFacts, t: Thresholds) -> list[Finding]:
    """Sessions idle inside an open transaction: they hold locks and a slot at any age and no
    pool can reuse them; the longer, the worse."""
    at = facts.collected_at
    floor = min(t.idle_in_transaction_floor, t.idle_in_transaction)
    stuck = [
        s
        for s in facts.others
        if s.is_idle_in_transaction and (s.state_duration(at) or 0.0) >= floor
    ]
    findings = []
    for (app, user, client), group in _grouped(stuck).items():
        oldest = max(s.xact_age(at) or 0.0 for s in group)
        longest = max(s.state_duration(at) or 0.0 for s in group)
        findings.append(
            Finding(
                "idle-in-transaction",
                _stuck_severity(longest, t),
                f"{len(group)} session(s) from {_app_label(app)} (user {user}, {client}) idle "
                f"in transaction for {format_duration(longest)} (transaction open "
                f"{format_duration(oldest)}): they hold their locks and a connection until "
                "they commit or roll back",
                {
                    "application_name": app,
                    "user": user,
                    "client_addr": client,
                    "count": len(group),
                    "longest_idle_in_transaction": round(longest, 3),
                    "oldest_transaction": round(oldest, 3),
                    "pids": [s.pid for s in group],
                    "states": sorted({s.state or "" for s in group}),
                },
            )
        )
    return findings


def long_running_queries(facts: ServerFacts, t: Thresholds) -> list[Finding]:
    """Queries active for longer than the threshold."""
    at = facts.collected_at
    running = sorted(
        (
            s
            for s in facts.others
            if s.state == "active" and (s.query_age(at) or 0.0) >= t.long_query
        ),
        key=lambda s: -(s.query_age(at) or 0.0),
    )
    if not running:
        return []
    longest = running[0].query_age(at) or 0.0
    return [
        Finding(
            "long-running-query",
            "warning",
            f"{len(running)} quer{'y' if len(running) == 1 else 'ies'} running for more than "
            f"{format_duration(t.long_query)} (longest {format_duration(longest)}, "
            f"pid {running[0].pid})",
            {
                "count": len(running),
                "queries": [
                    {
                        "pid": s.pid,
                        "application_name": s.application_name,
                        "user": s.user,
                        "seconds": round(s.query_age(at) or 0.0, 3),
                        "wait_event": s.wait_event,
                        "query": " ".join(s.query.split())[:200],
                    }
                    for s in running[:10]
                ],
            },
        )
    ]


def role_limits(facts: ServerFacts, t: Thresholds) -> list[Finding]:
    """Role connection limits (rolconnlimit) lower than the server's: they bite first."""
    usable = facts.limits.usable
    findings = []
    for role in facts.role_limits:
        if role.limit >= usable:
            continue  # NOTE: the server runs out before this role does
        share = role.connections / role.limit if role.limit else 1.0
        severity = _ladder(share, t)
        findings.append(
            Finding(
                "role-limit",
                severity,
                f"role {role.role} may open {role.limit} connection(s) (CONNECTION LIMIT), "
                f"fewer than the server's {usable}; it has {role.connections} now",
                {"role": role.role, "limit": role.limit, "connections": role.connections},
            )
        )
    return findings


def database_limits(facts: ServerFacts, t: Thresholds) -> list[Finding]:
    """Database connection limits (datconnlimit) lower than the server's: they bite first."""
    usable = facts.limits.usable
    findings = []
    for db in facts.database_limits:
        if db.limit >= usable:
            continue
        share = db.connections / db.limit if db.limit else 1.0
        findings.append(
            Finding(
                "database-limit",
                _ladder(share, t),
                f"database {db.database} accepts {db.limit} connection(s) (CONNECTION LIMIT), "
                f"fewer than the server's {usable}; it has {db.connections} now",
                {"database": db.database, "limit": db.limit, "connections": db.connections},
            )
        )
    return findings


def many_from_one_client(facts: ServerFacts, t: Thresholds) -> list[Finding]:
    """Many sessions from one client address, a pooler's own excepted: a process that opens
    connections without a pool."""
    by_client: dict[str, list[Session]] = defaultdict(list)
    for session in _unpooled(facts):
        by_client[_client(session)].append(session)
    findings = []
    for client, group in sorted(by_client.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        if len(group) < t.many_per_client:
            continue
        apps: dict[str, int] = defaultdict(int)
        for session in group:
            apps[session.application_name] += 1
        ranked = sorted(apps.items(), key=lambda kv: (-kv[1], kv[0]))
        names = ", ".join(f"{n} {_app_label(app)}" for app, n in ranked[:4])
        if len(ranked) > 4:
            names += ", ..."
        findings.append(
            Finding(
                "many-connections-from-one-client",
                "warning",
                f"{len(group)} connections from {client} ({names}): a process without a pool, "
                "or a pool sized too large for this server",
                {"client_addr": client, "count": len(group), "applications": dict(ranked)},
            )
        )
    return findings


def pooler_connections(facts: ServerFacts, t: Thresholds) -> list[Finding]:
    """A pooler's own server connections (pgmux, PgBouncer, ...): idle ones are its pool, not a
    leak; more than the pooler's share of the usable slots leaves too little for the rest."""
    at = facts.collected_at
    groups: dict[tuple[str, str, str], list[tuple[Session, Pooled]]] = defaultdict(list)
    for session in facts.others:
        pooled = pooled_by(session)
        if pooled is not None:
            groups[(pooled.pooler, session.user or "?", _client(session))].append(
                (session, pooled)
            )
    limits = facts.limits
    budget = auto_pool_size(limits.max_connections, limits.reserved_total, None, None)
    # NOTE: several hosts' pools of one role share its budget: each finding says its share.
    hosts: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for (pooler, user, client), members in groups.items():
        hosts[(pooler, user)][client] = len(members)
    findings = []
    for (pooler, user, client), members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        sessions = [s for s, _ in members]
        idle = [s for s in sessions if s.state == "idle"]
        longest = max((s.state_duration(at) or 0.0 for s in idle), default=0.0)
        too_many = len(sessions) > budget
        message = (
            f"{pooler} holds {len(sessions)} server connection(s) from {client} (user {user}): "
            f"{len(idle)} idle in its pool (longest {format_duration(longest)}), "
            f"{len(sessions) - len(idle)} in use; a pool keeps idle connections for reuse"
        )
        if too_many:
            message += (
                f", but more than {budget} ({POOLER_SHARE:.0%} of the {limits.usable} usable) "
                "leaves too few slots for direct connections"
            )
        share, share_evidence, spent = share_note(facts, user, client, hosts[(pooler, user)])
        message += f"; {share}"
        findings.append(
            Finding(
                "pooler-connections",
                "warning" if too_many or spent else "info",
                message,
                {
                    **share_evidence,
                    "pooler": pooler,
                    "user": user,
                    "client_addr": client,
                    "count": len(sessions),
                    "idle": len(idle),
                    "longest_idle": round(longest, 3),
                    "signs": sorted({p.sign for _, p in members}),
                    "pids": [s.pid for s in sessions],
                },
            )
        )
    return findings


def pooler_in_front(facts: ServerFacts, t: Thresholds) -> list[Finding]:
    """Whether the doctor's own connection went through a pooler or another relay."""
    if facts.endpoints is None:
        return []
    guess = detect_pooler(facts.endpoints)
    if guess.kind == "none":
        return []
    what = "a transaction-mode pooler" if guess.kind == "pooler" else "a relay (pooler or proxy)"
    return [
        Finding(
            "pooler-in-front",
            "info",
            f"this URL seems to reach PostgreSQL through {what}: " + "; ".join(guess.signals),
            guess.to_json(),
        )
    ]


Rule = Callable[[ServerFacts, Thresholds], list[Finding]]

# NOTE: the order here is the order findings are reported in.
RULES: tuple[tuple[str, Rule], ...] = (
    ("connection-usage", connection_usage),
    ("idle-connections", idle_connections),
    ("idle-in-transaction", idle_in_transaction),
    ("long-running-query", long_running_queries),
    ("role-limit", role_limits),
    ("database-limit", database_limits),
    ("many-connections-from-one-client", many_from_one_client),
    ("pooler-connections", pooler_connections),
    ("pooler-in-front", pooler_in_front),
    ("pooler-console", pooler_console),
    ("pinned-servers", pinned_servers),
)


# --- advice and the whole diagnosis ----------------------------------------------------------


def advise(facts: ServerFacts, findings: Iterable[Finding]) -> list[str]:
    """Concrete next steps drawn from the facts and the findings."""
    by_code: dict[str, list[Finding]] = defaultdict(list)
    for finding in findings:
        by_code[finding.code].append(finding)
    limits = facts.limits
    budget = auto_pool_size(
        limits.max_connections, limits.reserved_total, limits.role_limit, limits.db_limit
    )
    advice: list[str] = []
    if "connections-at-limit" in by_code:
        advice.append(
            "Free slots now: `pgmux killall URL --idle --idle-for 10m --dry-run` lists idle "
            "sessions to end (then run it with --yes); then fix the cause below."
        )
    leaks = [f for f in by_code["idle-connections"] if f.severity != "info"]
    crowded = [f for f in by_code["many-connections-from-one-client"] if f.severity != "info"]
    in_front = "pooler-in-front" in by_code
    pools = by_code["pooler-connections"]
    if leaks:
        names = ", ".join(sorted({_app_label(f.evidence["application_name"]) for f in leaks}))
        advice.append(
            f"Look for the leak in {names}: connections opened per request or job and never "
            "returned; as a safety net, end idle sessions server-side with "
            "ALTER ROLE <role> SET idle_session_timeout = '10min' (PostgreSQL 14+)."
        )
    if (leaks or crowded or "connections-near-limit" in by_code) and not (in_front or pools):
        advice.append(
            "Put pgmux between the applications and PostgreSQL in transaction mode "
            f"(pool_mode = transaction, default_pool_size = {budget}, max_client_conn = 1000): "
            "idle application connections then cost no server slot. Run one pgmux per app host "
            "(sidecar; split the pool size between hosts) or one central pgmux next to the "
            "database. Use session mode only for clients that need session state (SET, "
            "advisory locks, LISTEN, WITH HOLD cursors)."
        )
    if pools:
        where = ", ".join(
            sorted({f"{f.evidence['pooler']} on {f.evidence['client_addr']}" for f in pools})
        )
        direct = sorted(
            {_app_label(f.evidence["application_name"]) for f in leaks}
            | {_app_label(app) for f in crowded for app in f.evidence["applications"]}
        )
        advice.append(
            f"A pooler already holds connections here ({where}): keep its server side at "
            f"{budget} connection(s) or fewer ({POOLER_SHARE:.0%} of the usable {limits.usable})"
            + (f" and point {', '.join(direct)} at it instead of at PostgreSQL." if direct
               else ".")
        )
    elif in_front:
        advice.append(
            "A pooler seems to be in front already: keep its server side at "
            f"{budget} connection(s) or fewer ({POOLER_SHARE:.0%} of the usable "
            f"{limits.usable}) and point every application at it, not at PostgreSQL."
        )
    stuck = [f for f in by_code["idle-in-transaction"] if f.severity != "info"]
    if stuck:
        names = ", ".join(sorted({_app_label(f.evidence["application_name"]) for f in stuck}))
        advice.append(
            f"Commit or roll back before waiting on anything else in {names} (no network calls "
            "or user input inside a transaction); set "
            "ALTER ROLE <role> SET idle_in_transaction_session_timeout = '60s' so that a stuck "
            "transaction releases its locks. A pooler cannot reuse a connection that stays in "
            "a transaction."
        )
    advice.extend(pins_advice(by_code["pinned-servers"]))
    if by_code["long-running-query"]:
        advice.append(
            "Bound query time with ALTER ROLE <role> SET statement_timeout = '30s' (longer for "
            "batch roles) and look at the slow queries with EXPLAIN (ANALYZE, BUFFERS)."
        )
    for finding in by_code["role-limit"] + by_code["database-limit"]:
        limit = int(finding.evidence["limit"])
        size = auto_pool_size(limits.max_connections, limits.reserved_total, limit, None)
        who = finding.evidence.get("role") or finding.evidence.get("database")
        kind = "role" if finding.code == "role-limit" else "database"
        advice.append(
            f"{kind.capitalize()} {who} hits its CONNECTION LIMIT {limit} before the server "
            f"does: keep the pools for it at {size} connection(s) in total."
        )
    if crowded:
        clients = ", ".join(str(f.evidence["client_addr"]) for f in crowded)
        advice.append(
            f"Give the processes on {clients} a connection pool with a fixed size, "
            "or run pgmux on that host and point them at it."
        )
    advice.append(
        f"Size all application pools together at {budget} connection(s) or fewer "
        f"({POOLER_SHARE:.0%} of the {limits.usable} usable = max_connections "
        f"{limits.max_connections} - reserved {limits.reserved_total}); leave the rest for "
        "migrations, consoles and monitoring. `pgmux plan --limit "
        f"{limits.usable} ...` checks a deployment."
    )
    return advice


def diagnose(facts: ServerFacts, thresholds: Thresholds | None = None) -> Diagnosis:
    """Run every rule in RULES over the facts, then derive the advice."""
    t = thresholds or Thresholds()
    findings: list[Finding] = []
    for _name, rule in RULES:
        findings.extend(rule(facts, t))
    return Diagnosis(tuple(findings), tuple(advise(facts, findings)))
