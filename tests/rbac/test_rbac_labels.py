"""The label matcher: Teleport's value patterns and selector rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rbac.labels import LabelPatternError, check_pattern, check_selector, labels_match, value_matches


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("dev", "dev", True),
        ("dev", "dev2", False),
        ("dev", "", False),
        ("*", "", True),
        ("*", "anything", True),
        ("dev-*", "dev-eu", True),
        ("dev-*", "dev-", True),
        ("dev-*", "prod-eu", False),
        ("*-eu", "dev-eu", True),
        ("a*b*c", "axxbyyc", True),
        ("a*b*c", "axxbyy", False),
        ("a.b", "a.b", True),
        ("a.b", "axb", False),  # glob: '.' is literal
        ("a?", "ab", False),  # '?' is literal, not a glob metacharacter
        ("a?", "a?", True),
        ("^dev|staging$", "staging", True),
        ("^(dev|staging)$", "dev", True),
        ("^(dev|staging)$", "devx", False),
        ("^dev-[0-9]+$", "dev-12", True),
        ("^dev-[0-9]+$", "dev-12\n", False),  # anchored to the whole value
        ("^dev-[0-9]+$", "xdev-12", False),
        ("^[$", "[", False),  # invalid regex never matches
        ("^", "^", True),  # a lone caret is a literal
        ("x$", "x$", True),  # not ^...$ → literal
    ],
)
def test_value_patterns(pattern: str, value: str, expected: bool) -> None:
    assert value_matches(pattern, value) is expected


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({"env": "dev"}, {"env": "dev"}, True),
        ({"env": "dev"}, {"env": "prod"}, False),
        ({"env": "dev"}, {}, False),
        ({"env": ["dev", "staging"]}, {"env": "staging"}, True),
        ({"env": ["dev", "staging"]}, {"env": "prod"}, False),
        ({"env": "*"}, {"env": ""}, True),
        ({"env": "*"}, {"team": "a"}, False),  # key must be present
        ({"env": "dev", "team": "*"}, {"env": "dev"}, False),  # every key
        ({"env": "dev", "team": "*"}, {"env": "dev", "team": "x", "extra": "y"}, True),
        ({"*": "*"}, {}, True),
        ({"*": ["*"]}, {"env": "prod"}, True),
        ({"*": "*", "env": "dev"}, {"env": "prod"}, True),  # Teleport: '*': '*' short-circuits
        ({"*": "dev"}, {"env": "dev"}, False),
        ({}, {"env": "dev"}, False),  # empty selector matches nothing
        ({"env": []}, {"env": "dev"}, False),
        ({"region": "^eu-.*$"}, {"region": "eu-west-1"}, True),
        ({"region": "eu-*"}, {"region": "us-east-1"}, False),
    ],
)
def test_selectors(selector: dict, labels: dict, expected: bool) -> None:
    assert labels_match(selector, labels) is expected


def test_check_rejects_bad_regex_and_star_key_with_other_value() -> None:
    with pytest.raises(LabelPatternError, match="regular expression"):
        check_pattern("^[a-$")
    with pytest.raises(LabelPatternError, match="only '\\*': '\\*'"):
        check_selector({"*": "dev"})
    with pytest.raises(LabelPatternError):
        check_selector({"env": 3})  # type: ignore[dict-item]
    check_selector({"*": "*", "env": ["dev", "^x$", "a*"]})


texts = st.text(alphabet="ab-.*", max_size=6)


@given(texts)
def test_literal_without_star_matches_only_itself(value: str) -> None:
    literal = value.replace("*", "")
    assert value_matches(literal, literal)
    assert value_matches(literal, literal + "x") is False


@given(st.text(max_size=8), st.text(max_size=8))
def test_prefix_glob_matches_every_extension(prefix: str, rest: str) -> None:
    prefix = prefix.replace("*", "")
    assert value_matches(prefix + "*", prefix + rest)
