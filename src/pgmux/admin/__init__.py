"""The admin console: the virtual database `pgbouncer`, with PgBouncer's SHOW and control
commands over the simple and the extended protocol; `install` plugs it into a pooler."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from pgmux.admin.session import AdminSession

if TYPE_CHECKING:
    from pgmux.proxy.pooler import Pooler

__all__ = ["AdminSession", "install"]


def install(pooler: Pooler) -> Callable[[], Awaitable[None]] | None:
    """Serve database `pgbouncer` as the console."""
    pooler.admin_factory = AdminSession
    return None
