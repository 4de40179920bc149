"""Session recording and joining in roles (Teleport's shapes, the subset kubegate implements). Pure.

``spec.options.record_session`` (Teleport: ``{default: best_effort|strict, desktop: bool, ssh: …}``)::

    record_session:
      default: best_effort      # interactive (TTY) exec/attach: best_effort (default) | strict | off
      non_interactive: off      # kubegate: non-TTY exec/attach content too: off (default) | best_effort | strict
      input: false              # kubegate: also record what the user types ("i" events)
      desktop: true             # other products' keys: accepted, not used by kubegate
      ssh: best_effort

Over a user's roles the strongest setting wins (``off`` < ``best_effort`` < ``strict``; a role without
the option counts as ``best_effort`` for interactive sessions and ``off`` for the others), and input is
recorded when any role asks for it. ``strict`` means a session whose recording cannot be written is
refused (and stopped if writing fails later).

``spec.allow.join_sessions`` (Teleport's)::

    join_sessions:
      - name: observe prod
        roles: [prod-access]     # the session owner holds one of these roles (globs allowed)
        kinds: [k8s]             # k8s (or '*') is the kind kubegate has
        modes: [observer]        # kubegate joins are read-only: any of observer | peer | moderator lets
                                 # the user observe; peer/moderator powers are not granted
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

RECORDING_MODES = ("off", "best_effort", "strict")
JOIN_MODES = ("observer", "peer", "moderator")
JOIN_KINDS = ("k8s", "ssh", "db", "app", "windows_desktop", "*")
_RECORD_KEYS = {"default", "non_interactive", "input", "desktop", "ssh"}


class SessionOptionError(ValueError):
    """A bad ``record_session`` / ``join_sessions`` value; the message names the key."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class RecordSession:
    interactive: str = "best_effort"
    non_interactive: str = "off"
    input: bool = False


@dataclass(frozen=True, slots=True)
class JoinRule:
    name: str
    roles: tuple[str, ...]
    kinds: tuple[str, ...]
    modes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RecordingDecision:
    """What to do with one session: record it or not, strictly or not, with input or not."""

    record: bool
    strict: bool
    input: bool


def parse_record_session(raw: object) -> RecordSession:
    if raw is None:
        return RecordSession()
    if not isinstance(raw, Mapping):
        raise SessionOptionError("record_session", f"must be a mapping like {{default: best_effort}}, got {raw!r}")
    unknown = sorted(set(raw) - _RECORD_KEYS)
    if unknown:
        raise SessionOptionError(f"record_session.{unknown[0]}", f"unknown key (known: {', '.join(sorted(_RECORD_KEYS))})")

    def mode(key: str, default: str) -> str:
        value = raw.get(key, default)
        if value is False:  # YAML `off` is the boolean false
            value = "off"
        if value not in RECORDING_MODES:
            raise SessionOptionError(f"record_session.{key}", f"must be one of {', '.join(RECORDING_MODES)}, got {value!r}")
        return str(value)

    record_input = raw.get("input", False)
    if not isinstance(record_input, bool):
        raise SessionOptionError("record_session.input", f"must be true or false, got {record_input!r}")
    return RecordSession(mode("default", "best_effort"), mode("non_interactive", "off"), record_input)


def parse_join_sessions(raw: object) -> tuple[JoinRule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SessionOptionError("join_sessions", "must be a list of {name, roles, kinds, modes}")
    rules = []
    for i, item in enumerate(raw):
        where = f"join_sessions[{i}]"
        if not isinstance(item, Mapping):
            raise SessionOptionError(where, f"must be a mapping, got {item!r}")
        unknown = sorted(set(item) - {"name", "roles", "kinds", "modes"})
        if unknown:
            raise SessionOptionError(f"{where}.{unknown[0]}", "unknown key (known: name, roles, kinds, modes)")
        fields: dict[str, tuple[str, ...]] = {}
        for key in ("roles", "kinds", "modes"):
            values = item.get(key) or []
            if isinstance(values, str):
                values = [values]
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise SessionOptionError(f"{where}.{key}", "must be a list of strings")
            fields[key] = tuple(values)
        for kind in fields["kinds"]:
            if kind not in JOIN_KINDS:
                raise SessionOptionError(f"{where}.kinds", f"unknown session kind {kind!r} (known: {', '.join(JOIN_KINDS)})")
        for mode in fields["modes"]:
            if mode not in JOIN_MODES:
                raise SessionOptionError(f"{where}.modes", f"unknown mode {mode!r} (known: {', '.join(JOIN_MODES)})")
        rules.append(JoinRule(str(item.get("name") or ""), fields["roles"], fields["kinds"], fields["modes"]))
    return tuple(rules)


def recording_decision(options: Iterable[RecordSession | None], tty: bool, proxy_strict: bool) -> RecordingDecision:
    """Combine the user's roles' ``record_session`` (strongest wins) with the proxy's mode."""
    rank = {m: i for i, m in enumerate(RECORDING_MODES)}
    chosen = [o or RecordSession() for o in options] or [RecordSession()]
    best = max((o.interactive if tty else o.non_interactive for o in chosen), key=rank.__getitem__)
    record = best != "off"
    return RecordingDecision(record, record and (best == "strict" or proxy_strict), any(o.input for o in chosen))


def may_join(joiner_rules: Iterable[JoinRule], owner_roles: Sequence[str], *, owner: str, joiner: str) -> bool:
    """May a user whose roles carry ``joiner_rules`` observe a Kubernetes session of a user holding
    ``owner_roles``? A user may always watch their own sessions."""
    if owner == joiner:
        return True
    for rule in joiner_rules:
        if not any(k in ("k8s", "*") for k in rule.kinds):
            continue
        if not rule.modes:
            continue
        if any(fnmatch.fnmatchcase(role, pattern) for pattern in rule.roles for role in owner_roles):
            return True
    return False
