"""Logging in PgBouncer's format and wording: `C-0x…`/`S-0x…` prefixes, LOG/WARNING levels."""

from __future__ import annotations

import logging
import os
import sys
import time

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


def setup_logging(logfile: str | None = None, verbose: int = 0, quiet: bool = False) -> None:
    """Log to stderr (unless quiet) and to logfile (if set)."""
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


def sock_prefix(kind: str, obj: object, db: str | None, user: str | None,
                addr: str | None, port: int | None) -> str:
    """PgBouncer's socket prefix, e.g. `C-0x7f..: db/user@127.0.0.1:5432`."""
    where = f"{addr or 'unix'}:{port or 0}"
    return f"{kind}-{id(obj):#x}: {db or '(nodb)'}/{user or '(nouser)'}@{where}"
