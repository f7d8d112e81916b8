"""pgmux: a PostgreSQL connection pooler and connection doctor."""

from __future__ import annotations

import os
import sys
from importlib.machinery import (
    EXTENSION_SUFFIXES,
    SOURCE_SUFFIXES,
    FileFinder,
    ModuleSpec,
    SourceFileLoader,
)
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import ModuleType

__version__ = "0.1.0"

# NOTE: the one list of the modules the compiled build compiles with mypyc (setup.py reads it
# from here with ast, so keep it a literal tuple). The rest of pgmux stays Python and imports
# them like any module. Adding one: it must pass `mypy --strict` and follow the habits in
# STYLE.md ("Compiled, from the same source"); then reinstall and run the tests both ways.
COMPILED_MODULES = (
    "pgmux.protocol.framing",
    "pgmux.protocol.sql",
    "pgmux.protocol.session",
    "pgmux.protocol.prepared",
    "pgmux.protocol.messages",
    "pgmux.pool.core",
    "pgmux.pool.pool",
    "pgmux.stats.counters",
    "pgmux.proxy.flow",
    "pgmux.proxy.client",
    "pgmux.proxy.server",
    "pgmux.proxy.link",
    "pgmux.proxy.launch",
    "pgmux.proxy.login",
    "pgmux.proxy.pooler",
)

COMPILED = "compiled (mypyc)"
PURE = "pure Python"

# An editable (in-place) compiled build writes here what it compiled: one line per module,
# "path size mtime_ns sha256" (setup.py). A wheel has no such file.
SOURCES_RECORD = "_compiled_sources.txt"


def pure_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """PGMUX_PURE set (and not "0"): the build installs, and the run loads, pure Python."""
    return environ.get("PGMUX_PURE", "") not in ("", "0")


class SourceOnlyFinder:
    """A meta path finder: pgmux.* modules as their .py sources only, so that compiled extension
    modules installed beside them are never loaded.

    NOTE: not an importlib.abc.MetaPathFinder subclass: importlib.abc imports
    importlib.resources, pathlib and tempfile, a cost every `import pgmux` would pay.
    """

    def __init__(self) -> None:
        self._finders: dict[str, FileFinder] = {}

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if not fullname.startswith("pgmux.") or not path:
            return None
        for entry in path:
            finder = self._finders.get(entry)
            if finder is None:
                finder = FileFinder(entry, (SourceFileLoader, SOURCE_SUFFIXES))
                self._finders[entry] = finder
            spec = finder.find_spec(fullname, target)
            if spec is not None and spec.loader is not None:
                return spec
        return None


def stale_sources(package_dir: str) -> list[str]:
    """Sources changed since an editable compiled build compiled them (their extension
    modules would run the old code)."""
    try:
        with open(os.path.join(package_dir, SOURCES_RECORD), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    stale = []
    for line in lines:
        rel, size, mtime, digest = line.rsplit(" ", 3)
        path = os.path.join(package_dir, rel)
        try:
            st = os.stat(path)
            if st.st_size == int(size) and st.st_mtime_ns == int(mtime):
                continue
            import hashlib  # NOTE: only when a compiled source's size or time changed

            with open(path, "rb") as src:
                if hashlib.sha256(src.read()).hexdigest() == digest:
                    continue
        except OSError:
            pass
        stale.append(path)
    return stale


def _choose_build() -> None:
    """Load pure Python when asked to (PGMUX_PURE at run time) or when the compiled modules
    of an editable install are older than their sources."""
    if not pure_requested():
        stale = stale_sources(os.path.dirname(os.path.abspath(__file__)))
        if not stale:
            return
        sys.stderr.write(
            f"pgmux: {stale[0]}{f' (and {len(stale) - 1} more)' if len(stale) > 1 else ''} "
            "changed since it was compiled: running pure Python; rebuild with "
            "`pip install -e .` (or set PGMUX_PURE=1)\n")
    if not any(isinstance(f, SourceOnlyFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, SourceOnlyFinder())


def module_is_compiled(name: str) -> bool:
    """True when module `name` is (or would be, when imported) loaded from an extension."""
    from importlib.util import find_spec

    spec = find_spec(name)
    origin = spec.origin if spec is not None else None
    return origin is not None and origin.endswith(tuple(EXTENSION_SUFFIXES))


def build_kind() -> str:
    """Which build runs: "compiled (mypyc)", "pure Python", or "partly compiled (mypyc, k of
    n modules)" when only some of COMPILED_MODULES are (a stale or partial build)."""
    done = sum(module_is_compiled(name) for name in COMPILED_MODULES)
    if done == 0:
        return PURE
    if done == len(COMPILED_MODULES):
        return COMPILED
    return f"partly compiled (mypyc, {done} of {len(COMPILED_MODULES)} modules)"


_choose_build()
