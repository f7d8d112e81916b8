"""Normal clients that keep querying in threads while a fault test does its damage, recording
every answer: when it was asked, how long it took, and the error if there was one."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from tests.faults import wire as w


@dataclass
class Outcome:
    start: float  # monotonic time the query (or the connection attempt) began
    end: float
    error: str = ""  # "" when it succeeded; else the SQLSTATE and text, or how it ended

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def latency(self) -> float:
        return self.end - self.start


@dataclass
class Worker:
    n: int
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def first_ok_after(self, t: float) -> float | None:
        """When the first query begun at or after t succeeded."""
        return next((o.end for o in self.outcomes if o.start >= t and o.ok), None)


class Traffic:
    """n clients, each a thread on its own connection running `sql` in a loop (with `pause`
    seconds between queries); a closed connection is opened again and the failure recorded."""

    def __init__(self, port: int, n: int, sql: str = "select 1", pause: float = 0.01,
                 timeout: float = 10.0, database: str = "postgres") -> None:
        self.port = port
        self.sql = sql
        self.pause = pause
        self.timeout = timeout
        self.database = database
        self.workers = [Worker(i) for i in range(n)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(wk,), daemon=True)
                         for wk in self.workers]

    def start(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- results --
    @property
    def outcomes(self) -> list[Outcome]:
        return [o for wk in self.workers for o in wk.outcomes]

    @property
    def errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def succeeded(self) -> int:
        return sum(1 for o in self.outcomes if o.ok)

    @property
    def max_latency(self) -> float:
        return max((o.latency for o in self.outcomes), default=0.0)

    def wait_for(self, queries: int, timeout: float = 10.0) -> None:
        """Until every worker has at least `queries` successes (or the timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(sum(o.ok for o in wk.outcomes) >= queries for wk in self.workers):
                return
            time.sleep(0.02)

    # -- the loop --
    def _connect(self, wk: Worker) -> w.WireClient | None:
        t0 = time.monotonic()
        try:
            c = w.WireClient(self.port, timeout=self.timeout)
        except OSError as exc:
            wk.outcomes.append(Outcome(t0, time.monotonic(), f"connect: {exc}"))
            return None
        try:
            c.send(w.startup(database=self.database))
            got = c.until_ready()
        except (w.Closed, w.Timeout, OSError) as exc:
            c.close()
            wk.outcomes.append(Outcome(t0, time.monotonic(), f"login: {exc}"))
            return None
        errs = w.errors(got)
        if errs:
            c.close()
            wk.outcomes.append(Outcome(t0, time.monotonic(),
                                       f"login: {errs[0].sqlstate} {errs[0].text}"))
            return None
        return c

    def _run(self, wk: Worker) -> None:
        c: w.WireClient | None = None
        q = w.query(self.sql)
        while not self._stop.is_set():
            if c is None:
                c = self._connect(wk)
                if c is None:
                    time.sleep(0.05)
                    continue
            t0 = time.monotonic()
            try:
                c.send(q)
                got = c.until_ready()
            except (w.Closed, w.Timeout, OSError) as exc:
                wk.outcomes.append(Outcome(t0, time.monotonic(), f"closed: {exc}"))
                c.close()
                c = None
                continue
            errs = w.errors(got)
            if errs:
                e = errs[0]
                wk.outcomes.append(Outcome(t0, time.monotonic(), f"{e.sqlstate} {e.text}"))
                if e.fatal:
                    c.close()
                    c = None
            else:
                wk.outcomes.append(Outcome(t0, time.monotonic()))
            if self.pause:
                self._stop.wait(self.pause)
        if c is not None:
            c.send(w.terminate())
            c.close()
