"""Counting the ``os.stat`` calls a piece of kubegate makes on one path (the lock list's file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest


def stat_calls(monkeypatch: pytest.MonkeyPatch, path: Path) -> list[str]:
    """The ``os.stat`` calls on ``path`` made from now on (in any thread of this process: a proxy run by
    ``proxy.testing.running_proxy`` too), appended to the list returned; ``os.stat`` is wrapped with
    ``monkeypatch`` (undone at the test's end) and every other path goes through uncounted."""
    calls: list[str] = []
    watched = os.fspath(path)
    real = os.stat

    def counting(target: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if isinstance(target, (str, os.PathLike)) and os.fspath(target) == watched:
            calls.append(watched)
        return real(target, *args, **kwargs)

    monkeypatch.setattr(os, "stat", counting)
    return calls
