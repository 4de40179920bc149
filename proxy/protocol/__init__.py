"""Sans-IO protocol codecs (bytes in, events out).

Some of these modules may be compiled (``setup.py``: the HTTP/2 and HTTP/1.1 server codecs, by Cython,
from these same ``.py`` files). ``KUBEGATE_PURE_PYTHON=1`` in the environment makes this process
import every module of this package (and of the other packages that call ``use_sources``) from its
``.py`` file even where a compiled one was built: the
fallback the compiled build must agree with (``tests/protocol_http/test_compiled_codec.py``), and a
way to rule the compiled build out when something looks wrong.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path


def pure_python() -> bool:
    """True when this process is to use the ``.py`` modules only (``KUBEGATE_PURE_PYTHON=1``)."""
    return os.environ.get("KUBEGATE_PURE_PYTHON") == "1"


class _SourceFinder:
    """Finds the modules of the packages given to ``use_sources`` as ``.py`` files, ahead of the extension
    modules beside them."""

    _DIRS: dict[str, Path] = {}

    @classmethod
    def find_spec(cls, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        directory = cls._DIRS.get(package)
        if directory is None:
            return None
        source = directory / f"{name}.py"
        return importlib.util.spec_from_file_location(fullname, source) if source.is_file() else None


def use_sources(package: str, directory: Path) -> None:
    """With ``KUBEGATE_PURE_PYTHON=1``, import the modules of ``package`` (in ``directory``) from their
    ``.py`` files (called by each package with compiled modules, from its ``__init__``)."""
    if not pure_python():
        return
    _SourceFinder._DIRS[package] = directory
    if _SourceFinder not in sys.meta_path:
        sys.meta_path.insert(0, _SourceFinder)  # type: ignore[arg-type]


use_sources(__name__, Path(__file__).resolve().parent)
