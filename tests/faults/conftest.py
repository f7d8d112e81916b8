"""The fault suite's fixtures: pgmux subprocesses from the integration harness, reused as is,
and pgmux processes shared by the tests of one module (starting one costs most of a second)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pgmux.embedded import EmbeddedPostgres, free_port
from tests import unprivileged

# NOTE: imported, not copied: pytest registers fixtures from a conftest's namespace, and these
# are the integration harness's own (pgmux as an unprivileged subprocess, per-test temp dirs
# it may use). `pg`, `pg_factory` and `free_port` come from tests/conftest.py.
from tests.integration.conftest import (  # noqa: F401
    Pgmux,
    _unprivileged_base,
    pgmux,
    pgmux_factory,
    render_ini,
    tmp_path,
    wait_port,
)

SharedMux = Callable[..., Pgmux]


@pytest.fixture(scope="module")
def shared_mux(pg: EmbeddedPostgres, request: pytest.FixtureRequest) -> Iterator[SharedMux]:
    """shared_mux(**settings) -> a pgmux with the harness defaults plus settings, started on
    first use and shared by the module's tests (which must leave it as they found it)."""
    started: dict[tuple[tuple[str, Any], ...], Pgmux] = {}

    def get(**settings: Any) -> Pgmux:
        key = tuple(sorted(settings.items()))
        mux = started.get(key)
        if mux is not None and mux.proc.poll() is None:
            return mux
        base = unprivileged.new_dir(f"{request.module.__name__}-{len(started)}")
        sock = base / "sock"
        sock.mkdir()
        port = free_port()
        ini, log = base / "pgbouncer.ini", base / "pgmux.log"
        ini.write_text(render_ini(pg, port, sock, settings, None, None, None, None))
        unprivileged.give_away(base)
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "pgmux", "serve", str(ini)] +
                                    unprivileged.serve_args(), stdout=out,
                                    stderr=subprocess.STDOUT)
        started[key] = Pgmux(proc, port, ini, log, sock)
        wait_port(port, proc, log=log)
        return started[key]

    yield get
    for mux in started.values():
        mux.stop()
