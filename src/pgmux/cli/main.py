"""The `pgmux` command line: one argparse parser, one module per command family."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pgmux import __version__

# NOTE: each module here defines `register(subparsers)`, which adds its commands and sets
# `func(args) -> int` on them. Keeping the list here is the one place the CLI is assembled.
COMMAND_MODULES = (
    "pgmux.cli.serve",
    "pgmux.cli.doctor",
    "pgmux.cli.wrap",
    "pgmux.cli.top",
)


def version_line() -> str:
    """What `SHOW VERSION` answers and `--version` prints first."""
    return f"PgBouncer 1.25.0 (pgmux {__version__})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgmux",
        description="PostgreSQL connection pooler (a drop-in for PgBouncer) and connection doctor.",
    )
    parser.add_argument("-V", "--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # NOTE: a command family not built yet is simply absent
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        # NOTE: no command is a usage error, as argparse's own (exit 2), not a success.
        parser.print_help(sys.stderr)
        return 2
    result = func(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
