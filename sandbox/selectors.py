"""Label selectors (equality- and set-based) and field selectors, parsed like apimachinery does.

    parse_label_selector("app=web,tier in (a,b),!legacy") -> LabelSelector
    parse_field_selector("metadata.name=x,status.phase!=Running", allowed) -> FieldSelector

Parse errors raise ``SelectorError`` whose message is the apiserver's wording; the API turns it into
a 400 BadRequest Status.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    pass


_NAME_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_PREFIX_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _check_key(key: str) -> None:
    if not key:
        raise SelectorError("unable to parse requirement: key: Invalid value: \"\": name part must be non-empty")
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _PREFIX_RE.match(prefix)):
        raise SelectorError(f'unable to parse requirement: key: Invalid value: "{key}": prefix part must be a DNS-1123 subdomain')
    if len(name) > 63 or not _NAME_RE.match(name):
        raise SelectorError(
            f'unable to parse requirement: key: Invalid value: "{key}": name part must consist of alphanumeric '
            "characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )


def _check_value(value: str) -> None:
    if len(value) > 63 or not _VALUE_RE.match(value):
        raise SelectorError(
            f'unable to parse requirement: values[0]: Invalid value: "{value}": a valid label must be an empty string '
            "or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.op
        if op == "=":
            return labels.get(self.key) == self.values[0]
        if op == "!=":
            return labels.get(self.key) != self.values[0]
        if op == "in":
            return self.key in labels and labels[self.key] in self.values
        if op == "notin":
            return self.key not in labels or labels[self.key] not in self.values
        if op == "exists":
            return self.key in labels
        if op == "!":
            return self.key not in labels
        value = labels.get(self.key)
        if value is None:
            return False
        try:
            number = int(value)
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if op == "gt" else number < bound


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...]

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        for r in self.requirements:
            op = r.op
            if op == "=":  # the common case, inlined
                if labels.get(r.key) != r.values[0]:
                    return False
            elif not r.matches(labels):
                return False
        return True

    @property
    def empty(self) -> bool:
        return not self.requirements


EVERYTHING = LabelSelector(())


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
            if depth > 1:
                raise SelectorError(f"unable to parse requirement: unexpected '(' in {text!r}")
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unable to parse requirement: unexpected ')' in {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise SelectorError(f"unable to parse requirement: found '(', expected: ')' in {text!r}")
    parts.append(text[start:])
    return parts


_SET_RE = re.compile(r"^\s*(\S+?)\s+(in|notin)\s*\((.*)\)\s*$")
_CMP_RE = re.compile(r"^\s*([^=!<>\s]+)\s*(==|!=|=|>|<)\s*(.*?)\s*$")


def parse_label_selector(text: str) -> LabelSelector:
    text = text.strip()
    if not text:
        return EVERYTHING
    reqs: list[Requirement] = []
    for part in _split_top_level(text):
        part = part.strip()
        if not part:
            raise SelectorError(f"found '', expected: identifier in label selector {text!r}")
        m = _SET_RE.match(part)
        if m:
            key, op, inner = m.group(1), m.group(2), m.group(3)
            _check_key(key)
            values = tuple(v.strip() for v in inner.split(",")) if inner.strip() else ()
            if not values:
                raise SelectorError(f"unable to parse requirement: for 'in', 'notin' operators, values set can't be empty in {part!r}")
            for v in values:
                _check_value(v)
            reqs.append(Requirement(key, op, tuple(sorted(set(values)))))
            continue
        m = _CMP_RE.match(part)
        if m:
            key, op, value = m.group(1), m.group(2), m.group(3)
            _check_key(key)
            if op in (">", "<"):
                try:
                    int(value)
                except ValueError:
                    raise SelectorError(f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer in {part!r}") from None
                reqs.append(Requirement(key, "gt" if op == ">" else "lt", (value,)))
                continue
            if any(c in value for c in "=!() "):
                raise SelectorError(f"unable to parse requirement: invalid value {value!r} in {part!r}")
            _check_value(value)
            reqs.append(Requirement(key, "!=" if op == "!=" else "=", (value,)))
            continue
        if part.startswith("!"):
            key = part[1:].strip()
            _check_key(key)
            reqs.append(Requirement(key, "!"))
            continue
        if re.search(r"\s", part) or any(c in part for c in "=!()<>"):
            raise SelectorError(f"unable to parse requirement: found '{part}', expected: in, notin, =, ==, !=, gt, lt")
        _check_key(part)
        reqs.append(Requirement(part, "exists"))
    return LabelSelector(tuple(reqs))


# ----------------------------------------------------------------------------------------------------
# field selectors

def _path_getter(path: str) -> Callable[[dict[str, Any]], str]:
    keys = path.split(".")

    def get(obj: dict[str, Any]) -> str:
        cur: Any = obj
        for k in keys:
            if not isinstance(cur, dict):
                return ""
            cur = cur.get(k)
            if cur is None:
                return ""
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return str(cur)

    return get


COMMON_FIELDS = ("metadata.name", "metadata.namespace")
RESOURCE_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "pods"): (
        "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
        "spec.hostNetwork", "status.phase", "status.podIP", "status.podIPs", "status.nominatedNodeName",
    ),
    ("", "events"): (
        "involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
        "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
        "reason", "reportingComponent", "source", "type",
    ),
    ("", "secrets"): ("type",),
    ("", "nodes"): ("spec.unschedulable",),
    ("", "namespaces"): ("status.phase",),
    ("", "replicationcontrollers"): ("status.replicas",),
}
_ALIASES = {"source": "source.component"}


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str
    negate: bool
    value: str
    getter: Callable[[dict[str, Any]], str]

    def matches(self, obj: dict[str, Any]) -> bool:
        return (self.getter(obj) == self.value) != self.negate


@dataclass(frozen=True, slots=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...]

    def matches(self, obj: dict[str, Any]) -> bool:
        return all(r.matches(obj) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements

    def exact(self, field_name: str) -> str | None:
        """The value a positive requirement pins ``field_name`` to, if any (fast paths)."""
        for r in self.requirements:
            if r.field == field_name and not r.negate:
                return r.value
        return None


NO_FIELDS = FieldSelector(())


def _unescape(value: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value) and value[i + 1] in "\\,=!":
            out.append(value[i + 1])
            i += 2
            continue
        if ch == "\\":
            raise SelectorError(f"invalid field selector: invalid escape sequence in {value!r}")
        out.append(ch)
        i += 1
    return "".join(out)


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def parse_field_selector(text: str, group: str, resource: str, custom: bool = False) -> FieldSelector:
    text = text.strip()
    if not text:
        return NO_FIELDS
    allowed = COMMON_FIELDS + RESOURCE_FIELDS.get((group, resource), ())
    reqs: list[FieldRequirement] = []
    for part in _split_unescaped(text, ","):
        if not part:
            continue
        for op in ("!=", "==", "="):
            idx = part.find(op)
            if idx > 0 and (op != "=" or part[idx - 1] != "!"):
                break
        else:
            raise SelectorError(f"invalid selector: '{part}'; can't understand '{part}'")
        name, value = part[:idx].strip(), _unescape(part[idx + len(op) :].strip())
        if name not in allowed:
            if custom:
                raise SelectorError(f'"{name}" is not a known field selector: only "metadata.name", "metadata.namespace"')
            raise SelectorError(f'field label not supported: {name}')
        reqs.append(FieldRequirement(name, op == "!=", value, _path_getter(_ALIASES.get(name, name))))
    return FieldSelector(tuple(reqs))
