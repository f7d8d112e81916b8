"""A pooler child of `pgmux wrap` (`python -m pgmux.cli.wrap.pooler INI --lifeline-fd N`): serve
INI, report readiness on the lifeline, ignore SIGTERM once listening, outlive no wrap."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pgmux.cli.wrap.supervisor import EXIT_FAILED
from pgmux.config import ConfigError, load_config

if TYPE_CHECKING:
    from pgmux.proxy.pooler import Pooler

log = logging.getLogger("pgmux")


def pooler_main(argv: Sequence[str] | None = None) -> int:
    """Run one pooler for `pgmux wrap`: serve INI, report readiness on the lifeline socket,
    ignore SIGTERM once listening, and stop on SIGINT or when the lifeline closes."""
    from pgmux import runtime
    from pgmux.app import serve
    from pgmux.log import setup_logging

    parser = argparse.ArgumentParser(prog="pgmux wrap pooler")
    parser.add_argument("config")
    parser.add_argument("--lifeline-fd", type=int, required=True)
    parser.add_argument("-q", "--quiet", action="store_true")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    lifeline = socket.socket(fileno=args.lifeline_fd)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"pgmux wrap: {exc}", file=sys.stderr)
        return EXIT_FAILED
    setup_logging(config.settings.logfile or None, verbose=args.verbose, quiet=args.quiet)
    for warning in config.warnings:
        log.warning("%s", warning)

    def ready(_pooler: Pooler) -> None:
        loop = asyncio.get_running_loop()
        # NOTE: see the package docstring: SIGTERM is for the app; wrap stops us with SIGINT.
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        lifeline.setblocking(False)
        lifeline.send(b"ready\n")

        def on_lifeline() -> None:
            try:
                data = lifeline.recv(256)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                return
            loop.remove_reader(lifeline.fileno())
            log.info("pgmux wrap is gone; shutting down")
            # NOTE: the safe shutdown wrap would have asked for, by the pooler's own handler.
            os.kill(os.getpid(), signal.SIGINT)

        loop.add_reader(lifeline.fileno(), on_lifeline)

    try:
        return runtime.run(serve(config, ready=ready))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        log.error("%s", exc)
        return EXIT_FAILED
    finally:
        lifeline.close()


if __name__ == "__main__":
    try:
        sys.exit(pooler_main())
    except KeyboardInterrupt:  # NOTE: SIGINT before the pooler installed its handlers
        sys.exit(128 + signal.SIGINT)
