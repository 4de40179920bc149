"""kubegate roles: Teleport-compatible ``kind: role`` YAML (versions v7 and v8), validation, hot reload.

A role file holds one or more YAML documents (``---``), each ``kind: role``. Loading validates every
field and raises ``RoleError`` naming the file, the role and the field. Role v7 is converted to v8 on
load the way Teleport converts it (``RoleV6.convertKubernetesResourcesBetweenRoleVersions``):

- singular Teleport kinds become plurals with their API group (``pod`` → ``pods`` in ``''``,
  ``deployment`` → ``deployments`` in ``apps``, ``kube_node`` → ``nodes`` …); any other kind
  (``*`` included) gets ``api_group: '*'``;
- ``kind: namespace, name: X`` (everything inside X) becomes ``{kind: '*', api_group: '*', namespace: X,
  name: '*'}`` plus ``{kind: namespaces, name: X}`` (``name: '*'`` → namespace ``^.+$``);
- the ``namespace`` of cluster-wide kinds was ignored in v7 and is cleared;
- ``kind: '*'`` additionally covers the cluster-wide kinds (v7 ignored their namespace).

As in Teleport, an allow side with ``kubernetes_labels`` and no (or an empty) ``kubernetes_resources``
grants every resource: ``{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: ['*']}``.

Keys Teleport roles carry for other products (``logins``, ``node_labels``, ``rules`` …) are accepted
and ignored; keys nobody knows are errors. ``kubernetes_labels_expression`` is rejected (not
supported: ignoring it could widen access).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from rbac.labels import LabelPatternError, check_pattern, check_selector
from rbac.sessions import (
    JoinRule,
    RecordSession,
    SessionOptionError,
    parse_join_sessions,
    parse_record_session,
)

__all__ = [
    "CLUSTER_WIDE_KINDS",
    "CORE_KINDS",
    "VERBS",
    "ResourceRule",
    "Role",
    "RoleError",
    "RoleSet",
    "RoleWatcher",
    "expand_templates",
    "load_role_file",
    "load_roles_dir",
    "GO_DURATION_UNITS",
    "duration_seconds",
    "parse_duration",
    "parse_roles_yaml",
]

WILDCARD = "*"

VERBS: frozenset[str] = frozenset(
    {
        "*",
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "exec",
        "portforward",
        "proxy",  # Teleport v19: pods|services|nodes/{name}/proxy/... (see rbac.request)
    }
)

# Teleport v7 singular kinds → (plural, api group).
V7_KINDS: dict[str, tuple[str, str]] = {
    "pod": ("pods", ""),
    "secret": ("secrets", ""),
    "configmap": ("configmaps", ""),
    "namespace": ("namespaces", ""),
    "service": ("services", ""),
    "serviceaccount": ("serviceaccounts", ""),
    "kube_node": ("nodes", ""),
    "persistentvolume": ("persistentvolumes", ""),
    "persistentvolumeclaim": ("persistentvolumeclaims", ""),
    "deployment": ("deployments", "apps"),
    "replicaset": ("replicasets", "apps"),
    "statefulset": ("statefulsets", "apps"),
    "daemonset": ("daemonsets", "apps"),
    "clusterrole": ("clusterroles", "rbac.authorization.k8s.io"),
    "kube_role": ("roles", "rbac.authorization.k8s.io"),
    "clusterrolebinding": ("clusterrolebindings", "rbac.authorization.k8s.io"),
    "rolebinding": ("rolebindings", "rbac.authorization.k8s.io"),
    "cronjob": ("cronjobs", "batch"),
    "job": ("jobs", "batch"),
    "certificatesigningrequest": ("certificatesigningrequests", "certificates.k8s.io"),
    "ingress": ("ingresses", "networking.k8s.io"),
}
V7_CLUSTER_WIDE = (
    "namespace",
    "kube_node",
    "persistentvolume",
    "clusterrole",
    "clusterrolebinding",
    "certificatesigningrequest",
)

# Plural names of the core ("" group) resources: a v8 rule may omit api_group only for these.
CORE_KINDS: frozenset[str] = frozenset(
    {
        "pods", "secrets", "configmaps", "namespaces", "services", "serviceaccounts", "nodes",
        "persistentvolumes", "persistentvolumeclaims", "events", "endpoints", "limitranges",
        "resourcequotas", "replicationcontrollers", "podtemplates", "bindings", "componentstatuses",
    }
)  # fmt: skip
# Well-known cluster-scoped resources (namespace on their rules is meaningless; used by validation).
CLUSTER_WIDE_KINDS: frozenset[str] = frozenset(
    {
        "namespaces", "nodes", "persistentvolumes", "clusterroles", "clusterrolebindings",
        "certificatesigningrequests", "customresourcedefinitions", "storageclasses", "priorityclasses",
        "validatingwebhookconfigurations", "mutatingwebhookconfigurations", "apiservices",
        "componentstatuses", "csidrivers", "csinodes", "ingressclasses", "runtimeclasses", "volumeattachments",
    }
)  # fmt: skip

_TOP_KEYS = {"kind", "version", "metadata", "spec"}
_METADATA_KEYS = {"name", "description", "labels", "namespace", "expires", "revision", "id"}
_SPEC_KEYS = {"options", "allow", "deny"}
_CONDITION_KEYS = {"kubernetes_labels", "kubernetes_resources", "kubernetes_groups", "kubernetes_users"}
# Teleport role condition keys for other products: accepted, ignored by kubegate.
_IGNORED_CONDITION_KEYS = {
    "logins", "node_labels", "node_labels_expression", "app_labels", "app_labels_expression",
    "db_labels", "db_labels_expression", "db_names", "db_users", "db_roles", "db_service_labels",
    "db_service_labels_expression", "windows_desktop_labels", "windows_desktop_labels_expression",
    "windows_desktop_logins", "rules", "request", "review_requests", "impersonate", "host_groups",
    "host_sudoers", "cluster_labels", "cluster_labels_expression", "aws_role_arns", "azure_identities",
    "gcp_service_accounts", "require_session_join", "desktop_groups", "group_labels",
    "group_labels_expression", "spiffe", "account_assignments", "github_permissions", "mcp",
    "workload_identity_labels", "workload_identity_labels_expression", "kubernetes_service_labels",
}  # fmt: skip
_UNSUPPORTED_CONDITION_KEYS = {"kubernetes_labels_expression"}
_RESOURCE_KEYS = {"kind", "api_group", "namespace", "name", "verbs"}
# Role options kubegate implements.
_OPTION_KEYS = {"max_session_ttl", "record_session"}
# Options of Teleport's other products (SSH, databases, desktops): accepted and not used by kubegate.
_OTHER_PRODUCT_OPTION_KEYS = {
    "forward_agent", "port_forwarding", "ssh_port_forwarding", "cert_format", "enhanced_recording",
    "permit_x11_forwarding", "create_host_user", "create_host_user_mode", "create_host_user_default_shell",
    "create_db_user", "create_db_user_mode", "create_desktop_user", "desktop_clipboard",
    "desktop_directory_sharing", "ssh_file_copy", "bpf", "host_user_sudoers", "request_prompt",
    # kubegate always ends streams whose certificate expired, whatever this says.
    "disconnect_expired_cert",
}  # fmt: skip
# Options that would change Kubernetes access which kubegate does not implement: a role setting one to
# anything but its "off" value is refused (accepting and ignoring it would grant more than it says).
_UNIMPLEMENTED_OPTION_KEYS = {
    "require_session_mfa", "client_idle_timeout", "pin_source_ip", "lock",
    "request_access", "max_connections", "max_sessions", "max_kubernetes_connections", "device_trust_mode",
    "idp", "cert_extensions", "mfa_verification_interval", "kubernetes_resources", "kubernetes_pod_security",
}  # fmt: skip
_OFF_VALUES = (None, False, 0, "", "no", "off", "false", "never", "0", [], {})

_ANY_TEMPLATE = re.compile(r"\{\{(.*?)\}\}")


class RoleError(ValueError):
    """An invalid role: the message names the file, the role and the field."""

    def __init__(
        self, message: str, *, file: str | None = None, role: str | None = None, field: str | None = None
    ):
        self.file = file
        self.role = role
        self.field = field
        self.detail = message
        where = []
        if file:
            where.append(f"file {file}")
        if role:
            where.append(f"role {role!r}")
        if field:
            where.append(f"field {field}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


@dataclass(frozen=True, slots=True)
class ResourceRule:
    """One ``kubernetes_resources`` entry (v8 form). Patterns use ``rbac.labels.value_matches``."""

    kind: str
    api_group: str
    namespace: str
    name: str
    verbs: tuple[str, ...]

    def allows_verb(self, verb: str) -> bool:
        return WILDCARD in self.verbs or verb in self.verbs


@dataclass(frozen=True, slots=True)
class Conditions:
    """The allow or deny half of a role."""

    kubernetes_labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    kubernetes_resources: tuple[ResourceRule, ...] = ()
    kubernetes_groups: tuple[str, ...] = ()
    kubernetes_users: tuple[str, ...] = ()
    label_templates: bool = False  # some kubernetes_labels value holds a {{...}} trait template
    principal_templates: bool = True  # some kubernetes_users / kubernetes_groups value holds a template


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    version: str  # "v8" after conversion of a v7 file; ``source_version`` keeps the original
    allow: Conditions
    deny: Conditions
    max_session_ttl: int | None = None  # seconds
    source_version: str = "v8"
    source_file: str = ""
    record_session: RecordSession | None = None  # options.record_session (None: not set)
    join_sessions: tuple[JoinRule, ...] = ()  # allow.join_sessions


class RoleSet:
    """An immutable set of roles by name; ``refused`` maps each role file that was not loaded to why."""

    __slots__ = ("_roles", "files", "refused")

    def __init__(
        self,
        roles: Iterable[Role] = (),
        files: Mapping[str, tuple[int, int, int]] | None = None,
        refused: Mapping[str, RoleError] | None = None,
    ) -> None:
        self._roles: dict[str, Role] = {}
        for role in roles:
            if role.name in self._roles:
                raise RoleError(
                    f"duplicate role name (also defined in {self._roles[role.name].source_file or '?'})",
                    file=role.source_file or None,
                    role=role.name,
                    field="metadata.name",
                )
            self._roles[role.name] = role
        self.files: dict[str, tuple[int, int, int]] = dict(files or {})
        self.refused: dict[str, RoleError] = dict(refused or {})

    def get(self, name: str) -> Role | None:
        return self._roles.get(name)

    def names(self) -> list[str]:
        return sorted(self._roles)

    def for_names(self, names: Iterable[str]) -> list[Role]:
        """The roles among ``names`` that exist (unknown names grant nothing)."""
        return [self._roles[n] for n in names if n in self._roles]

    def __iter__(self):  # noqa: ANN204
        return iter(self._roles.values())

    def __len__(self) -> int:
        return len(self._roles)

    def __contains__(self, name: object) -> bool:
        return name in self._roles


# --- durations ---------------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([a-zµ]+)")
GO_DURATION_UNITS: Mapping[str, float] = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400,
}


def duration_seconds(text: str, units: Mapping[str, float] = GO_DURATION_UNITS) -> float | None:
    """The seconds of ``text`` made only of ``<number><unit>`` parts (``1h30m``, ``250ms``, ``1.5h``; no
    sign, no spaces inside), each unit one of ``units`` (name → seconds); None when it is not that.
    The one duration scanner: role options here, config limits in ``kubegate.config``."""
    pos = 0
    total = 0.0
    for m in _DURATION_PART.finditer(text):
        unit = units.get(m.group(2))
        if m.start() != pos or unit is None:
            return None
        total += float(m.group(1)) * unit
        pos = m.end()
    return total if text and pos == len(text) else None


def parse_duration(value: object) -> int:
    """A Go-style duration (``8h``, ``1h30m``, ``90s``, ``8h0m0s``; ``d`` accepted) → whole seconds."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"duration must be a string like '8h', got {value!r}")
    if isinstance(value, int):
        raise ValueError(f"duration {value!r} has no unit (write e.g. '{value}s')")
    total = duration_seconds(value.strip())
    if total is None:
        raise ValueError(f"invalid duration {value!r} (expected e.g. '8h', '30m', '1h30m')")
    return int(total)


# --- parsing -----------------------------------------------------------------------------------------


class _Ctx:
    def __init__(self, file: str | None, role: str | None) -> None:
        self.file = file
        self.role = role

    def err(self, field_: str, message: str) -> RoleError:
        return RoleError(message, file=self.file, role=self.role, field=field_)


def _check_keys(ctx: _Ctx, where: str, obj: Mapping[str, Any], allowed: set[str]) -> None:
    for key in obj:
        if key not in allowed:
            raise ctx.err(f"{where}.{key}" if where else str(key), f"unknown key {key!r}")


def _str_list(ctx: _Ctx, where: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ctx.err(where, f"must be a list of strings, got {value!r}")
    return tuple(value)


def _check_templates(ctx: _Ctx, where: str, values: Sequence[str]) -> None:
    for v in values:
        for m in _ANY_TEMPLATE.finditer(v):
            try:
                _template(m.group(1))
            except ValueError as exc:
                raise ctx.err(
                    where,
                    f"unsupported template {m.group(0)!r}: {exc} (use {{{{internal.<trait>}}}}, "
                    f'{{{{external.<trait>}}}}, email.local(...) or regexp.replace(..., "re", "repl"))',
                ) from None


def _labels(ctx: _Ctx, where: str, value: object) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ctx.err(where, f"must be a mapping of label → value(s), got {value!r}")
    out: dict[str, tuple[str, ...]] = {}
    for key, raw in value.items():
        if not isinstance(key, str):
            raise ctx.err(f"{where}.{key}", "label keys must be strings")
        values = _str_list(ctx, f"{where}.{key}", raw)
        _check_templates(ctx, f"{where}.{key}", values)
        try:
            check_selector({key: values})
        except LabelPatternError as exc:
            raise ctx.err(f"{where}.{key}", str(exc)) from None
        out[key] = values
    return out


def _pattern(ctx: _Ctx, where: str, value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ctx.err(where, f"must be a string, got {value!r}")
    try:
        check_pattern(value)
    except LabelPatternError as exc:
        raise ctx.err(where, str(exc)) from None
    return value


def _resource(ctx: _Ctx, where: str, raw: object, version: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ctx.err(where, f"must be a mapping, got {raw!r}")
    _check_keys(ctx, where, raw, _RESOURCE_KEYS)
    kind = raw.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ctx.err(f"{where}.kind", "kind is required")
    verbs = _str_list(ctx, f"{where}.verbs", raw.get("verbs"))
    if not verbs:
        raise ctx.err(f"{where}.verbs", "at least one verb is required (e.g. ['get', 'list'] or ['*'])")
    for verb in verbs:
        if verb not in VERBS:
            raise ctx.err(f"{where}.verbs", f"unknown verb {verb!r} (known: {', '.join(sorted(VERBS))})")
    if WILDCARD in verbs and len(verbs) > 1:
        raise ctx.err(f"{where}.verbs", "'*' cannot be combined with other verbs")
    has_group = "api_group" in raw
    group = _pattern(ctx, f"{where}.api_group", raw.get("api_group"))
    namespace = _pattern(ctx, f"{where}.namespace", raw.get("namespace"))
    name = _pattern(ctx, f"{where}.name", raw.get("name"))
    _pattern(ctx, f"{where}.kind", kind)
    if version == "v8":
        if (
            kind in V7_KINDS
            and kind not in ("namespace",)
            and (group == WILDCARD or group == V7_KINDS[kind][1])
        ):
            raise ctx.err(
                f"{where}.kind", f"kind {kind!r} is a v7 singular name: use the plural {V7_KINDS[kind][0]!r}"
            )
        if kind == "namespace":
            raise ctx.err(f"{where}.kind", "kind 'namespace' is a v7 name: use 'namespaces'")
        if (not has_group or group == "") and kind not in CORE_KINDS:
            raise ctx.err(
                f"{where}.api_group",
                f"api_group is required for kind {kind!r} (it is not a core resource; use e.g. 'apps' or '*')",
            )
        if not namespace and kind not in CLUSTER_WIDE_KINDS and kind in CORE_KINDS | _KNOWN_NAMESPACED:
            raise ctx.err(
                f"{where}.namespace", f"namespace is required for namespaced kind {kind!r} (use '*' for all)"
            )
    return {"kind": kind, "api_group": group, "namespace": namespace, "name": name, "verbs": verbs}


_KNOWN_NAMESPACED = frozenset(
    {
        "deployments",
        "replicasets",
        "statefulsets",
        "daemonsets",
        "jobs",
        "cronjobs",
        "ingresses",
        "roles",
        "rolebindings",
    }
)


def _convert_v7(rules: list[dict[str, Any]]) -> list[ResourceRule]:
    """Teleport's v7 → v8 conversion (same for allow and deny)."""
    out: list[ResourceRule] = []
    extra: list[ResourceRule] = []
    for r in rules:
        kind, ns, name, verbs = r["kind"], r["namespace"], r["name"], r["verbs"]
        if kind == "namespace":
            scope = "^.+$" if name == WILDCARD else name
            out.append(ResourceRule(WILDCARD, WILDCARD, scope, WILDCARD, verbs))
            extra.append(ResourceRule("namespaces", "", "", scope, verbs))
            continue
        if ns and kind in V7_CLUSTER_WIDE:
            ns = ""
        if kind in V7_KINDS:
            plural, group = V7_KINDS[kind]
        else:
            plural, group = kind, WILDCARD
        out.append(ResourceRule(plural, group, ns, name, verbs))
        if plural == WILDCARD:
            for cw in V7_CLUSTER_WIDE:
                if cw == "namespace":
                    continue
                extra.append(ResourceRule(V7_KINDS[cw][0], WILDCARD, "", name, verbs))
    return out + extra


def _conditions(ctx: _Ctx, where: str, raw: object, version: str, allow: bool) -> Conditions:
    if raw is None:
        return Conditions()
    if not isinstance(raw, dict):
        raise ctx.err(where, f"must be a mapping, got {raw!r}")
    for key in raw:
        if key in _UNSUPPORTED_CONDITION_KEYS:
            raise ctx.err(f"{where}.{key}", f"{key} is not supported by kubegate (use kubernetes_labels)")
    _check_keys(ctx, where, raw, _CONDITION_KEYS | _IGNORED_CONDITION_KEYS | {"join_sessions"})
    labels = _labels(ctx, f"{where}.kubernetes_labels", raw.get("kubernetes_labels"))
    raw_resources = raw.get("kubernetes_resources") or []
    if not isinstance(raw_resources, list):
        raise ctx.err(f"{where}.kubernetes_resources", "must be a list")
    parsed = [
        _resource(ctx, f"{where}.kubernetes_resources[{i}]", r, version) for i, r in enumerate(raw_resources)
    ]
    if allow and not parsed and labels:
        # Teleport v7/v8: an allow side with kubernetes_labels but no kubernetes_resources grants everything
        parsed = [
            {
                "kind": WILDCARD,
                "api_group": WILDCARD,
                "namespace": WILDCARD,
                "name": WILDCARD,
                "verbs": (WILDCARD,),
            }
        ]
    if version == "v7":
        rules = tuple(_convert_v7(parsed))
    else:
        rules = tuple(
            ResourceRule(p["kind"], p["api_group"], p["namespace"], p["name"], p["verbs"]) for p in parsed
        )
    groups = _str_list(ctx, f"{where}.kubernetes_groups", raw.get("kubernetes_groups"))
    users = _str_list(ctx, f"{where}.kubernetes_users", raw.get("kubernetes_users"))
    _check_templates(ctx, f"{where}.kubernetes_groups", groups)
    _check_templates(ctx, f"{where}.kubernetes_users", users)
    templated = any("{{" in v for values in labels.values() for v in values)
    principal_templates = any("{{" in v for v in (*groups, *users))
    return Conditions(labels, rules, groups, users, templated, principal_templates)


def _role_from_doc(doc: object, file: str | None, index: int) -> Role:
    ctx = _Ctx(file, None)
    if not isinstance(doc, dict):
        raise ctx.err(f"document[{index}]", f"a role must be a mapping, got {type(doc).__name__}")
    meta = doc.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("name"), str):
        ctx.role = meta["name"]
    _check_keys(ctx, "", doc, _TOP_KEYS)
    if doc.get("kind") != "role":
        raise ctx.err("kind", f"kind must be 'role', got {doc.get('kind')!r}")
    version = doc.get("version")
    if version not in ("v7", "v8"):
        raise ctx.err("version", f"version must be 'v7' or 'v8', got {version!r}")
    if not isinstance(meta, dict):
        raise ctx.err("metadata", "metadata with a name is required")
    _check_keys(ctx, "metadata", meta, _METADATA_KEYS)
    name = meta.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ctx.err("metadata.name", "a non-empty role name is required")
    spec = doc.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise ctx.err("spec", "must be a mapping")
    _check_keys(ctx, "spec", spec, _SPEC_KEYS)
    options = spec.get("options") or {}
    if not isinstance(options, dict):
        raise ctx.err("spec.options", "must be a mapping")
    _check_keys(ctx, "spec.options", options, _OPTION_KEYS | _OTHER_PRODUCT_OPTION_KEYS | _UNIMPLEMENTED_OPTION_KEYS)
    for key in sorted(_UNIMPLEMENTED_OPTION_KEYS & set(options)):
        if options[key] not in _OFF_VALUES:
            raise ctx.err(f"spec.options.{key}", f"option {key} is not implemented by kubegate; remove it "
                          f"(or set it off) rather than have it silently ignored")
    try:
        record = parse_record_session(options["record_session"]) if "record_session" in options else None
        joins = parse_join_sessions((spec.get("allow") or {}).get("join_sessions") if isinstance(spec.get("allow"), dict) else None)
    except SessionOptionError as exc:
        where = "spec.allow." if exc.key.startswith("join_sessions") else "spec.options."
        raise ctx.err(where + exc.key, str(exc)) from None
    if isinstance(spec.get("deny"), dict) and spec["deny"].get("join_sessions"):
        raise ctx.err("spec.deny.join_sessions", "deny.join_sessions is not supported by kubegate (joining is allowed only by allow rules)")
    ttl: int | None = None
    if options.get("max_session_ttl") is not None:
        try:
            ttl = parse_duration(options["max_session_ttl"])
        except ValueError as exc:
            raise ctx.err("spec.options.max_session_ttl", str(exc)) from None
        if ttl <= 0:
            raise ctx.err("spec.options.max_session_ttl", "must be positive")
    allow = _conditions(ctx, "spec.allow", spec.get("allow"), version, True)
    deny = _conditions(ctx, "spec.deny", spec.get("deny"), version, False)
    return Role(name, "v8", allow, deny, ttl, version, file or "", record, joins)


def parse_roles_yaml(text: str, file: str | None = None) -> list[Role]:
    """Every role in a YAML text (one or more documents; empty documents are skipped)."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise RoleError(f"invalid YAML: {exc}", file=file) from None
    return [_role_from_doc(doc, file, i) for i, doc in enumerate(docs) if doc is not None]


def load_role_file(path: str | os.PathLike[str]) -> list[Role]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RoleError(f"cannot read: {exc}", file=str(p)) from None
    return parse_roles_yaml(text, str(p))


def _role_files(path: Path) -> list[Path]:
    return sorted(
        p
        for p in path.iterdir()
        if p.suffix in (".yaml", ".yml") and not p.name.startswith(".") and p.is_file()
    )


def load_roles_dir(path: str | os.PathLike[str]) -> RoleSet:
    """The roles of every ``*.yaml`` / ``*.yml`` file of a directory (not recursive), file by file: a
    file that fails to load (bad YAML, an invalid or unsupported field, a role name another file also
    defines) is refused as a whole and listed in ``RoleSet.refused`` with its ``RoleError`` (naming the
    file, the role and the key); the other files' roles load. Both files defining a duplicated name are
    refused (neither is trusted to be the intended one). Raises ``RoleError`` only when the directory
    itself cannot be read."""
    root = Path(path)
    if not root.is_dir():
        raise RoleError("roles directory does not exist", file=str(root))
    try:
        files = _role_files(root)
    except OSError as exc:
        raise RoleError(f"cannot read the roles directory: {exc}", file=str(root)) from None
    stamps: dict[str, tuple[int, int, int]] = {}
    loaded: dict[str, list[Role]] = {}
    refused: dict[str, RoleError] = {}
    for file in files:
        stamps[str(file)] = _stamp(file)
        try:
            loaded[str(file)] = load_role_file(file)
        except RoleError as exc:
            refused[str(file)] = exc
    defined_in: dict[str, list[str]] = {}
    for file, file_roles in loaded.items():
        for role in file_roles:
            files_of = defined_in.setdefault(role.name, [])
            if file in files_of:
                refused.setdefault(file, RoleError("duplicate role name (defined twice in this file)",
                                                   file=file, role=role.name, field="metadata.name"))
            else:
                files_of.append(file)
    for name, where in defined_in.items():
        if len(where) > 1:
            for file in where:
                others = ", ".join(f for f in where if f != file)
                refused.setdefault(file, RoleError(f"duplicate role name (also defined in {others})",
                                                   file=file, role=name, field="metadata.name"))
    roles = [role for file, file_roles in loaded.items() if file not in refused for role in file_roles]
    return RoleSet(roles, stamps, refused)


def _stamp(path: Path) -> tuple[int, int, int]:
    """What tells a changed file apart: modification time, size and inode (an atomic replace)."""
    try:
        st = path.stat()
    except OSError:
        return (-1, -1, -1)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


# --- hot reload --------------------------------------------------------------------------------------


class RoleWatcher:
    """Keeps a ``RoleSet`` current with a roles directory, checked at most every ``min_check_interval``.

    ``current()`` stats the directory's files (cheap) when the interval has passed and reloads the
    directory when a file was added, removed or changed. Loading is per file (``load_roles_dir``): the
    good files' roles are installed, a bad file is refused (its roles are not served: a broken edit
    never widens access) and reported once per version of the file — appended to ``errors`` (newest
    last, bounded) and passed to ``on_error``. ``refused`` is the current set's refused files.
    A directory that cannot be read at all keeps the last set (reported the same way). On the first
    load a missing directory raises ``RoleError`` unless ``initial_ok=False`` is given, in which case
    the watcher starts with an empty set (no access). ``on_reload`` gets every newly installed set.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        clock: Callable[[], float],
        min_check_interval: float = 1.0,
        on_error: Callable[[RoleError], None] | None = None,
        on_reload: Callable[[RoleSet], None] | None = None,
        *,
        initial_ok: bool = True,
        max_errors: int = 20,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._interval = min_check_interval
        self._on_error = on_error
        self._on_reload = on_reload
        self._max_errors = max_errors
        self.errors: list[RoleError] = []
        self.reloads = 0
        self._last_error: RoleError | None = None
        self._reported: set[tuple[str, tuple[int, int, int]]] = set()
        try:
            self._set = load_roles_dir(self.path)
        except RoleError as exc:
            if initial_ok:
                raise
            self._set = RoleSet()
            self._last_error = exc
            self._record(exc)
            self._stamps = self._scan()
        else:
            self._stamps = self._set.files
            self._report_refused(self._set)
        self._checked_at = clock()

    def _scan(self) -> dict[str, tuple[int, int, int]]:
        try:
            return {str(f): _stamp(f) for f in _role_files(self.path)}
        except OSError:
            return {}

    def _record(self, exc: RoleError) -> None:
        self.errors.append(exc)
        del self.errors[: -self._max_errors]
        if self._on_error is not None:
            self._on_error(exc)

    def _report_refused(self, roles: RoleSet) -> None:
        """Report each refused file once per version of it (a reload caused by another file does not
        repeat the report); ``last_error`` is the latest load's newest refusal, or None."""
        self._last_error = None
        reported: set[tuple[str, tuple[int, int, int]]] = set()
        for file, exc in roles.refused.items():
            key = (file, roles.files.get(file, (-1, -1, -1)))
            reported.add(key)
            self._last_error = exc
            if key not in self._reported:
                self._record(exc)
        self._reported = reported

    @property
    def last_error(self) -> RoleError | None:
        """The newest error of the latest load attempt, or None when it refused nothing."""
        return self._last_error

    @property
    def refused(self) -> dict[str, RoleError]:
        """The role files the current set refused (path → error)."""
        return self._set.refused

    def check(self) -> bool:
        """Reload now if anything changed. Returns True when a new set was installed."""
        self._checked_at = self._clock()
        stamps = self._scan()
        if stamps == self._stamps:
            return False
        self._stamps = stamps
        try:
            new = load_roles_dir(self.path)
        except RoleError as exc:
            self._last_error = exc
            self._record(exc)
            return False
        self._set = new
        self.reloads += 1
        self._report_refused(new)
        if self._on_reload is not None:
            self._on_reload(new)
        return True

    def current(self) -> RoleSet:
        """The current role set (reloaded first if the check interval passed and files changed)."""
        if self._clock() - self._checked_at >= self._interval:
            self.check()
        return self._set


# --- trait templates ---------------------------------------------------------------------------------

_T_VAR = re.compile(r'\s*(internal|external)\s*(?:\.\s*([A-Za-z0-9_\-]+)|\[\s*"((?:[^"\\]|\\.)*)"\s*\])\s*')
_T_CALL = re.compile(r"\s*(email\.local|regexp\.replace)\s*\(")
_T_STR = re.compile(r'\s*"((?:[^"\\]|\\.)*)"\s*')
_T_COMMA = re.compile(r"\s*,")
_T_CLOSE = re.compile(r"\s*\)\s*")
_GO_GROUP = re.compile(r"\$(?:\{(\w+)\}|(\w+)|(\$))")

Evaluator = Callable[[Mapping[str, Sequence[str]]], list[str]]


def _unquote(text: str) -> str:
    """A Go string literal's body: ``\\\\`` ``\\"`` ``\\n`` ``\\t`` are escapes; other backslashes stay
    (so ``"\\."`` and ``"\\\\."`` both give the regexp ``\\.``)."""
    escapes = {"\\": "\\", '"': '"', "n": "\n", "t": "\t"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(0)), text)


def _go_replacement(repl: str) -> str:
    """A Go ``ReplaceAllString`` template (``$1``, ``${name}``, ``$$``) as a Python ``re.sub`` template."""
    escaped = repl.replace("\\", "\\\\")
    return _GO_GROUP.sub(lambda m: "$" if m.group(3) else f"\\g<{m.group(1) or m.group(2)}>", escaped)


def _email_local(value: str) -> str | None:
    address = value.rsplit("<", 1)[-1].rstrip(">").strip() if "<" in value else value.strip()
    local, at, domain = address.rpartition("@")
    return local if at and local and domain else None


def _parse_template(text: str, pos: int) -> tuple[Evaluator, int]:
    m = _T_CALL.match(text, pos)
    if m is not None:
        inner, pos = _parse_template(text, m.end())
        if m.group(1) == "email.local":
            close = _T_CLOSE.match(text, pos)
            if close is None:
                raise ValueError("expected ')' after email.local(...)")

            def email_local(traits: Mapping[str, Sequence[str]]) -> list[str]:
                return [local for v in inner(traits) if (local := _email_local(v))]

            return email_local, close.end()
        args: list[str] = []
        for _ in range(2):
            comma = _T_COMMA.match(text, pos)
            lit = _T_STR.match(text, comma.end()) if comma else None
            if lit is None:
                raise ValueError('regexp.replace takes (value, "regexp", "replacement")')
            args.append(_unquote(lit.group(1)))
            pos = lit.end()
        close = _T_CLOSE.match(text, pos)
        if close is None:
            raise ValueError("expected ')' after regexp.replace(...)")
        try:
            pattern = re.compile(args[0])
        except re.error as exc:
            raise ValueError(f"invalid regular expression {args[0]!r}: {exc}") from None
        replacement = _go_replacement(args[1])

        def regexp_replace(traits: Mapping[str, Sequence[str]]) -> list[str]:
            # values the expression does not match are dropped (Teleport semantics)
            return [pattern.sub(replacement, v) for v in inner(traits) if pattern.search(v)]

        return regexp_replace, close.end()
    m = _T_VAR.match(text, pos)
    if m is None:
        raise ValueError("expected internal.<trait> or external.<trait>")
    name = m.group(2) if m.group(2) is not None else _unquote(m.group(3))

    def variable(traits: Mapping[str, Sequence[str]]) -> list[str]:
        return list(traits.get(name, ()))

    return variable, m.end()


@lru_cache(maxsize=1024)
def _template(expression: str) -> Evaluator:
    """Compile the inside of one ``{{ ... }}``; raises ValueError for anything unsupported."""
    evaluator, end = _parse_template(expression, 0)
    if end != len(expression):
        raise ValueError(f"unexpected {expression[end:]!r}")
    return evaluator


def expand_templates(values: Sequence[str], traits: Mapping[str, Sequence[str]]) -> list[str]:
    """Expand trait templates in ``values`` (Teleport semantics).

    ``{{internal.x}}`` / ``{{external.x}}`` / ``{{external["x"]}}`` are the trait's values;
    ``{{email.local(external.email)}}`` the local parts of e-mail addresses;
    ``{{regexp.replace(external.x, "^team-(.*)$", "$1")}}`` the values the expression matches, rewritten.
    A value yields one value per result (several templates: every combination); no result (a missing or
    empty trait) drops the value. Results are inserted literally (never re-expanded). Duplicates are
    removed, order kept. Unparsable templates (rejected at load) drop the value.
    """
    if not any("{{" in v for v in values):
        return list(dict.fromkeys(values))
    out: list[str] = []
    for value in values:
        parts = _ANY_TEMPLATE.split(value)  # [literal, expression, literal, expression, ..., literal]
        combos = [parts[0]]
        for i in range(1, len(parts), 2):
            try:
                results = _template(parts[i])(traits)
            except ValueError:
                results = []
            combos = [c + r + parts[i + 1] for c in combos for r in results]
        for c in combos:
            if c not in out:
                out.append(c)
    return out
