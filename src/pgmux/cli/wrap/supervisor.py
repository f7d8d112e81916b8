"""`pgmux wrap` at run time: start the poolers, run CMD, forward signals to it, stop the poolers
when it exits, and turn all that into wrap's exit code."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

from pgmux.cli.wrap.plan import PoolerPlan
from pgmux.cli.wrap.signals import KEYBOARD_SIGNALS, STOP_SIGNALS, SignalPipe, terminal_sent_it_too

START_TIMEOUT = 30.0  # seconds for every pooler to listen
STOP_TIMEOUT = 10.0  # seconds for the poolers to shut down after SIGINT, then SIGKILL

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127

# NOTE: named, not imported: importing it here would put it in sys.modules before `-m` runs
# it in the child (runpy warns about that), since the package imports this module.
POOLER_MODULE = "pgmux.cli.wrap.pooler"


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class PoolerChild:
    """One pooler process as the supervisor sees it; the supervisor is its only writer."""

    def __init__(self, plan: PoolerPlan) -> None:
        self.plan = plan
        self.proc: subprocess.Popen[bytes] | None = None
        self.lifeline: socket.socket | None = None  # our end of the socketpair
        self.buffer = b""  # what the pooler sent; a line in it means "listening"
        self.ready = False
        self.exit_code: int | None = None

    @property
    def label(self) -> str:
        return self.plan.label


class Supervisor:
    """Starts the poolers, runs CMD, forwards signals and stops the poolers again."""

    def __init__(self, poolers: list[PoolerPlan], command: list[str], env: dict[str, str], *,
                 quiet: bool = False, verbose: int = 0) -> None:
        self.poolers = [PoolerChild(plan) for plan in poolers]
        self.command = command
        self.env = env
        self.quiet = quiet
        self.verbose = verbose

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"pgmux wrap: {message}", file=sys.stderr, flush=True)

    def run(self) -> int:
        with SignalPipe() as signals:
            try:
                aborted = self._start_poolers(signals)
                if aborted is not None:
                    return aborted
                return self._run_command(signals)
            finally:
                self._stop_poolers()

    def _spawn(self, pooler: PoolerChild) -> None:
        ours, theirs = socket.socketpair()
        cmd = [sys.executable, "-m", POOLER_MODULE, str(pooler.plan.ini),
               "--lifeline-fd", str(theirs.fileno())]
        if self.quiet:
            cmd.append("-q")
        cmd += ["-v"] * self.verbose
        try:
            # NOTE: a session of its own, so a terminal's Ctrl-C or hangup reaches CMD only;
            # the pooler stays up until CMD is done. Its stdout goes to stderr: it logs there.
            pooler.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=2,
                                           pass_fds=(theirs.fileno(),), start_new_session=True)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        pooler.lifeline = ours

    def _read_lifeline(self, pooler: PoolerChild) -> bool:
        """Read what the pooler sent; False on EOF (the pooler is gone)."""
        assert pooler.lifeline is not None
        try:
            data = pooler.lifeline.recv(256)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            return False
        pooler.buffer += data
        if b"\n" in pooler.buffer:
            pooler.ready = True
        return True

    def _reap(self, pooler: PoolerChild) -> int:
        assert pooler.proc is not None
        try:
            code = pooler.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pooler.proc.kill()
            code = pooler.proc.wait()
        pooler.exit_code = code
        return code

    def _start_poolers(self, signals: SignalPipe) -> int | None:
        """Start every pooler and wait until each listens. None when all do; else the exit
        code for wrap (the failure or the stop signal has been reported)."""
        for pooler in self.poolers:
            try:
                self._spawn(pooler)
            except OSError as exc:
                print(f"pgmux wrap: cannot start the pooler for {pooler.label}: {exc}",
                      file=sys.stderr)
                return EXIT_FAILED
        waiting = {p.lifeline.fileno(): p for p in self.poolers if p.lifeline is not None}
        deadline = time.monotonic() + START_TIMEOUT
        while waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                labels = "; ".join(p.label for p in waiting.values())
                print(f"pgmux wrap: the pooler for {labels} did not start listening within "
                      f"{START_TIMEOUT:g} s", file=sys.stderr)
                return EXIT_FAILED
            readable, _, _ = select.select([signals.r, *waiting], [], [], remaining)
            for sig in signals.received():
                if sig in STOP_SIGNALS:
                    self.say(f"{signal.Signals(sig).name} before the command started; stopping")
                    return 128 + sig
            for fd in readable:
                starting = waiting.get(fd)
                if starting is None:
                    continue
                if not self._read_lifeline(starting):
                    code = self._reap(starting)
                    print(f"pgmux wrap: the pooler for {starting.label} failed to start (exit "
                          f"code {_exit_code(code)}); not running the command",
                          file=sys.stderr)
                    return EXIT_FAILED
                if starting.ready:
                    del waiting[fd]
        for pooler in self.poolers:
            assert pooler.proc is not None
            shown = re.sub(r":[^:@/]*@", "@", pooler.plan.client_url, count=1)
            self.say(f"{pooler.label} -> {shown} (pooler pid {pooler.proc.pid})")
        return None

    def _run_command(self, signals: SignalPipe) -> int:
        try:
            cmd = subprocess.Popen(self.command, env=self.env)
        except FileNotFoundError:
            print(f"pgmux wrap: command not found: {self.command[0]}", file=sys.stderr)
            return EXIT_NOT_FOUND
        except OSError as exc:
            print(f"pgmux wrap: cannot run {self.command[0]}: {exc.strerror or exc}",
                  file=sys.stderr)
            return EXIT_CANNOT_EXECUTE
        alive = {p.lifeline.fileno(): p for p in self.poolers if p.lifeline is not None}
        pooler_died = False
        while True:
            returncode = cmd.poll()
            if returncode is not None:
                break
            # NOTE: SIGCHLD wakes this select when CMD exits (the wakeup fd gets a byte even
            # if it arrives between poll() and select()).
            readable, _, _ = select.select([signals.r, *alive], [], [])
            for sig in signals.received():
                if sig == signal.SIGCHLD:
                    continue
                if sig in KEYBOARD_SIGNALS and terminal_sent_it_too():
                    continue
                with contextlib.suppress(ProcessLookupError):
                    cmd.send_signal(sig)
            for fd in readable:
                gone = alive.get(fd)
                if gone is None or self._read_lifeline(gone):
                    continue
                del alive[fd]
                code = self._reap(gone)
                print(f"pgmux wrap: the pooler for {gone.label} exited (exit code "
                      f"{_exit_code(code)}); stopping the command", file=sys.stderr)
                pooler_died = True
                with contextlib.suppress(ProcessLookupError):
                    cmd.send_signal(signal.SIGTERM)
        code = _exit_code(returncode)
        if pooler_died and code == 0:
            code = EXIT_FAILED
        return code

    def _stop_poolers(self) -> None:
        """SIGINT (safe shutdown) to every pooler listening, SIGTERM to one still starting
        (nothing to drain yet); SIGKILL after STOP_TIMEOUT."""
        running = [p for p in self.poolers if p.proc is not None and p.exit_code is None]
        for pooler in running:
            assert pooler.proc is not None
            if pooler.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    pooler.proc.send_signal(signal.SIGINT if pooler.ready else signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for pooler in running:
            assert pooler.proc is not None
            try:
                pooler.exit_code = pooler.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"pgmux wrap: the pooler for {pooler.label} did not stop within "
                      f"{STOP_TIMEOUT:g} s; killing it", file=sys.stderr)
                pooler.proc.kill()
                pooler.exit_code = pooler.proc.wait()
        for pooler in self.poolers:
            if pooler.lifeline is not None:
                pooler.lifeline.close()
                pooler.lifeline = None


def exec_command(command: list[str]) -> int:
    """Replace this process with CMD (wrap disabled); returns only when that fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(command[0], command)
    except FileNotFoundError:
        print(f"pgmux wrap: command not found: {command[0]}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except OSError as exc:
        print(f"pgmux wrap: cannot run {command[0]}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CANNOT_EXECUTE
