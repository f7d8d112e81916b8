"""The workers' private channel: each worker answers one JSON request per connection on a Unix
socket in the supervisor's private run directory (cancel a query, read SHOW rows, run a
console command), and asks its siblings the same way."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("pgmux")

TIMEOUT = 10.0  # seconds a sibling has to answer (a PAUSE answers once its servers are free)
LIMIT = 1 << 26  # bytes of one answer (SHOW CLIENTS of many thousand clients)
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def socket_for(run_dir: str, worker: int) -> str:
    return os.path.join(run_dir, f"worker-{worker}.sock")


def siblings(run_dir: str, own: int) -> list[str]:
    """The sockets of the other workers that are up (a dead worker's socket is removed by the
    supervisor when it reaps it; a connection to a stale one fails and is skipped)."""
    paths = glob.glob(os.path.join(run_dir, "worker-*.sock"))
    mine = socket_for(run_dir, own)
    return sorted(p for p in paths if p != mine)


async def serve(path: str, handler: Handler) -> asyncio.AbstractServer:
    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), TIMEOUT)
            request = json.loads(line)
            try:
                answer = await handler(request)
            except Exception as exc:  # noqa: BLE001 - the asker gets the failure, we go on
                log.exception("worker request %r failed", request.get("op"))
                answer = {"error": str(exc), "sqlstate": "XX000"}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ValueError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return await asyncio.start_unix_server(on_connect, path, limit=LIMIT)


async def ask(path: str, request: dict[str, Any], timeout: float = TIMEOUT
              ) -> dict[str, Any] | None:
    """One request to one worker; None when it is gone or does not answer in time."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path, limit=LIMIT),
                                                timeout)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        answer = json.loads(line) if line else None
        return answer if isinstance(answer, dict) else None
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def ask_all(run_dir: str, own: int, request: dict[str, Any],
                  timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """The same request to every sibling at once; the answers of those that answered."""
    answers = await asyncio.gather(*(ask(p, request, timeout) for p in siblings(run_dir, own)))
    return [a for a in answers if a is not None]
