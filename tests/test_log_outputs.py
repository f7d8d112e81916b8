"""Where log lines go: syslog (with its ident and facility), a logfile reopened on RELOAD."""

from __future__ import annotations

import logging
import logging.handlers
import os
import socket
from pathlib import Path

import pytest

from pgmux.config.settings import Settings
from pgmux.log import reopen_logfile, syslog_for, syslog_handler


def test_a_line_reaches_syslog_with_ident_and_facility() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        handler = syslog_handler("mybouncer", "local3", receiver.getsockname())
        assert handler is not None
        logger = logging.getLogger("pgmux.test_syslog")
        logger.propagate = False
        logger.addHandler(handler)
        try:
            logger.warning("closing because: %s", "test")
        finally:
            logger.removeHandler(handler)
            handler.close()
        data = receiver.recv(4096).decode()
    priority = logging.handlers.SysLogHandler.LOG_LOCAL3 * 8 + \
        logging.handlers.SysLogHandler.LOG_WARNING
    assert data.rstrip("\x00") == (
        f"<{priority}>mybouncer[{os.getpid()}]: WARNING closing because: test")


def test_syslog_off_by_default_and_unknown_facility_falls_back(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert syslog_for(Settings()) is None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        handler = syslog_handler("pgbouncer", "nonsense", receiver.getsockname())
        assert isinstance(handler, logging.handlers.SysLogHandler)
        assert handler.facility == logging.handlers.SysLogHandler.LOG_DAEMON
        handler.close()
    assert "syslog_facility 'nonsense' is unknown" in capsys.readouterr().err


def test_reopen_logfile_follows_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "pgmux.log"
    logger = logging.getLogger("pgmux")
    handler = logging.FileHandler(path)
    logger.addHandler(handler)
    try:
        logger.warning("before rotation")
        path.rename(tmp_path / "pgmux.log.1")
        reopen_logfile()
        logger.warning("after rotation")
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert "before rotation" in (tmp_path / "pgmux.log.1").read_text()
    assert path.read_text() == "after rotation\n"


def test_use_syslog_adds_one_handler_and_removes_it_when_turned_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import pgmux.log

    made: list[logging.Handler] = []

    def fake(ident: str, facility: str) -> logging.Handler:
        handler = logging.handlers.SysLogHandler(address=("127.0.0.1", 9))
        made.append(handler)
        assert (ident, facility) == ("mux", "local1")
        return handler

    monkeypatch.setattr(pgmux.log, "syslog_handler", fake)
    logger = logging.getLogger("pgmux")
    on = Settings(syslog=True, syslog_ident="mux", syslog_facility="local1")

    def syslogs() -> list[logging.Handler]:
        return [h for h in logger.handlers if isinstance(h, logging.handlers.SysLogHandler)]

    try:
        pgmux.log.use_syslog(on)
        pgmux.log.use_syslog(on)  # NOTE: a second serve in one process replaces, not adds
        assert syslogs() == made[1:]
        pgmux.log.use_syslog(Settings())
        assert syslogs() == []
    finally:
        for h in syslogs():
            logger.removeHandler(h)
        for h in made:
            h.close()
