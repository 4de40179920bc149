"""Rebuild the compiled modules of this checkout (``setup.py``) when a source is newer than its build.

An editable install builds them once; after that a change to a compiled module's ``.py`` or ``.pxd``
would leave the old build in use. ``scripts/setup.sh`` and the test suite (``tests/conftest.py``) run
this first, so what runs is always built from the sources as they are. Nothing to do (a few stats) when
every build is current; with ``KUBEGATE_PURE_PYTHON=1`` nothing is built.

    python scripts/build_compiled.py          # rebuild what is stale
    python scripts/build_compiled.py --check  # exit 1 if something is stale, build nothing
"""

from __future__ import annotations

import fcntl
import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def compiled_sources() -> list[Path]:
    """The modules that ``setup.py`` compiles: the ``.py`` files with a ``.pxd`` beside them, and the
    ``.pyx`` accelerators."""
    packages = [ROOT / "proxy" / package for package in ("", "protocol", "relay", "upstream")]
    return sorted([pxd.with_suffix(".py") for package in packages for pxd in package.glob("*.pxd")]
                  + [pyx for package in packages for pyx in package.glob("*.pyx")])


def built_module(source: Path) -> Path:
    """Where this interpreter imports the compiled build of ``source`` from."""
    return source.with_name(source.stem + importlib.machinery.EXTENSION_SUFFIXES[0])


def stale() -> list[Path]:
    """Sources whose compiled build is missing or older than the ``.py`` or the ``.pxd``."""
    out = []
    for source in compiled_sources():
        built = built_module(source)
        pxd = source.with_suffix(".pxd")
        newest = max(source.stat().st_mtime, pxd.stat().st_mtime if pxd.exists() else 0.0)
        if not built.exists() or built.stat().st_mtime < newest:
            out.append(source)
    return out


def main(argv: list[str]) -> int:
    if os.environ.get("KUBEGATE_PURE_PYTHON") == "1" or not stale():
        return 0
    if "--check" in argv:
        print("stale compiled modules: " + ", ".join(str(p.relative_to(ROOT)) for p in stale()))
        return 1
    (ROOT / "build").mkdir(exist_ok=True)
    with open(ROOT / "build" / "build_compiled.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs starting at once: one builds, the other waits
        outdated = stale()
        return _build(outdated) if outdated else 0


def _build(outdated: list[Path]) -> int:
    print("kubegate: compiling " + ", ".join(p.name for p in outdated), file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=ROOT,
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode or stale():  # setup.py's build is optional: it says why it built nothing
        output = (done.stdout + done.stderr).splitlines()
        said = [line for line in output if line.startswith("kubegate:")]
        print("\n".join(said or output[-20:]), file=sys.stderr)
        for source in outdated:  # an old build must not be imported instead of the changed source
            built_module(source).unlink(missing_ok=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
