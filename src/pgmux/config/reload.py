"""Compares two Configs for RELOAD: what changed, and what cannot change without a restart."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from pgmux.config.model import Config
from pgmux.config.settings import PgmuxSettings, Settings

# Settings PgBouncer reads only at startup: on RELOAD a change is logged and ignored.
NOT_RELOADABLE: frozenset[str] = frozenset({
    "listen_addr",
    "listen_port",
    "listen_backlog",
    "unix_socket_dir",
    "unix_socket_mode",
    "unix_socket_group",
    "user",
    "pidfile",
    "service_name",
    "so_reuseport",
    "peer_id",
})


@dataclass(frozen=True)
class ConfigDiff:
    """What a RELOAD from ``old`` to ``new`` changes. All name tuples are sorted."""

    databases_added: tuple[str, ...] = ()
    databases_removed: tuple[str, ...] = ()
    databases_changed: tuple[str, ...] = ()
    users_added: tuple[str, ...] = ()
    users_removed: tuple[str, ...] = ()
    users_changed: tuple[str, ...] = ()
    settings_changed: tuple[str, ...] = ()  # every [pgbouncer] name whose value differs
    not_reloadable: tuple[str, ...] = ()  # the subset of settings_changed kept until restart
    pgmux_changed: tuple[str, ...] = ()
    userlist_changed: tuple[str, ...] = ()  # users added, removed or with a new secret
    peers_changed: bool = False

    @property
    def changed(self) -> bool:
        """True when anything at all differs."""
        return any(
            getattr(self, f.name) for f in dataclasses.fields(self)
        )

    @property
    def online_ok(self) -> bool:
        """True when every change can be applied without restarting."""
        return not self.not_reloadable

    def ignored_messages(self) -> tuple[str, ...]:
        """One log line per change that RELOAD leaves in effect until restart."""
        return tuple(
            f"RELOAD: setting '{name}' changed; it takes effect only after a restart"
            for name in self.not_reloadable
        )


_V = TypeVar("_V")
_S = TypeVar("_S", Settings, PgmuxSettings)


def _compare(old: Mapping[str, _V], new: Mapping[str, _V]) -> tuple[
        tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    added = tuple(sorted(k for k in new if k not in old))
    removed = tuple(sorted(k for k in old if k not in new))
    changed = tuple(sorted(k for k in new if k in old and old[k] != new[k]))
    return added, removed, changed


def _field_changes(old: _S, new: _S) -> tuple[str, ...]:
    return tuple(sorted(
        f.name for f in dataclasses.fields(old)
        if getattr(old, f.name) != getattr(new, f.name)
    ))


def diff(old: Config, new: Config) -> ConfigDiff:
    """Describe the change from ``old`` to ``new``."""
    db_added, db_removed, db_changed = _compare(old.databases, new.databases)
    us_added, us_removed, us_changed = _compare(old.users, new.users)
    ul_added, ul_removed, ul_changed = _compare(old.userlist, new.userlist)
    settings_changed = tuple(
        name for name in _field_changes(old.settings, new.settings) if name != "conffile"
    )
    return ConfigDiff(
        databases_added=db_added,
        databases_removed=db_removed,
        databases_changed=db_changed,
        users_added=us_added,
        users_removed=us_removed,
        users_changed=us_changed,
        settings_changed=settings_changed,
        not_reloadable=tuple(n for n in settings_changed if n in NOT_RELOADABLE),
        pgmux_changed=_field_changes(old.pgmux, new.pgmux),
        userlist_changed=tuple(sorted(ul_added + ul_removed + ul_changed)),
        peers_changed=dict(old.peers) != dict(new.peers),
    )
