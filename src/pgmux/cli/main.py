"""The `pgmux` command line: one argparse parser, one module per command family."""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
from collections.abc import Sequence

from pgmux import __version__, build_kind

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


def version_text() -> str:
    """`pgmux --version`: the version line, then (as PgBouncer lists its libraries) what runs
    it: the build (compiled with mypyc or pure Python) and the interpreter."""
    return (f"{version_line()}\nbuild: {build_kind()}\n"
            f"python: {platform.python_implementation()} {platform.python_version()}")


class VersionAction(argparse.Action):
    """-V/--version: prints version_text() (several lines, which argparse's own version action
    would run together) and exits."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS,
                 help: str = "show the version and build, then exit") -> None:
        super().__init__(option_strings, dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgmux",
        description="PostgreSQL connection pooler (a drop-in for PgBouncer) and connection doctor.",
    )
    parser.add_argument("-V", "--version", action=VersionAction)
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


def as_pgbouncer(argv0: str) -> bool:
    """True when pgmux was started under PgBouncer's name (a `pgbouncer` link to `pgmux`), so
    that `pgbouncer [-d] [-R] [-v] [-u user] pgbouncer.ini` and service files written for
    PgBouncer run `pgmux serve` unchanged."""
    name = os.path.basename(argv0).lower()
    return name == "pgbouncer" or name.startswith("pgbouncer.")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if argv is None:
        argv = sys.argv[1:]
        if as_pgbouncer(sys.argv[0]):
            argv = ["serve", *argv]
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
