"""A pooler host's share of a role's connections: several pgmux (or PgBouncer) hosts in front
of one database share one budget, often a role's CONNECTION LIMIT; the doctor says, for each
host's pool, how much of that budget it holds, what the other hosts hold and what is left."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pgmux.doctor.facts import ServerFacts


def role_budget(facts: ServerFacts, user: str) -> tuple[int, int, str, bool]:
    """(budget, connections counted against it, its name, whether it is the role's own): the
    role's CONNECTION LIMIT, or the server's usable connections when the role has none."""
    for role in facts.role_limits:
        if role.role == user:
            return (role.limit, role.connections,
                    f"role {user}'s CONNECTION LIMIT {role.limit}", True)
    usable = facts.limits.usable
    return usable, len(facts.sessions), f"the server's {usable} usable connections", False


def share_note(facts: ServerFacts, user: str, host: str,
               hosts: Mapping[str, int]) -> tuple[str, dict[str, Any], bool]:
    """The sentence on `host`'s share of `user`'s budget among the pooler `hosts` (host ->
    server connections), its evidence, and whether the role's own limit is spent."""
    budget, used, what, own = role_budget(facts, user)
    mine = hosts.get(host, 0)
    others = {h: n for h, n in sorted(hosts.items()) if h != host}
    left = max(0, budget - used)
    pct = f" ({mine / budget:.0%})" if budget else ""
    text = f"this host's share: {mine} of {what}{pct}"
    if others:
        text += f", {len(others)} other host(s) {sum(others.values())} (" + ", ".join(
            f"{h} {n}" for h, n in others.items()) + ")"
    text += f", {left} left"
    # NOTE: a full server is the connection-usage rule's finding, whoever fills it; a spent
    # role limit is this pool's own ceiling.
    full = own and budget > 0 and used >= budget
    if full:
        text += (" - spent: a new server login of this role is refused (SQLSTATE 53300) "
                 "until one closes; pgmux keeps its clients queued meanwhile")
    evidence = {"budget": budget, "budget_of": what, "left": left, "other_hosts": others}
    return text, evidence, full
