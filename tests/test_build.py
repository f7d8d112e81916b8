"""The build that runs is the one asked for: compiled (mypyc) unless PGMUX_PURE=1, pure Python
with it, and an editable build never runs compiled code older than its sources."""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import os
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pgmux
from pgmux import COMPILED, COMPILED_MODULES, PURE, build_kind, pure_requested, stale_sources
from pgmux.cli.main import version_line

PACKAGE = Path(pgmux.__file__).resolve().parent
ROOT = PACKAGE.parent.parent


def extension_files(module: str) -> list[Path]:
    """The compiled extension module files installed for a pgmux module."""
    base = PACKAGE.joinpath(*module.split(".")[1:])
    return [p for p in (base.parent / (base.name + s) for s in EXTENSION_SUFFIXES) if p.exists()]


def compiled_expected() -> bool:
    """Compiled, unless PGMUX_PURE asks for pure Python; and when no extension module was
    installed at all, compiled still in CI (CI=true: its machine has a C compiler), so that an
    install that fell back to pure Python cannot pass there as the compiled build."""
    if pure_requested():
        return False
    if any(extension_files(m) for m in COMPILED_MODULES):
        return True
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def loaded_from(module: str) -> str:
    return str(importlib.import_module(module).__file__)


def test_the_running_build_is_the_one_asked_for() -> None:
    files = {m: loaded_from(m) for m in COMPILED_MODULES}
    if compiled_expected():
        missing = [m for m in COMPILED_MODULES if not extension_files(m)]
        assert not missing, (f"no compiled module for {missing}: the build fell back to pure "
                             "Python or is older than COMPILED_MODULES (pip install -v -e .)")
        stale = stale_sources(str(PACKAGE))
        assert not stale, f"changed since compiled: {stale}; rebuild with pip install -e ."
        not_compiled = {m: f for m, f in files.items() if not f.endswith(tuple(EXTENSION_SUFFIXES))}
        assert not not_compiled, f"compiled build, yet these load from source: {not_compiled}"
        assert build_kind() == COMPILED
    else:
        not_source = {m: f for m, f in files.items() if not f.endswith(".py")}
        assert not not_source, f"pure Python asked for, yet these are compiled: {not_source}"
        assert build_kind() == PURE


def run_pgmux(env_pure: str | None, *argv: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PGMUX_PURE"}
    if env_pure is not None:
        env["PGMUX_PURE"] = env_pure
    return subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True,
                          check=True, timeout=60).stdout


def test_pgmux_pure_at_run_time_loads_the_sources() -> None:
    """One install serves both builds: PGMUX_PURE=1 in the environment loads every module from
    its .py file even where a compiled one is installed beside it; "0" or unset does not."""
    show = ("import importlib, sys; "
            "print(*(importlib.import_module(m).__file__ for m in sys.argv[1:]))")
    files = run_pgmux("1", "-c", show, *COMPILED_MODULES).split()
    assert len(files) == len(COMPILED_MODULES)
    assert all(f.endswith(".py") for f in files), files
    assert run_pgmux("1", "-m", "pgmux", "--version").splitlines()[1] == f"build: {PURE}"
    # NOTE: an editable build older than its sources runs them too (the test above fails).
    fresh = not stale_sources(str(PACKAGE))
    compiled = [bool(extension_files(m)) and fresh for m in COMPILED_MODULES]
    expected = COMPILED if all(compiled) else PURE if not any(compiled) else build_kind()
    for unset in (None, "0"):
        files = run_pgmux(unset, "-c", show, *COMPILED_MODULES).split()
        assert [not f.endswith(".py") for f in files] == compiled, files
        assert run_pgmux(unset, "-m", "pgmux", "--version").splitlines()[1] == f"build: {expected}"


def test_version_names_the_build_after_a_pgbouncer_like_first_line() -> None:
    lines = run_pgmux(os.environ.get("PGMUX_PURE"), "-m", "pgmux", "--version").splitlines()
    assert lines[0] == version_line() and lines[0].startswith("PgBouncer 1.")
    assert lines[1] == f"build: {build_kind()}"
    assert lines[2].startswith("python: ") and sys.version.split()[0] in lines[2]


def test_a_source_changed_after_the_build_is_found(tmp_path: Path) -> None:
    src = tmp_path / "protocol" / "framing.py"
    src.parent.mkdir()
    src.write_bytes(b"x = 1\n")
    st = src.stat()
    digest = hashlib.sha256(b"x = 1\n").hexdigest()
    (tmp_path / pgmux.SOURCES_RECORD).write_text(
        f"protocol/framing.py {st.st_size} {st.st_mtime_ns} {digest}\n")
    assert stale_sources(str(tmp_path)) == []
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same text
    assert stale_sources(str(tmp_path)) == []
    src.write_bytes(b"x = 2\n")
    assert stale_sources(str(tmp_path)) == [str(src)]
    src.unlink()
    assert stale_sources(str(tmp_path)) == [str(src)]
    assert stale_sources(str(tmp_path / "protocol")) == []  # no record: not an editable build


def test_the_compiled_list_names_modules_that_exist() -> None:
    assert len(set(COMPILED_MODULES)) == len(COMPILED_MODULES)
    for module in COMPILED_MODULES:
        assert module.startswith("pgmux.")
        assert PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py").is_file(), module


def test_build_outputs_are_ignored_by_git() -> None:
    """`git status` stays clean after a build: whatever a build leaves in the tree matches a
    .gitignore pattern (extension modules, the editable build's record, build/)."""
    patterns = [ln.strip() for ln in (ROOT / ".gitignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    outputs = [f"src/pgmux/protocol/framing{EXTENSION_SUFFIXES[0]}",
               f"src/pgmux__mypyc{EXTENSION_SUFFIXES[0]}",
               f"src/pgmux/{pgmux.SOURCES_RECORD}", "build/", "src/pgmux.egg-info/"]
    outputs += [str(p.relative_to(ROOT)) for p in (ROOT / "src").rglob("*")
                if p.name.endswith(tuple(EXTENSION_SUFFIXES)) or p.name == pgmux.SOURCES_RECORD]
    for out in outputs:
        name = out.rstrip("/").rsplit("/", 1)[-1]
        assert any(fnmatch.fnmatch(out, p) or fnmatch.fnmatch(name, p.rstrip("/"))
                   for p in patterns), f"{out} is not in .gitignore"
