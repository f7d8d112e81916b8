"""The Unix socket as PgBouncer installs use it (`psql -h /tmp -p 6432`), with pgmux and its
clients running as unprivileged users: the socket's mode and group are what the config says."""

from __future__ import annotations

import os
import stat

import pytest

from tests import unprivileged
from tests.integration.conftest import Pgmux, PgmuxFactory

pytestmark = pytest.mark.skipif(not unprivileged.user().switches,
                                reason="needs root to act as two unprivileged users")


def _socket(pgmux: Pgmux) -> str:
    return os.path.join(pgmux.socket_dir, f".s.PGSQL.{pgmux.port}")


def _select(pgmux: Pgmux, who: object = None) -> tuple[int, str]:
    out = unprivileged.psql(str(pgmux.socket_dir), pgmux.port, "select 41 + 1",
                            who=who)  # type: ignore[arg-type]
    return out.returncode, out.stdout + out.stderr


def test_default_mode_lets_every_user_connect(pgmux: Pgmux) -> None:
    mode = stat.S_IMODE(os.stat(_socket(pgmux)).st_mode)
    assert mode == 0o777
    assert os.stat(_socket(pgmux)).st_uid == unprivileged.user().uid
    code, text = _select(pgmux)
    assert code == 0 and text.strip() == "42", text
    code, text = _select(pgmux, unprivileged.other_user())
    assert code == 0 and text.strip() == "42", text


@pytest.mark.parametrize("mode", ["0700", "0755", "0666", "700"])
def test_configured_mode_is_applied(pgmux_factory: PgmuxFactory, mode: str) -> None:
    pgmux = pgmux_factory({"unix_socket_mode": mode})
    assert stat.S_IMODE(os.stat(_socket(pgmux)).st_mode) == int(mode, 8)
    code, text = _select(pgmux)
    owner_can_write = int(mode, 8) & 0o200
    assert (code == 0) == bool(owner_can_write), text
    if owner_can_write:
        assert text.strip() == "42"
    code, text = _select(pgmux, unprivileged.other_user())
    if int(mode, 8) & 0o002:
        assert code == 0, text
    else:
        assert code != 0 and "Permission denied" in text, text


def test_socket_group(pgmux_factory: PgmuxFactory) -> None:
    import grp

    own_group = grp.getgrgid(unprivileged.user().gid).gr_name  # type: ignore[arg-type]
    pgmux = pgmux_factory({"unix_socket_mode": "0770", "unix_socket_group": own_group})
    st = os.stat(_socket(pgmux))
    assert stat.S_IMODE(st.st_mode) == 0o770 and st.st_gid == unprivileged.user().gid
    code, text = _select(pgmux)
    assert code == 0 and text.strip() == "42", text
    code, text = _select(pgmux, unprivileged.other_user())
    assert code != 0 and "Permission denied" in text, text


def test_socket_group_not_ours_is_a_clear_error(pgmux_factory: PgmuxFactory) -> None:
    with pytest.raises(RuntimeError) as err:
        pgmux_factory({"unix_socket_group": "nogroup"})
    assert "unix_socket_group nogroup: cannot give it" in str(err.value)
    assert "Operation not permitted" in str(err.value)
