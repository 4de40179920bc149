"""The relay of long-lived response bodies (watches, ``logs -f``) from the upstream protocol to the client
connection: ``live.LiveRelay``.

Compiled by Cython where the build made it (``setup.py``, typed by the ``.pxd`` beside each module, as
``proxy.protocol``'s codecs); ``KUBEGATE_PURE_PYTHON=1`` makes a process import the ``.py`` modules of
this package too (``proxy.protocol.use_sources``).
"""

from __future__ import annotations

from pathlib import Path

from proxy.protocol import use_sources

use_sources(__name__, Path(__file__).resolve().parent)
