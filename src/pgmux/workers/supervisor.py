"""The supervisor of `workers = N`: opens the listening sockets once, forks N workers that each
run the pooler on them, restarts a worker that dies, passes PgBouncer's signals to every
worker, replaces workers one at a time on RESTART, and exits when the last worker is done.

It runs no event loop and holds no client: a plain loop around select() over a self-pipe
(signals), the workers' readiness pipes and its control socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from pgmux import sdnotify
from pgmux.config import Config, ConfigError
from pgmux.proxy import listen
from pgmux.workers import WorkerInfo, rpc
from pgmux.workers.budget import MAX_MEMBERS
from pgmux.workers.console import SUPERVISOR_SOCKET

log = logging.getLogger("pgmux")

FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)
HANDLED = FORWARDED + (signal.SIGCHLD,)
QUICK_DEATH = 2.0   # a worker dying sooner than this after its start is restarted after...
RESTART_DELAY = 1.0  # ... this long, so a worker that cannot start does not spin


@dataclass
class Worker:
    id: int
    pid: int
    started: float
    ready_fd: int | None
    ready: bool = False
    retiring: bool = False


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code}"


class Supervisor:
    """One pgmux with N worker processes."""

    def __init__(self, config: Config, count: int, reload: Callable[[], Config] | None) -> None:
        self.config = config
        self.count = count
        self.reload_fn = reload
        self.workers: dict[int, Worker] = {}      # by pid
        self.sockets: list[socket.socket] = []
        self.listening: listen.Bound | None = None
        self.metrics: socket.socket | None = None
        self.run_dir = ""
        self.budget_path = ""
        self.stopping = False
        self.replacing: list[int] = []            # pids still to replace, in order
        self.replacement: tuple[int, int] | None = None  # (old pid, new pid) in progress
        self.restarts: list[float] = []           # when to start a worker for one that died
        self.ever_ready = False
        self.failed = False   # no worker ever came up: the exit code says so
        self._pending: list[int] = []
        self._wake_r = self._wake_w = -1
        self.control: socket.socket | None = None

    # ---- start and stop ----------------------------------------------------------------
    def run(self) -> int:
        """Listen, start the workers, supervise them; the exit code. Raises StartError."""
        s = self.config.settings
        self.listening = listen.bind_sockets(s)
        self.sockets = self.listening.sockets
        try:
            self.run_dir = tempfile.mkdtemp(prefix="pgmux-run-")
            self.budget_path = self.config.pgmux.budget_file or \
                os.path.join(self.run_dir, "budget")
            self._open_metrics()
            self._open_control()
            self._install_signals()
            for place in self.listening.where:
                log.info("listening on %s", place)
            log.info("supervisor up: %d workers, run directory %s", self.count, self.run_dir)
            for _ in range(self.count):
                self.spawn()
            return self._loop()
        finally:
            self._cleanup()

    def _open_metrics(self) -> None:
        conf = self.config.pgmux
        if conf.metrics_port:
            from pgmux.stats.prometheus import listen_socket

            self.metrics = listen_socket(conf.metrics_addr, conf.metrics_port)

    def _open_control(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(os.path.join(self.run_dir, SUPERVISOR_SOCKET))
        sock.listen(8)
        sock.setblocking(False)
        self.control = sock

    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w)
        for sig in HANDLED:
            signal.signal(sig, lambda n, _frame: self._pending.append(n))

    def _cleanup(self) -> None:
        for sig in HANDLED:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, signal.SIG_DFL)
        with contextlib.suppress(ValueError):
            signal.set_wakeup_fd(-1)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        for sock in [*self.sockets, self.metrics, self.control]:
            if sock is not None:
                sock.close()
        if self.listening is not None:
            self.listening.remove_files()
        if self.run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # ---- workers -----------------------------------------------------------------------
    def _free_id(self) -> int:
        taken = {w.id for w in self.workers.values()}
        return next(i for i in range(MAX_MEMBERS) if i not in taken)

    def spawn(self) -> int:
        """Fork one worker; its pid."""
        wid = self._free_id()
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        # NOTE: signals stay blocked in the child until its loop handles them (see _child).
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        try:
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    os.close(ready_r)
                    code = self._child(wid, ready_w)
                except BaseException:  # noqa: BLE001 - a child must never return into our loop
                    traceback.print_exc()
                finally:
                    os._exit(code)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
        os.close(ready_w)
        self.workers[pid] = Worker(wid, pid, time.monotonic(), ready_r)
        log.info("worker %d started (pid %d)", wid, pid)
        return pid

    def _child(self, wid: int, ready_w: int) -> int:
        signal.set_wakeup_fd(-1)
        for sig in HANDLED:
            signal.signal(sig, signal.SIG_DFL)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        if self.control is not None:
            self.control.close()
        for other in self.workers.values():
            if other.ready_fd is not None:
                os.close(other.ready_fd)
        from pgmux import runtime
        from pgmux.app import serve

        info = WorkerInfo(id=wid, run_dir=self.run_dir, supervisor=os.getppid(),
                          budget_path=self.budget_path, sockets=list(self.sockets),
                          metrics=self.metrics)

        def ready(_pooler: object) -> None:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
            os.write(ready_w, b"1")
            os.close(ready_w)

        return runtime.run(serve(self.config, ready=ready, reload=self.reload_fn, worker=info))

    def _reaped(self, pid: int, status: int) -> None:
        worker = self.workers.pop(pid, None)
        if worker is None:
            return
        if worker.ready_fd is not None:
            os.close(worker.ready_fd)
        # NOTE: a worker killed outright leaves its socket file behind; siblings must not
        # mistake it for a live one.
        with contextlib.suppress(OSError):
            os.unlink(rpc.socket_for(self.run_dir, worker.id))
        how = _describe(status)
        if self.stopping or worker.retiring:
            log.info("worker %d (pid %d) %s", worker.id, pid, how)
            return
        if not worker.ready and not self.ever_ready:
            log.error("worker %d (pid %d) %s before it was up; stopping", worker.id, pid, how)
            self.failed = True
            self._stop(signal.SIGQUIT)
            return
        quick = time.monotonic() - worker.started < QUICK_DEATH
        log.warning("worker %d (pid %d) %s; starting a new one%s", worker.id, pid, how,
                    f" in {RESTART_DELAY:g}s" if quick else "")
        self.restarts.append(time.monotonic() + (RESTART_DELAY if quick else 0.0))
        if self.replacement is not None and self.replacement[1] == pid:
            self.replacement = None  # NOTE: the replacement died: the old one stays
            self._replace_next()

    def _is_ready(self, worker: Worker) -> None:
        assert worker.ready_fd is not None
        with contextlib.suppress(OSError):
            os.read(worker.ready_fd, 16)
        os.close(worker.ready_fd)
        worker.ready_fd = None
        if not self.ever_ready:
            sdnotify.ready(f"accepting connections ({len(self.workers)} workers)")
        worker.ready = self.ever_ready = True
        if self.replacement is not None and self.replacement[1] == worker.pid:
            old = self.replacement[0]
            self.replacement = None
            self._retire(old)
            self._replace_next()

    # ---- the loop ----------------------------------------------------------------------
    def _loop(self) -> int:
        while self.workers or self.restarts:
            waits = [self._wake_r] + [w.ready_fd for w in self.workers.values()
                                      if w.ready_fd is not None]
            if self.control is not None:
                waits.append(self.control.fileno())
            timeout = 1.0
            if self.restarts:
                timeout = max(0.0, min(self.restarts) - time.monotonic())
            try:
                readable, _, _ = select.select(waits, [], [], timeout)
            except InterruptedError:
                readable = []
            if self._wake_r in readable:
                with contextlib.suppress(OSError):
                    while os.read(self._wake_r, 512):
                        pass
            pending, self._pending = self._pending, []
            for sig in pending:
                self._signal(sig)
            self._reap()
            for worker in list(self.workers.values()):
                if worker.ready_fd is not None and worker.ready_fd in readable:
                    self._is_ready(worker)
            if self.control is not None and self.control.fileno() in readable:
                self._control_request()
            self._due_restarts()
        log.info("all workers exited, supervisor exiting")
        return 1 if self.failed else 0

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._reaped(pid, status)

    def _due_restarts(self) -> None:
        now = time.monotonic()
        due = [t for t in self.restarts if t <= now]
        self.restarts = [t for t in self.restarts if t > now]
        if self.stopping:
            self.restarts = []
            return
        for _ in due:
            self.spawn()

    # ---- signals and requests ----------------------------------------------------------
    def _signal(self, sig: int) -> None:
        if sig == signal.SIGCHLD:
            return
        name = signal.Signals(sig).name
        if sig == signal.SIGHUP:
            sdnotify.reloading()
            self._reload()
            sdnotify.ready()  # NOTE: the workers reload on their own, as they get the signal
        elif sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            sdnotify.stopping()
            self._stop(sig)
            return
        log.info("got %s, passing it to %d workers", name, len(self.workers))
        self._forward(sig)

    def _forward(self, sig: int) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _stop(self, sig: int) -> None:
        name = signal.Signals(sig).name
        log.info("got %s, passing it to %d workers; exiting when they are done", name,
                 len(self.workers))
        self.stopping = True
        self.restarts = []
        self.replacing = []
        # NOTE: the listeners close once the workers close theirs: our copies go first, so
        # the port is free for a successor as soon as no worker accepts on it.
        for sock in self.sockets:
            if sock.family != socket.AF_UNIX:
                sock.close()
        self.sockets = [s for s in self.sockets if s.family == socket.AF_UNIX]
        self._forward(sig)

    def _reload(self) -> None:
        """SIGHUP: our copy of the configuration follows the workers' (new workers get it)."""
        if self.reload_fn is None:
            return
        try:
            self.config = self.reload_fn()
        except (ConfigError, OSError, ValueError) as exc:
            log.error("supervisor: %s", exc)

    def _control_request(self) -> None:
        assert self.control is not None
        try:
            conn, _ = self.control.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(1.0)
            try:
                line = conn.recv(256).decode(errors="replace").strip()
                answer = self._answer(line)
                conn.sendall(answer.encode() + b"\n")
            except OSError:
                return

    def _answer(self, line: str) -> str:
        if line == "reloaded":
            # NOTE: a RELOAD on a console: a worker started from now on gets the same file.
            self._reload()
            return "ok"
        if line == "restart":
            if self.stopping:
                return "pgmux is shutting down"
            if self.replacing or self.replacement is not None:
                return "a restart is already in progress"
            self.restart()
            return "ok"
        return f"unknown request: {line}"

    # ---- RESTART: one worker at a time --------------------------------------------------
    def restart(self) -> None:
        """Replace every worker: start a new one, and once it is up, retire an old one."""
        self._reload()
        self.replacing = [pid for pid, w in self.workers.items() if not w.retiring]
        log.info("RESTART: replacing %d workers one at a time", len(self.replacing))
        self._replace_next()

    def _replace_next(self) -> None:
        while self.replacing and not self.stopping:
            old = self.replacing.pop(0)
            if old in self.workers and not self.workers[old].retiring:
                self.replacement = (old, self.spawn())
                return
        if self.replacement is None and not self.stopping:
            log.info("RESTART: every worker replaced")

    def _retire(self, pid: int) -> None:
        worker = self.workers.get(pid)
        if worker is None:
            return
        worker.retiring = True
        path = rpc.socket_for(self.run_dir, worker.id)
        if not _ask_retire(path):
            # NOTE: no answer on its socket: the signal still makes it stop, with the Unix
            # socket kept as PgBouncer's SIGTERM does.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def _ask_retire(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(path)
            sock.sendall(b'{"op": "retire"}\n')
            return sock.recv(64).startswith(b"{")
        except OSError:
            return False


def supervise(config: Config, count: int, reload: Callable[[], Config] | None) -> int:
    """Run pgmux as a supervisor of `count` workers; the exit code. Raises StartError."""
    return Supervisor(config, count, reload).run()
