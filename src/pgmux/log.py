"""Logging in PgBouncer's format and wording: `C-0x…`/`S-0x…` prefixes, LOG/WARNING levels."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time
from typing import Any

logger = logging.getLogger("pgmux")

# NOTE: PgBouncer's level words; runbooks grep for them.
logging.addLevelName(logging.INFO, "LOG")
logging.addLevelName(logging.DEBUG, "DEBUG")


class PgBouncerFormatter(logging.Formatter):
    """`2026-11-22 01:02:03.456 UTC [1234] LOG message`."""

    def format(self, record: logging.LogRecord) -> str:
        t = time.gmtime(record.created)
        ms = int(record.msecs)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", t) + f".{ms:03d} UTC"
        return f"{stamp} [{os.getpid()}] {record.levelname} {record.getMessage()}"


class SyslogFormatter(logging.Formatter):
    """`ident[pid]: LOG message`: syslog stamps the time itself."""

    def __init__(self, ident: str) -> None:
        super().__init__()
        self.ident = ident

    def format(self, record: logging.LogRecord) -> str:
        return f"{self.ident}[{os.getpid()}]: {record.levelname} {record.getMessage()}"


def syslog_handler(ident: str, facility: str,
                   address: str | tuple[str, int] = "/dev/log") -> logging.Handler | None:
    """A handler for the syslog setting (syslog_ident, syslog_facility); None when the local
    syslog cannot be reached (said on stderr: logging goes on without it)."""
    code = logging.handlers.SysLogHandler.facility_names.get(facility.lower())
    if code is None:
        print(f"pgmux: syslog_facility {facility!r} is unknown; using daemon", file=sys.stderr)
        code = logging.handlers.SysLogHandler.LOG_DAEMON
    try:
        handler = logging.handlers.SysLogHandler(address=address, facility=code)
    except OSError as exc:
        print(f"pgmux: cannot log to syslog at {address}: {exc}", file=sys.stderr)
        return None
    handler.setFormatter(SyslogFormatter(ident))
    return handler


def syslog_for(settings: Any) -> logging.Handler | None:
    """The syslog handler the settings ask for (syslog = 1), or None."""
    if not settings.syslog:
        return None
    return syslog_handler(settings.syslog_ident, settings.syslog_facility)


def use_syslog(settings: Any) -> None:
    """Send pgmux's log lines to syslog too when the settings say so (syslog = 1); once per
    process, by the pooler that serves (after -u and -d)."""
    root = logging.getLogger("pgmux")
    for h in list(root.handlers):
        if isinstance(h, logging.handlers.SysLogHandler):
            root.removeHandler(h)
            h.close()
    handler = syslog_for(settings)
    if handler is not None:
        root.addHandler(handler)


def setup_logging(logfile: str | None = None, verbose: int = 0, quiet: bool = False) -> None:
    """Log to stderr (unless quiet) and to logfile (if set); syslog: use_syslog."""
    root = logging.getLogger("pgmux")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    fmt = PgBouncerFormatter()
    if not quiet:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        root.addHandler(sh)
    if logfile:
        fh = logging.FileHandler(logfile)
        fh.setFormatter(fmt)
        root.addHandler(fh)
    root.setLevel(logging.DEBUG if verbose > 0 else logging.INFO)
    root.propagate = False


def reopen_logfile() -> None:
    """Close the log file; the next line opens it again by name (RELOAD / SIGHUP after a log
    rotation, as PgBouncer)."""
    for handler in logging.getLogger("pgmux").handlers:
        if isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                if handler.stream is not None:
                    handler.stream.close()
                    # NOTE: FileHandler.emit opens the file again when its stream is None.
                    handler.stream = None
            finally:
                handler.release()


def sock_prefix(kind: str, obj: object, db: str | None, user: str | None,
                addr: str | None, port: int | None) -> str:
    """PgBouncer's socket prefix, e.g. `C-0x7f..: db/user@127.0.0.1:5432`."""
    where = f"{addr or 'unix'}:{port or 0}"
    return f"{kind}-{id(obj):#x}: {db or '(nodb)'}/{user or '(nouser)'}@{where}"
