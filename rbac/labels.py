"""The one label matcher of kubegate (Teleport semantics).

Used by role decisions (``kubernetes_labels``), by discovery (``kubernetes_service.resources``, cloud
tags) and anywhere else a label selector meets a set of labels.

Value patterns (``value_matches``):

- ``*`` matches any value (including the empty string);
- ``^...$`` (starts with ``^`` AND ends with ``$``) is a regular expression, matched against the whole
  value;
- anything else is a literal where each ``*`` stands for any run of characters (a glob; no other glob
  metacharacters: ``?`` and ``[`` are literal, as in Teleport).

Selectors (``labels_match``) map a label key to one pattern or a list of patterns:

- every key of the selector must be present in the labels and its value must match one of the patterns;
- ``{'*': '*'}`` (or ``{'*': ['*']}``) matches any label set, even an empty one, whatever other keys
  the selector has (as Teleport's ``MatchLabels``);
- an empty selector matches nothing (a role without ``kubernetes_labels`` grants no cluster);
- a ``'*'`` key with any pattern other than ``'*'`` matches nothing here (role loading rejects it).

Invalid regular expressions never match (fail closed); ``check_pattern`` reports them for validation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

__all__ = [
    "WILDCARD",
    "LabelPatternError",
    "check_pattern",
    "check_selector",
    "labels_match",
    "selector_values",
    "value_matches",
]

WILDCARD = "*"


class LabelPatternError(ValueError):
    """A label value pattern (or selector) that can never be valid, e.g. a bad ``^regex$``."""


def _is_regex(pattern: str) -> bool:
    return len(pattern) >= 2 and pattern.startswith("^") and pattern.endswith("$")


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str] | None:
    """Compile a pattern to an anchored regex; None for an invalid regex (never matches)."""
    if _is_regex(pattern):
        try:
            return re.compile(pattern, re.DOTALL)
        except re.error:
            return None
    parts = [re.escape(p) for p in pattern.split("*")]
    return re.compile("^" + ".*".join(parts) + "$", re.DOTALL)


def check_pattern(pattern: str) -> None:
    """Raise ``LabelPatternError`` when ``pattern`` is a ``^regex$`` that does not compile."""
    if not isinstance(pattern, str):
        raise LabelPatternError(f"pattern must be a string, got {type(pattern).__name__}")
    if _is_regex(pattern):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise LabelPatternError(f"invalid regular expression {pattern!r}: {exc}") from None


def _never(value: str) -> bool:
    return False


def _always(value: str) -> bool:
    return True


def _matcher(pattern: str) -> Callable[[str], bool]:
    if pattern == WILDCARD:
        return _always
    if "*" not in pattern and not _is_regex(pattern):
        return pattern.__eq__
    compiled = _compile(pattern)
    if compiled is None:
        return _never
    fullmatch = compiled.fullmatch
    return lambda value: fullmatch(value) is not None


_MATCHERS: dict[str, Callable[[str], bool]] = {}


def value_matches(pattern: str, value: str) -> bool:
    """Whether ``value`` matches ``pattern`` (literal, ``*``, glob, or ``^regex$``)."""
    m = _MATCHERS.get(pattern)
    if m is None:
        if len(_MATCHERS) > 8192:  # bounded: patterns come from roles, values never become patterns
            _MATCHERS.clear()
        m = _MATCHERS[pattern] = _matcher(pattern)
    return m(value)


def selector_values(values: str | Sequence[str]) -> tuple[str, ...]:
    """A selector value as a tuple of patterns (a single string becomes a one-element tuple)."""
    if isinstance(values, tuple):
        return values
    if isinstance(values, str):
        return (values,)
    return tuple(values)


def check_selector(selector: Mapping[str, str | Sequence[str]]) -> None:
    """Raise ``LabelPatternError`` for a selector that is invalid (Teleport rejects the same ones).

    Invalid: a ``'*'`` key whose patterns are not exactly ``'*'``; a non-string key or value; a bad regex.
    """
    for key, raw in selector.items():
        if not isinstance(key, str):
            raise LabelPatternError(f"label key must be a string, got {key!r}")
        if not isinstance(raw, str) and not (
            isinstance(raw, Sequence) and all(isinstance(v, str) for v in raw)
        ):
            raise LabelPatternError(
                f"label {key!r}: value must be a string or a list of strings, got {raw!r}"
            )
        values = selector_values(raw)
        if key == WILDCARD and values != (WILDCARD,):
            raise LabelPatternError(
                f"selector '*': {raw!r} is not supported: only '*': '*' (match every cluster) is allowed"
            )
        for value in values:
            check_pattern(value)


def labels_match(selector: Mapping[str, str | Sequence[str]], labels: Mapping[str, str]) -> bool:
    """Whether ``labels`` satisfy ``selector`` (see the module docstring for the rules)."""
    if not selector:
        return False
    if WILDCARD in selector and selector_values(selector[WILDCARD]) == (WILDCARD,):
        return True  # '*': '*' matches every label set, whatever else the selector says
    for key, raw in selector.items():
        values = selector_values(raw)
        if key == WILDCARD:
            return False
        if key not in labels:
            return False
        actual = labels[key]
        if not any(value_matches(v, actual) for v in values):
            return False
    return True
