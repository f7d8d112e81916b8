"""Builds pgmux: the modules in pgmux.COMPILED_MODULES are compiled with mypyc when a C compiler
and Python's headers are there; otherwise, or with PGMUX_PURE=1 set, pgmux installs as pure
Python. A compile that fails falls back to pure Python with a message, never fails the install.

Everything else about the package is in pyproject.toml. `pip install -v .` shows which build
was made and why; `pgmux --version` tells which one runs.
"""

from __future__ import annotations

import ast
import hashlib
import os
import sys
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
SRC = ROOT / "src"
PACKAGE = SRC / "pgmux"
GROUP = "pgmux"  # NOTE: mypyc puts the compiled code in one library, pgmux__mypyc
RECORD = "_compiled_sources.txt"  # as pgmux.SOURCES_RECORD
EXTENSION_SUFFIXES = (".so", ".pyd")

# NOTE: setuptools runs this file for metadata too (egg_info, dist_info, sdist); mypyc runs
# only for the commands that build extension modules.
BUILD_COMMANDS = {"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install"}
IN_PLACE = {"editable_wheel", "develop", "--inplace", "-i"}


def say(message: str) -> None:
    print(f"pgmux build: {message}", file=sys.stderr, flush=True)


def compiled_modules() -> list[str]:
    """COMPILED_MODULES from src/pgmux/__init__.py, read without importing pgmux."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "COMPILED_MODULES"):
            return list(ast.literal_eval(node.value))
    raise SystemExit("setup.py: no COMPILED_MODULES tuple in src/pgmux/__init__.py")


def source_path(module: str) -> str:
    """src/pgmux/protocol/framing.py for pgmux.protocol.framing (relative, as mypyc wants)."""
    return os.path.join("src", *module.split(".")) + ".py"


def compiler_problem() -> str | None:
    """Why no C extension can be built here (no compiler, no Python.h), or None."""
    from distutils.ccompiler import new_compiler
    from distutils.sysconfig import customize_compiler, get_python_inc

    with tempfile.TemporaryDirectory(prefix="pgmux-cc-") as tmp:
        probe = os.path.join(tmp, "probe.c")
        with open(probe, "w") as f:
            f.write("#include <Python.h>\nint pgmux_probe(void) { return Py_IsInitialized(); }\n")
        try:
            cc = new_compiler()
            customize_compiler(cc)
            cc.compile([probe], output_dir=tmp, include_dirs=[get_python_inc()])
        except Exception as exc:  # noqa: BLE001 - any failure means: no compiled build
            return f"cannot compile a C extension here ({type(exc).__name__}: {exc})"
    return None


def remove_in_place_build() -> None:
    """Delete what an earlier in-place (editable) build left in src/: the extension modules and
    the record, so a pure or a new build never runs stale compiled code."""
    for path in [*PACKAGE.rglob("*"), *SRC.glob(f"{GROUP}__mypyc*")]:
        if path.name == RECORD or (path.is_file() and path.name.endswith(EXTENSION_SUFFIXES)):
            path.unlink()


def sources_record(modules: list[str]) -> str:
    """What the editable build compiled: "path size mtime_ns sha256" per module (the paths
    relative to src/pgmux), so pgmux can tell when a source changed after its build."""
    lines = []
    for module in modules:
        path = ROOT / source_path(module)
        st = path.stat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        rel = path.relative_to(PACKAGE).as_posix()
        lines.append(f"{rel} {st.st_size} {st.st_mtime_ns} {digest}")
    return "\n".join(lines) + "\n"


class BuildExt(build_ext):
    """build_ext that compiles in parallel and falls back to pure Python when compiling fails."""

    record = ""  # the sources record written after a successful in-place build

    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        in_place = self.inplace
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - compiler errors come in many classes
            self.inplace = in_place
            self.fall_back(f"compiling failed ({type(exc).__name__}: {exc})")
            return
        if in_place and self.extensions and self.record:
            (PACKAGE / RECORD).write_text(self.record, encoding="utf-8")
        if self.extensions:
            say(f"compiled {len(self.extensions)} extension modules with mypyc")

    def fall_back(self, why: str) -> None:
        say(f"{why}; installing pure Python instead")
        self.inplace = False
        for ext in self.extensions:
            out = Path(self.get_ext_fullpath(ext.name))
            if out.exists():
                out.unlink()
        remove_in_place_build()
        self.extensions = []
        self.distribution.ext_modules = []


def extensions() -> list[object]:
    """The mypyc extension modules to build, or [] for pure Python (with the reason said)."""
    commands = set(sys.argv[1:])
    if IN_PLACE & commands:
        remove_in_place_build()
    if not BUILD_COMMANDS & commands:
        return []
    if os.environ.get("PGMUX_PURE", "") not in ("", "0"):
        say("PGMUX_PURE is set: installing pure Python")
        return []
    why = compiler_problem()
    if why:
        say(f"{why}; installing pure Python instead")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        say(f"mypyc is not installed ({exc}); installing pure Python instead")
        return []
    modules = compiled_modules()
    paths = [source_path(m) for m in modules]
    say(f"compiling {len(modules)} modules with mypyc: {', '.join(modules)}")
    record = sources_record(modules)
    try:
        # NOTE: errors only in the compiled modules: the others are followed for their types
        # but are not compiled, and pip's build environment lacks their dependencies
        # (psycopg, rich), whose types are Any there; `mypy` on src/ checks them all.
        exts: list[object] = mypycify(["--follow-imports=silent", *paths], opt_level="3",
                                      group_name=GROUP)
    except (SystemExit, Exception) as exc:  # noqa: BLE001 - mypyc exits on type errors
        say(f"mypyc failed ({type(exc).__name__}: {exc}); installing pure Python instead")
        return []
    BuildExt.record = record
    return exts


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
