"""No setting silently ignored: docs/configuration.md, config/unsupported.py and the source agree,
and loading a file that sets an unsupported setting logs one warning naming it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from pgmux.config import ConfigError, load_config
from pgmux.config import loader as config_loader
from pgmux.config.settings import SETTING_ALIASES, Settings
from pgmux.config.unsupported import (
    UNSUPPORTED_DATABASE_KEYS,
    UNSUPPORTED_PEER_KEYS,
    UNSUPPORTED_SETTINGS,
    UNSUPPORTED_USER_KEYS,
)
from tests.config.conftest import WriteFile

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
SRC = ROOT / "src" / "pgmux"
STATUSES = {"supported", "differs", "not supported"}
_ROW = re.compile(r"^\| `([a-z0-9_]+)` \| ([a-z ]+) \| (.*)\|\s*$")


def _doc_rows() -> dict[str, dict[str, str]]:
    """{section: {name: status}} from the tables under each `### [section] ...` heading."""
    rows: dict[str, dict[str, str]] = {}
    section = ""
    for line in DOC.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^### \[(\w+)\]", line)
        if heading:
            section = heading.group(1)
            continue
        row = _ROW.match(line)
        if row and section:
            name, status, notes = row.groups()
            assert status in STATUSES, f"{name}: status {status!r}"
            assert name not in rows.get(section, {}), f"[{section}] {name} listed twice"
            if status != "supported":
                assert notes.strip(), f"[{section}] {name}: {status} needs a note"
            rows.setdefault(section, {})[name] = status
    return rows


def _not_supported(rows: dict[str, str]) -> set[str]:
    return {name for name, status in rows.items() if status == "not supported"}


def test_every_pgbouncer_setting_is_listed_once_with_a_status() -> None:
    listed = _doc_rows()["pgbouncer"]
    names = {f.name for f in dataclasses.fields(Settings)}
    assert set(listed) == names
    assert set(SETTING_ALIASES.values()) <= names


def test_every_entry_key_is_listed() -> None:
    rows = _doc_rows()
    keys = {
        "databases": set(config_loader._DATABASE_KEYS) - {"reserve_pool"}
        | set(UNSUPPORTED_DATABASE_KEYS),
        "users": set(config_loader._USER_KEYS) | set(UNSUPPORTED_USER_KEYS),
        "peers": set(config_loader._PEER_KEYS) | set(UNSUPPORTED_PEER_KEYS),
    }
    for section, names in keys.items():
        assert set(rows[section]) == names, section


def test_docs_not_supported_rows_are_exactly_the_table() -> None:
    rows = _doc_rows()
    assert _not_supported(rows["pgbouncer"]) == set(UNSUPPORTED_SETTINGS)
    assert _not_supported(rows["databases"]) == set(UNSUPPORTED_DATABASE_KEYS)
    assert _not_supported(rows["users"]) == set(UNSUPPORTED_USER_KEYS)
    assert _not_supported(rows["peers"]) == set(UNSUPPORTED_PEER_KEYS)


def _read_in_source(name: str) -> bool:
    """True when some module other than the settings' declaration reads ``.name``."""
    pattern = re.compile(rf"\.{name}\b")
    for path in SRC.rglob("*.py"):
        if path.name in ("settings.py", "unsupported.py"):
            continue
        if pattern.search(path.read_text(encoding="utf-8")):
            return True
    return False


def test_every_setting_is_read_somewhere_or_listed_as_unsupported() -> None:
    silent = [f.name for f in dataclasses.fields(Settings)
              if f.name not in UNSUPPORTED_SETTINGS and not _read_in_source(f.name)]
    assert silent == []
    # NOTE: and the table names no setting that pgmux does read (it would lie to the operator)
    assert [n for n in UNSUPPORTED_SETTINGS if _read_in_source(n)] == []


@pytest.mark.parametrize("name", sorted(UNSUPPORTED_SETTINGS))
def test_a_non_default_value_logs_one_warning(write: WriteFile, name: str) -> None:
    f = next(f for f in dataclasses.fields(Settings) if f.name == name)
    value = {bool: "0" if f.default else "1", float: "7", int: "9999"}.get(type(f.default), "x")
    cfg = load_config(write("p.ini", f"[pgbouncer]\nauth_type = trust\n{name} = {value}\n"))
    assert cfg.warnings == (
        f'{cfg.path}:3: setting "{name}" is not supported by pgmux and is ignored: '
        f"{UNSUPPORTED_SETTINGS[name]}",)


def test_the_default_value_and_supported_settings_log_nothing(write: WriteFile) -> None:
    cfg = load_config(write("p.ini", """
        [pgbouncer]
        auth_type = trust
        dns_max_ttl = 15
        pkt_buf = 4096
        tcp_keepidle = 30
        syslog = 0
        max_packet_size = 100000
    """))
    assert cfg.warnings == ()


def test_job_name_is_named_as_written(write: WriteFile) -> None:
    cfg = load_config(write("p.ini", "[pgbouncer]\nauth_type = trust\njob_name = x\n"))
    assert len(cfg.warnings) == 1 and 'setting "job_name"' in cfg.warnings[0]


def test_entry_keys_load_with_a_warning(write: WriteFile) -> None:
    cfg = load_config(write("p.ini", """
        [databases]
        app = host=h target_session_attrs=read-write query_wait_timeout=5
        other = host=h target_session_attrs=any query_wait_timeout=-1
        [users]
        bob = pool_mode=session query_wait_timeout=3
        [peers]
        2 = host=/tmp/p2 pool_size=4
        [pgbouncer]
        auth_type = trust
    """))
    assert cfg.databases["app"].host == "h" and cfg.users["bob"].pool_mode == "session"
    named = [re.sub(r"^.*?: \[", "[", w).split(" is not")[0] for w in cfg.warnings]
    assert named == [
        '[databases] app: connection parameter "target_session_attrs"',
        '[databases] app: connection parameter "query_wait_timeout"',
        '[users] bob: user parameter "query_wait_timeout"',
        '[peers] 2: peer parameter "pool_size"',
    ]


@pytest.mark.parametrize("method", ["pam", "ldap"])
def test_auth_types_pgmux_cannot_do_are_said_at_load(write: WriteFile, method: str) -> None:
    cfg = load_config(write("p.ini", f"[pgbouncer]\nauth_type = {method}\n"))
    assert len(cfg.warnings) == 1
    assert f'auth_type "{method}"' in cfg.warnings[0] and "every login is refused" in \
        cfg.warnings[0]


def test_abstract_unix_socket_is_refused(write: WriteFile) -> None:
    with pytest.raises(ConfigError, match="abstract namespace"):
        load_config(write("p.ini", "[pgbouncer]\nauth_type = trust\nunix_socket_dir = @pgb\n"))
