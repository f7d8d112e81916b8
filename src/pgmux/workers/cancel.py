"""Where a cancel request goes: to the worker or PgBouncer-style peer its key names, or to this
process's own client."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from pgmux.protocol import messages as m
from pgmux.workers import rpc
from pgmux.workers.keys import TTL_MASK, KeyLayout, peer_of, ttl_of, worker_of

if TYPE_CHECKING:
    from pgmux.proxy.pooler import Pooler

log = logging.getLogger("pgmux")


class CancelRouter:
    """Marks this process's cancel keys and sends foreign ones on."""

    def __init__(self, pooler: Pooler, layout: KeyLayout, run_dir: str | None) -> None:
        self.pooler = pooler
        self.layout = layout
        self.run_dir = run_dir

    def stamp(self, key: tuple[int, int]) -> tuple[int, int]:
        return self.layout.stamp(*key)

    def route(self, pid: int, secret: int) -> tuple[int, int] | None:
        """The key to look up here, or None when the request went (or was dropped) elsewhere."""
        layout = self.layout
        if layout.peer_id:
            peer = peer_of(pid)
            if peer != layout.peer_id:
                self._to_peer(peer, pid, secret)
                return None
            # NOTE: our keys carry a full TTL; a forwarded request has spent some of it.
            secret |= TTL_MASK
        if layout.worker is not None and worker_of(pid) != layout.worker and self.run_dir:
            path = rpc.socket_for(self.run_dir, worker_of(pid))
            self.pooler.spawn(rpc.ask(path, {"op": "cancel", "pid": pid, "key": secret}))
            return None
        return pid, secret

    def _to_peer(self, peer_id: int, pid: int, secret: int) -> None:
        if not ttl_of(secret):
            log.warning("failed to forward cancel request because its TTL was exhausted")
            return
        peer = self.pooler.config.peers.get(peer_id)
        if peer is None:
            log.warning("could not find peer %d to forward cancel request to", peer_id)
            return
        host = peer.host or self.pooler.settings.unix_socket_dir or "/tmp"
        self.pooler.spawn(send_cancel(host, peer.port, pid, secret - 1))


async def send_cancel(host: str, port: int, pid: int, secret: int) -> None:
    """A CancelRequest to a PostgreSQL-speaking address (a peer, or a Unix socket dir)."""
    try:
        if host.startswith("/"):
            _, writer = await asyncio.open_unix_connection(
                os.path.join(host, f".s.PGSQL.{port}"))
        else:
            _, writer = await asyncio.open_connection(host, port)
        writer.write(m.cancel_request(pid, secret))
        await writer.drain()
        writer.close()
    except OSError as exc:
        log.warning("cancel request to %s:%d failed: %s", host, port, exc)
