"""Build of kubegate's compiled modules; everything else about the package is in pyproject.toml.

The HTTP/2 server codec (``proxy/protocol/http2.py``, ``h2wire.py``, ``h2fields.py``), the HTTP/1.1
server codec (``proxy/protocol/http1.py``), the live body relay (``proxy/relay/live.py``), the upstream
HTTP/2 client (``proxy/upstream/http2.py``) and the HTTP/1.1
fast path's per-request objects (``proxy/fastpath.py``, ``proxy/connection.py``, ``proxy/upstream/http1.py``,
``proxy/upstream/pool.py``) and the per-request metric tallies (``proxy/tally.py``) are compiled by Cython from the same ``.py`` files, in
pure-Python mode: the ``.pxd`` file beside each module declares its classes as extension types and
its counters as C integers. The ``.py`` files stay the one source:
where no compiled module was built (no C compiler, or ``KUBEGATE_PURE_PYTHON=1`` at install time)
the same code runs interpreted, and ``KUBEGATE_PURE_PYTHON=1`` at run time makes a process import the
``.py`` files although compiled ones exist (``proxy/protocol/__init__.py``).

The build is optional: if it fails, installation goes on with the pure-Python modules (one line says
so). ``python setup.py build_ext --inplace`` rebuilds the compiled modules of a checkout after a change
(``scripts/setup.sh`` and the test suite's conftest do it when a source is newer than its build).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
# Every module with a .pxd beside its .py in these packages is compiled.
PACKAGES = ("proxy", "proxy/protocol", "proxy/relay", "proxy/upstream")
COMPILED = sorted(str(pxd.with_suffix(".py").relative_to(ROOT)) for package in PACKAGES for pxd in (ROOT / package).glob("*.pxd"))
# Cython proper, with no .py twin: an accelerator whose absence changes no answer (``proxy/tls_direct.pyx``:
# without it ``proxy.tls`` uses the ``_ssl`` module's own methods). ``dl``: it looks OpenSSL up at run time.
ACCELERATORS = {"proxy.tls_direct": "proxy/tls_direct.pyx"}
DIRECTIVES = {
    "language_level": 3,
    "annotation_typing": False,  # annotations never become run-time checks: behaviour stays the .py's
    "binding": True,  # functions keep their introspectable signatures
    "embedsignature": True,
}


class OptionalBuildExt(build_ext):
    """build_ext that lets the installation go on, on the pure-Python modules, when compiling fails."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any failure: no compiler, no headers, a compile error
            print(f"kubegate: compiled codec not built ({exc}); the pure-Python modules will be used",
                  file=sys.stderr)


def _extensions() -> list:
    if os.environ.get("KUBEGATE_PURE_PYTHON") == "1":
        print("kubegate: KUBEGATE_PURE_PYTHON=1: the pure-Python modules only", file=sys.stderr)
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("kubegate: Cython is not installed; the pure-Python modules will be used", file=sys.stderr)
        return []
    try:
        from setuptools import Extension

        accelerators = [Extension(name, [source], libraries=["dl"]) for name, source in ACCELERATORS.items()]
        return cythonize([*COMPILED, *accelerators], compiler_directives=DIRECTIVES, quiet=True)
    except Exception as exc:  # noqa: BLE001 - a module Cython cannot translate: install the .py modules
        print(f"kubegate: compiled codec not built ({exc}); the pure-Python modules will be used", file=sys.stderr)
        return []


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
