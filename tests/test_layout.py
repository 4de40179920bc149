"""The generic top-level import names resolve inside this checkout, not to some other installed package."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["kubegate", "proxy", "proxy.protocol", "rbac", "discovery", "certs", "sandbox"])
def test_top_level_package_resolves_inside_this_checkout(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().is_relative_to(ROOT), module.__file__
