"""kubegate configuration: load, validate and print ``kubegate.yaml`` (DESIGN §10).

    cfg = load_config("kubegate.yaml")     # raises ConfigError listing every problem
    cfg = load_config(None)                # defaults; state_dir = ./state (absolute, from the cwd)
    cfg.proxy.limits.header_timeout        # 10.0 (seconds, float)
    cfg.proxy.limits.max_header_bytes      # 65536 (bytes, int)
    cfg.proxy.listen.host, cfg.proxy.listen.port

Sizes carry a unit (``64KiB``, ``1MiB``, ``512B``, ``10MB``), durations too (``250ms``, ``10s``,
``5m``, ``8h``, ``1d``, ``1h30m``); durations are stored as float seconds, sizes as int bytes.
Unknown keys, wrong types, values out of range: every problem is reported at once, each naming the
file and the key path (``kubegate.yaml: proxy.limits.header_timeout: "10 parsecs" is not a
duration``). Relative paths are resolved against the directory of the config file (the current
directory when there is no file); ``~`` is expanded.

The schema lives in the dataclasses below: each field's ``metadata`` says how to parse it (see
``_spec``), so the loader, the defaults and the printer (``config_to_dict``) cannot disagree.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from discovery.store import NAME_RE
from rbac.roles import duration_seconds

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

CONFIG_VERSION = "v1"


class ConfigError(ValueError):
    """The configuration is invalid; ``problems`` lists every message (each names file and key)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


# --------------------------------------------------------------------------------------------------
# Value parsers (pure): raise _Bad(message) with a message that does not yet name the key.


class _Bad(Exception):
    pass


_SIZE_UNITS = {
    "b": 1,
    "kib": KiB,
    "mib": MiB,
    "gib": GiB,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "k": KiB,
    "m": MiB,
    "g": GiB,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_size(value: object) -> int:
    """``64KiB`` → 65536. Units: B, KiB, MiB, GiB (K/M/G mean the same), KB, MB, GB. ``0`` allowed."""
    if isinstance(value, bool):
        raise _Bad(f"{value!r} is not a size (use a unit, e.g. 64KiB)")
    if isinstance(value, int) and value == 0:
        return 0
    if isinstance(value, int | float):
        raise _Bad(f"{value!r} is not a size: give a unit, e.g. {value}B or 64KiB")
    if not isinstance(value, str):
        raise _Bad(f"{_show(value)} is not a size")
    match = _SIZE_RE.match(value)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise _Bad(f"{_show(value)} is not a size (e.g. 512B, 64KiB, 1MiB, 2GiB)")
    amount = float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if amount != int(amount):
        raise _Bad(f"{_show(value)} is not a whole number of bytes")
    return int(amount)


def parse_duration(value: object) -> float:
    """``10s`` → 10.0; ``1h30m`` → 5400.0; ``250ms`` → 0.25. ``0`` allowed without a unit."""
    if isinstance(value, bool):
        raise _Bad(f"{value!r} is not a duration (e.g. 10s, 5m, 8h)")
    if isinstance(value, int | float) and value == 0:
        return 0.0
    if isinstance(value, int | float):
        raise _Bad(f"{value!r} is not a duration: give a unit, e.g. {value}s")
    if not isinstance(value, str):
        raise _Bad(f"{_show(value)} is not a duration")
    total = duration_seconds(value.strip(), _DURATION_UNITS)
    if total is None:
        raise _Bad(f"{_show(value)} is not a duration (e.g. 250ms, 10s, 5m, 8h, 1h30m)")
    return total


def format_size(n: int) -> str:
    for unit, factor in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B"


def format_duration(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    for unit, factor in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= factor and math.isclose(seconds % factor, 0.0, abs_tol=1e-9):
            return f"{int(seconds // factor)}{unit}"
    return f"{round(seconds * 1000)}ms"


def _show(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    return repr(value)


@dataclass(frozen=True, slots=True)
class Address:
    """``host:port`` (``[::1]:443`` for IPv6; ``:3026`` means all interfaces). Port 0: any free port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(value: object, default_host: str = "0.0.0.0") -> Address:
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"{_show(value)} is not an address (host:port)")
    text = value.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1 :].startswith(":"):
            raise _Bad(f"{_show(value)} is not an address ([ipv6]:port)")
        host, port_text = text[1:end], text[end + 2 :]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise _Bad(f"{_show(value)} is not an address (host:port)")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise _Bad(f"{_show(value)}: port must be a number 0-65535")
    return Address(host or default_host, int(port_text))


# --------------------------------------------------------------------------------------------------
# Field specs: dataclass field metadata that drives the generic loader.


@dataclass(frozen=True, slots=True)
class _Spec:
    kind: str  # size | duration | int | float | bool | str | path | address | choice | section |
    #          list_of_sections | str_list | path_list | selector | str_map
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False  # None allowed (null / absent means None)
    section: type | None = None
    secret: bool = False
    help: str = ""
    shorthand: str = ""  # list_of_sections: a plain string item means {shorthand: item}


def _f(kind: str, default: Any = None, *, factory: Callable[[], Any] | None = None, **spec: Any) -> Any:
    meta = {"spec": _Spec(kind, **spec)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _section(cls: type, **spec: Any) -> Any:
    return field(default_factory=cls, metadata={"spec": _Spec("section", section=cls, **spec)})


# --------------------------------------------------------------------------------------------------
# The schema.


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """The proxy's serving certificate. Unset: issued by the kubegate CA (``<state_dir>/ca/``)."""

    cert_file: str | None = _f("path", optional=True)
    key_file: str | None = _f("path", optional=True)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_header_bytes: int = _f("size", 64 * KiB, min=1 * KiB, max=16 * MiB)
    max_body_bytes: int | None = _f("size", None, optional=True, min=1, help="unset: unlimited, streamed")
    header_timeout: float = _f("duration", 10.0, min=0.1, max=600.0)
    idle_timeout: float = _f("duration", 90.0, min=1.0, max=86400.0)
    max_connections: int = _f("int", 20000, min=1, max=1_000_000)
    shutdown_grace: float = _f("duration", 30.0, min=0.0, max=3600.0)
    upstream_connect_timeout: float = _f("duration", 10.0, min=0.1, max=600.0)
    upstream_response_timeout: float = _f("duration", 60.0, min=0.1, max=86400.0)
    write_high_water: int = _f("size", 1 * MiB, min=4 * KiB, max=1 * GiB)
    h2_initial_window: int = _f("size", 1 * MiB, min=64 * KiB - 1, max=2**31 - 1)
    h2_max_concurrent_streams: int = _f("int", 1000, min=1, max=100_000)
    h2_max_resets_per_second: int = _f(
        "int", 200, min=10, max=1_000_000, help="per connection: streams the client resets (rapid reset)"
    )
    h2_max_control_frames_per_second: int = _f(
        "int", 200, min=10, max=1_000_000, help="per connection: PING frames, and SETTINGS frames"
    )
    client_write_buffer_max: int = _f(
        "size", 64 * MiB, min=64 * KiB, max=4 * GiB, help="queued for a client that does not read: it is cut"
    )
    request_body_timeout: float = _f("duration", 60.0, min=0.1, max=86400.0, help="a request body, head to end")
    http1_max_pipelined: int = _f("int", 64, min=1, max=100_000, help="per connection, before reading pauses")
    client_send_timeout: float = _f("duration", 60.0, min=0.1, max=86400.0, help="a client taking no bytes: stalled")
    upstream_max_connections: int = _f("int", 16, min=1, max=10_000, help="per cluster")


@dataclass(frozen=True, slots=True)
class RecordingS3Config:
    bucket: str | None = _f("str", None, optional=True, help="set: recordings go to this S3-compatible bucket")
    prefix: str = _f("str", "sessions/")
    endpoint: str | None = _f("str", None, optional=True, help="S3-compatible endpoint URL; default: AWS")
    region: str | None = _f("str", None, optional=True)
    part_size: int = _f("size", 5 * MiB, min=5 * MiB, max=5 * GiB, help="multipart upload part size")


@dataclass(frozen=True, slots=True)
class RecordingConfig:
    """Session recording (exec/attach as asciicast v2); which sessions is decided by roles."""

    mode: str = _f("choice", "best_effort", choices=("best_effort", "strict"),
                   help="strict: refuse a session whose recording cannot be written")
    dir: str | None = _f("path", optional=True, help="default: <state_dir>/sessions (recordings and index)")
    s3: RecordingS3Config = _section(RecordingS3Config)
    flush_interval: float = _f("duration", 0.2, min=0.01, max=60.0)
    max_buffered: int = _f("size", 64 * MiB, min=1 * MiB, max=4 * GiB,
                           help="per session: more unwritten recording than this fails the recording")


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    listen: Address = _f("address", Address("0.0.0.0", 3026))
    public_addr: str | None = _f("str", None, optional=True, help="default: derived from listen")
    peer_addr: str | None = _f("str", None, optional=True,
                               help="where the other replicas reach this one's listener (to follow a session it "
                                    "holds); default: the listen address, a wildcard host replaced by this "
                                    "host's name")
    workers: int = _f("int", 1, min=1, max=256)
    tls: TLSConfig = _section(TLSConfig)
    client_ca_file: str | None = _f("path", optional=True, help="default: the kubegate CA")
    limits: LimitsConfig = _section(LimitsConfig)
    recording: RecordingConfig = _section(RecordingConfig)

    @property
    def public_address(self) -> str:
        """``public_addr``, or the listen address with a wildcard host replaced by ``localhost``."""
        if self.public_addr:
            return self.public_addr
        host = self.listen.host
        if host in ("0.0.0.0", "::", ""):
            host = "localhost"
        return str(Address(host, self.listen.port))

    @property
    def peer_address(self) -> str:
        """``peer_addr``, or the listen address with a wildcard host replaced by this host's name: unlike
        ``public_address`` (behind a load balancer, the same for every replica) it names this replica."""
        if self.peer_addr:
            return self.peer_addr
        host = self.listen.host
        if host in ("0.0.0.0", "::", ""):
            import socket

            host = socket.gethostname()  # no DNS look-up at start (getfqdn may wait on one)
        return str(Address(host, self.listen.port))


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    enabled: bool = _f("bool", True)
    listen: Address = _f("address", Address("127.0.0.1", 3081))


@dataclass(frozen=True, slots=True)
class ClaimMapping:
    """OIDC ``claims_to_roles`` entry (Teleport's shape): a claim whose value (a string, or any element of
    a list) matches ``value`` (literal, glob, or ``^regex$``) grants ``roles``."""

    claim: str = _f("str", "")
    value: str = _f("str", "")
    roles: tuple[str, ...] = _f("str_list", ())


@dataclass(frozen=True, slots=True)
class TeamMapping:
    """GitHub ``teams_to_roles`` entry: members of ``organization``/``team`` (slug) get ``roles``."""

    organization: str = _f("str", "")
    team: str = _f("str", "")
    roles: tuple[str, ...] = _f("str_list", ())


@dataclass(frozen=True, slots=True)
class ConnectorConfig:
    """A sign-in connector (``kubegate login --auth NAME``): OIDC or GitHub OAuth."""

    name: str = _f("str", "")
    type: str = _f("choice", "oidc", choices=("oidc", "github"))
    display: str = _f("str", "")
    client_id: str = _f("str", "")
    client_secret: str | None = _f("str", None, optional=True, secret=True)
    # OIDC
    issuer_url: str | None = _f("str", None, optional=True)
    scopes: tuple[str, ...] = _f("str_list", ("openid", "email", "profile"))
    username_claim: str = _f("str", "email", help="the claim that becomes the kubegate user name")
    claims_to_roles: tuple[ClaimMapping, ...] = field(
        default=(), metadata={"spec": _Spec("list_of_sections", section=ClaimMapping)}
    )
    claims_to_traits: dict[str, str | list[str]] = _f(
        "selector", factory=dict, help="trait: claim, e.g. kubernetes_groups: groups"
    )
    # GitHub
    endpoint_url: str = _f("str", "https://github.com")
    api_endpoint_url: str = _f("str", "https://api.github.com")
    teams_to_roles: tuple[TeamMapping, ...] = field(
        default=(), metadata={"spec": _Spec("list_of_sections", section=TeamMapping)}
    )


@dataclass(frozen=True, slots=True)
class AuthConfig:
    roles_dir: str = _f("path", "./roles")
    # Certificates the auth endpoint (/kubegate/auth/) issues: users at login, bots at join and renewal;
    # each is also capped by the smallest max_session_ttl of its roles.
    user_certificate_ttl: float = _f("duration", 8 * 3600.0, min=60.0, max=30 * 86400.0)
    bot_certificate_ttl: float = _f("duration", 3600.0, min=60.0, max=30 * 86400.0)
    max_certificate_ttl: float = _f("duration", 30 * 3600.0, min=60.0, max=365 * 86400.0)
    join_token_ttl: float = _f("duration", 1800.0, min=10.0, max=7 * 86400.0)
    connectors: tuple[ConnectorConfig, ...] = field(
        default=(), metadata={"spec": _Spec("list_of_sections", section=ConnectorConfig)}
    )


@dataclass(frozen=True, slots=True)
class ResourceMatcher:
    labels: dict[str, str | list[str]] = _f("selector", factory=lambda: {"*": "*"})


@dataclass(frozen=True, slots=True)
class KubeconfigContextConfig:
    """One context of a kubeconfig file entry: its cluster name and extra labels."""

    context: str = _f("str", "")
    name: str | None = _f("str", None, optional=True)
    labels: dict[str, str] = _f("str_map", factory=dict)


@dataclass(frozen=True, slots=True)
class KubeconfigFileConfig:
    """``kubeconfig_files`` entry; a plain string is ``{path: <string>}`` (see ``discovery.kubeconfig``)."""

    path: str = _f("path", None, optional=True)  # required: checked in _check_kubeconfig_files
    name_from: str = _f("choice", "context", choices=("context", "cluster"))
    name: str | None = _f("str", None, optional=True, help="one fixed name: a file with exactly one context")
    labels: dict[str, str] = _f("str_map", factory=dict)
    contexts: tuple[KubeconfigContextConfig, ...] = field(
        default=(), metadata={"spec": _Spec("list_of_sections", section=KubeconfigContextConfig)}
    )


@dataclass(frozen=True, slots=True)
class KubernetesServiceConfig:
    kubeconfig_files: tuple[KubeconfigFileConfig, ...] = field(
        default=(), metadata={"spec": _Spec("list_of_sections", section=KubeconfigFileConfig, shorthand="path")}
    )
    clusters_dir: str | None = _f("path", optional=True)
    resources: tuple[ResourceMatcher, ...] = field(
        default_factory=lambda: (ResourceMatcher(),),
        metadata={"spec": _Spec("list_of_sections", section=ResourceMatcher)},
    )
    health_interval: float = _f("duration", 30.0, min=1.0, max=86400.0)  # between health rounds
    health_timeout: float = _f("duration", 5.0, min=0.1, max=600.0)  # per health request to a cluster


@dataclass(frozen=True, slots=True)
class AWSMatcher:
    types: tuple[str, ...] = _f("str_list", ("eks",), choices=("eks",))
    regions: tuple[str, ...] = _f("str_list", ("*",))
    tags: dict[str, str | list[str]] = _f("selector", factory=lambda: {"*": "*"})
    assume_role_arn: str | None = _f("str", None, optional=True)
    external_id: str | None = _f("str", None, optional=True, secret=True)


@dataclass(frozen=True, slots=True)
class AzureMatcher:
    types: tuple[str, ...] = _f("str_list", ("aks",), choices=("aks",))
    subscriptions: tuple[str, ...] = _f("str_list", ("*",))
    resource_groups: tuple[str, ...] = _f("str_list", ("*",))
    regions: tuple[str, ...] = _f("str_list", ("*",))
    tags: dict[str, str | list[str]] = _f("selector", factory=lambda: {"*": "*"})


@dataclass(frozen=True, slots=True)
class DiscoveryServiceConfig:
    enabled: bool = _f("bool", False)
    discovery_group: str = _f("str", "")
    poll_interval: float = _f("duration", 300.0, min=1.0, max=86400.0)
    aws: tuple[AWSMatcher, ...] = field(
        default=(), metadata={"spec": _Spec("list_of_sections", section=AWSMatcher)}
    )
    azure: tuple[AzureMatcher, ...] = field(
        default=(), metadata={"spec": _Spec("list_of_sections", section=AzureMatcher)}
    )


@dataclass(frozen=True, slots=True)
class AuditConfig:
    enabled: bool = _f("bool", True)
    log_file: str | None = _f("path", optional=True, help="default: <state_dir>/audit.log; '-' = stdout")
    max_size: int = _f("size", 100 * MiB, min=0, max=1024 * GiB,
                       help="rotate when the file would grow past this; 0: never rotate")
    max_files: int = _f("int", 10, min=1, max=1000, help="rotated files kept (audit.log.1 … audit.log.N)")


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = _f("choice", "info", choices=("debug", "info", "warning", "error"))
    format: str = _f("choice", "json", choices=("json", "text"))


@dataclass(frozen=True, slots=True)
class BackendTLSConfig:
    """TLS to etcd: ``ca_file`` verifies the members; ``cert_file`` + ``key_file`` are the client cert."""

    ca_file: str | None = _f("path", optional=True)
    cert_file: str | None = _f("path", optional=True)
    key_file: str | None = _f("path", optional=True)


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """Where shared state lives: ``local`` (the state directory, one host) or ``etcd`` (many replicas)."""

    type: str = _f("choice", "local", choices=("local", "etcd"))
    endpoints: tuple[str, ...] = _f("str_list", (), help="etcd: http(s)://host:port, one per member")
    prefix: str = _f("str", "/kubegate/", help="etcd: every key lives under it")
    tls: BackendTLSConfig = _section(BackendTLSConfig)
    timeout: float = _f("duration", 2.0, min=0.05, max=60.0, help="per backend call, per endpoint")
    lease_ttl: float = _f("duration", 10.0, min=1.0, max=600.0, help="discovery leadership lease")
    stale_grace: float = _f("duration", 300.0, min=0.0, max=86400.0,
                            help="serve the last known state this long with the backend unreachable")
    ca_key_file: str | None = _f("path", optional=True,
                                 help="etcd: 32-byte key file encrypting the CA private key in etcd")


@dataclass(frozen=True, slots=True)
class Config:
    version: str = _f("choice", CONFIG_VERSION, choices=(CONFIG_VERSION,))
    state_dir: str = _f("path", "./state")
    proxy: ProxyConfig = _section(ProxyConfig)
    metrics: MetricsConfig = _section(MetricsConfig)
    auth: AuthConfig = _section(AuthConfig)
    kubernetes_service: KubernetesServiceConfig = _section(KubernetesServiceConfig)
    discovery_service: DiscoveryServiceConfig = _section(DiscoveryServiceConfig)
    audit: AuditConfig = _section(AuditConfig)
    log: LogConfig = _section(LogConfig)
    backend: BackendConfig = _section(BackendConfig)
    # Where this config came from (None: defaults). Not a config key.
    source: str | None = field(default=None, compare=False, metadata={"internal": True})

    # Convenience paths inside the state directory.
    @property
    def ca_dir(self) -> str:
        return os.path.join(self.state_dir, "ca")

    @property
    def registry_dir(self) -> str:
        return os.path.join(self.state_dir, "clusters")

    @property
    def locks_file(self) -> str:
        return os.path.join(self.state_dir, "locks")

    @property
    def bots_dir(self) -> str:
        return os.path.join(self.state_dir, "bots")

    @property
    def sessions_dir(self) -> str:
        """Session recordings (file store) and the session index."""
        return self.proxy.recording.dir or os.path.join(self.state_dir, "sessions")

    @property
    def audit_log_file(self) -> str:
        """Effective audit log path (``-`` means stdout)."""
        return self.audit.log_file or os.path.join(self.state_dir, "audit.log")


# --------------------------------------------------------------------------------------------------
# The loader.


class _Loader:
    def __init__(self, source_name: str, base_dir: Path) -> None:
        self.source_name = source_name
        self.base_dir = base_dir
        self.problems: list[str] = []

    def bad(self, key_path: str, message: str) -> None:
        self.problems.append(f"{self.source_name}: {key_path}: {message}" if key_path else
                             f"{self.source_name}: {message}")

    def section(self, cls: type, data: object, key_path: str) -> Any:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            self.bad(key_path, f"must be a mapping, not {_show(data)}")
            return cls()
        fields = {f.name: f for f in dataclasses.fields(cls) if "spec" in f.metadata}
        for key in data:
            if key not in fields:
                where = f"{key_path}.{key}" if key_path else str(key)
                known = ", ".join(sorted(fields))
                self.bad(where, f"unknown key (known keys here: {known})")
        values: dict[str, Any] = {}
        for name, f in fields.items():
            if name not in data:
                spec = f.metadata["spec"]
                if spec.kind == "path" and isinstance(f.default, str):
                    values[name] = self.path(f.default)  # relative defaults resolve like given paths
                elif spec.kind == "section":
                    where = f"{key_path}.{name}" if key_path else name
                    values[name] = self.section(spec.section, {}, where)
                continue
            where = f"{key_path}.{name}" if key_path else name
            values[name] = self.value(f.metadata["spec"], data[name], where)
        return cls(**values)

    def value(self, spec: _Spec, raw: object, where: str) -> Any:
        if raw is None:
            if spec.optional:
                return None
            if spec.kind in ("section",):
                return self.section(spec.section, {}, where)  # type: ignore[arg-type]
            if spec.kind in ("list_of_sections", "str_list", "path_list"):
                return ()
            self.bad(where, "must not be empty")
            return None
        try:
            return self._convert(spec, raw, where)
        except _Bad as exc:
            self.bad(where, str(exc))
            return None

    def _convert(self, spec: _Spec, raw: object, where: str) -> Any:
        kind = spec.kind
        if kind == "section":
            return self.section(spec.section, raw, where)  # type: ignore[arg-type]
        if kind == "list_of_sections":
            if not isinstance(raw, list):
                raise _Bad(f"must be a list, not {_show(raw)}")
            if spec.shorthand:
                for i, item in enumerate(raw):
                    if not isinstance(item, str | Mapping):
                        self.bad(f"{where}[{i}]", f"{_show(item)} is not a {spec.shorthand} (string) or a mapping")
                raw = [{spec.shorthand: item} if isinstance(item, str) else item
                       for item in raw if isinstance(item, str | Mapping)]
            return tuple(self.section(spec.section, item, f"{where}[{i}]")  # type: ignore[arg-type]
                         for i, item in enumerate(raw))
        if kind == "size":
            return self._range(parse_size(raw), spec, format_size)
        if kind == "duration":
            return self._range(parse_duration(raw), spec, format_duration)
        if kind == "int":
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise _Bad(f"{_show(raw)} is not a whole number")
            return self._range(raw, spec, str)
        if kind == "bool":
            if not isinstance(raw, bool):
                raise _Bad(f"{_show(raw)} is not true or false")
            return raw
        if kind == "str":
            if not isinstance(raw, str):
                raise _Bad(f"{_show(raw)} is not a string")
            return raw
        if kind == "choice":
            if not isinstance(raw, str) or raw.lower() not in spec.choices:
                raise _Bad(f"{_show(raw)} is not one of: {', '.join(spec.choices)}")
            return raw.lower()
        if kind == "path":
            if not isinstance(raw, str) or not raw.strip():
                raise _Bad(f"{_show(raw)} is not a path")
            return self.path(raw)
        if kind == "address":
            return parse_address(raw)
        if kind in ("str_list", "path_list"):
            items = [raw] if isinstance(raw, str) else raw
            if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
                raise _Bad(f"{_show(raw)} is not a list of strings")
            if spec.choices:
                for item in items:
                    if item not in spec.choices:
                        raise _Bad(f"{_show(item)} is not one of: {', '.join(spec.choices)}")
            if kind == "path_list":
                return tuple(self.path(i) for i in items)
            return tuple(items)
        if kind == "selector":
            if not isinstance(raw, Mapping):
                raise _Bad(f"{_show(raw)} is not a label mapping (key: value or key: [values])")
            out: dict[str, str | list[str]] = {}
            for key, val in raw.items():
                if not isinstance(key, str):
                    raise _Bad(f"label key {_show(key)} is not a string")
                if isinstance(val, str):
                    out[key] = val
                elif isinstance(val, list) and all(isinstance(v, str) for v in val):
                    out[key] = list(val)
                else:
                    raise _Bad(f"label {key}: {_show(val)} is not a string or a list of strings")
            return out
        if kind == "str_map":
            if not isinstance(raw, Mapping) or not all(
                isinstance(k, str) and k and isinstance(v, str | int | float) and not isinstance(v, bool)
                for k, v in raw.items()
            ):
                raise _Bad(f"{_show(raw)} is not a mapping of names to string values")
            return {k: str(v) for k, v in raw.items()}
        raise AssertionError(f"unknown field kind {kind}")  # pragma: no cover - schema bug

    @staticmethod
    def _range(value: float, spec: _Spec, fmt: Callable[[Any], str]) -> Any:
        if spec.min is not None and value < spec.min:
            raise _Bad(f"{fmt(value)} is below the minimum {fmt(type(value)(spec.min))}")
        if spec.max is not None and value > spec.max:
            raise _Bad(f"{fmt(value)} is above the maximum {fmt(type(value)(spec.max))}")
        return value

    def path(self, raw: str) -> str:
        if raw == "-":
            return raw
        expanded = Path(os.path.expanduser(raw))
        if not expanded.is_absolute():
            expanded = self.base_dir / expanded
        return os.path.normpath(str(expanded))


def _check_kubeconfig_files(cfg: Config, loader: _Loader) -> None:
    for i, entry in enumerate(cfg.kubernetes_service.kubeconfig_files):
        where = f"kubernetes_service.kubeconfig_files[{i}]"
        if not entry.path:
            loader.bad(f"{where}.path", "must be set (the kubeconfig file)")
        if entry.name is not None and entry.contexts:
            loader.bad(where, "name (one cluster for a single-context file) and contexts cannot be used together")
        names = [(f"{where}.name", entry.name)] + [(f"{where}.contexts[{j}].name", c.name)
                                                    for j, c in enumerate(entry.contexts)]
        for key, name in names:
            if name is not None and not NAME_RE.match(name):
                loader.bad(key, f"{_show(name)} is not a valid cluster name (letters, digits, '.', '_', '-')")
        seen: set[str] = set()
        for j, ctx in enumerate(entry.contexts):
            if not ctx.context:
                loader.bad(f"{where}.contexts[{j}].context", "must be set (the context's name in the file)")
            elif ctx.context in seen:
                loader.bad(f"{where}.contexts[{j}].context", f"{_show(ctx.context)} is listed twice")
            seen.add(ctx.context)


def _cross_checks(cfg: Config, loader: _Loader) -> None:
    _check_kubeconfig_files(cfg, loader)
    tls = cfg.proxy.tls
    if (tls.cert_file is None) != (tls.key_file is None):
        loader.bad("proxy.tls", "cert_file and key_file go together (set both or neither)")
    if cfg.discovery_service.enabled:
        if not cfg.discovery_service.discovery_group:
            loader.bad("discovery_service.discovery_group",
                       "must be set when discovery_service.enabled is true")
        if not cfg.discovery_service.aws and not cfg.discovery_service.azure:
            loader.bad("discovery_service", "enabled but has no aws or azure matchers")
    if cfg.proxy.public_addr is not None:
        try:
            parse_address(cfg.proxy.public_addr, default_host="")
        except _Bad:
            if not re.fullmatch(r"[A-Za-z0-9.\-]+", cfg.proxy.public_addr):
                loader.bad("proxy.public_addr",
                           f"{_show(cfg.proxy.public_addr)} is not host or host:port")
    _check_connectors(cfg.auth.connectors, loader)
    if 0 < cfg.audit.max_size < 64 * KiB:
        loader.bad("audit.max_size", f"{format_size(cfg.audit.max_size)} is too small to rotate by "
                   "(at least 64KiB; 0 never rotates)")
    if cfg.backend.type == "etcd":
        if not cfg.backend.endpoints:
            loader.bad("backend.endpoints", "must list at least one etcd endpoint when backend.type is etcd")
        for i, endpoint in enumerate(cfg.backend.endpoints):
            if not re.fullmatch(r"https?://[^/\s]+:\d+/?", endpoint):
                loader.bad(f"backend.endpoints[{i}]", f"{_show(endpoint)} is not http(s)://host:port")
        if not cfg.backend.prefix.startswith("/") or not cfg.backend.prefix.endswith("/"):
            loader.bad("backend.prefix", f"{_show(cfg.backend.prefix)} must start and end with '/'")
    if (cfg.backend.tls.cert_file is None) != (cfg.backend.tls.key_file is None):
        loader.bad("backend.tls", "cert_file and key_file go together (set both or neither)")
    if (cfg.metrics.enabled and cfg.metrics.listen.port != 0
            and cfg.metrics.listen.port == cfg.proxy.listen.port):
        loader.bad("metrics.listen", f"port {cfg.metrics.listen.port} is also proxy.listen's port")


def _check_connectors(connectors: tuple[ConnectorConfig, ...], loader: _Loader) -> None:
    from rbac.labels import LabelPatternError, check_pattern

    seen: set[str] = set()
    for i, connector in enumerate(connectors):
        where = f"auth.connectors[{i}]"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", connector.name):
            loader.bad(f"{where}.name", f"{_show(connector.name)} is not a connector name (letters, digits, . _ -)")
        elif connector.name in seen:
            loader.bad(f"{where}.name", f"connector {connector.name!r} is defined twice")
        seen.add(connector.name)
        if not connector.client_id:
            loader.bad(f"{where}.client_id", "must be set")
        if connector.type == "oidc":
            if not connector.issuer_url or not connector.issuer_url.startswith(("https://", "http://")):
                loader.bad(f"{where}.issuer_url", "an OIDC connector needs its issuer URL (https://…)")
            if "openid" not in connector.scopes:
                loader.bad(f"{where}.scopes", "must include openid")
            if connector.teams_to_roles:
                loader.bad(f"{where}.teams_to_roles", "is for GitHub connectors (OIDC uses claims_to_roles)")
            for j, mapping in enumerate(connector.claims_to_roles):
                if not mapping.claim or not mapping.roles:
                    loader.bad(f"{where}.claims_to_roles[{j}]", "needs a claim and roles")
                try:
                    check_pattern(mapping.value)
                except LabelPatternError as exc:
                    loader.bad(f"{where}.claims_to_roles[{j}].value", str(exc))
            for trait, claim in connector.claims_to_traits.items():
                if not isinstance(claim, str):
                    loader.bad(f"{where}.claims_to_traits.{trait}", "must name one claim")
        else:
            if not connector.client_secret:
                loader.bad(f"{where}.client_secret", "a GitHub connector needs the OAuth app's client secret")
            if connector.claims_to_roles:
                loader.bad(f"{where}.claims_to_roles", "is for OIDC connectors (GitHub uses teams_to_roles)")
            for j, team in enumerate(connector.teams_to_roles):
                if not team.organization or not team.team or not team.roles:
                    loader.bad(f"{where}.teams_to_roles[{j}]", "needs organization, team and roles")


def config_from_mapping(data: object, *, source_name: str = "<config>", base_dir: str | None = None) -> Config:
    """Validate an already-parsed YAML document. ``base_dir`` anchors relative paths (default: cwd)."""
    loader = _Loader(source_name, Path(base_dir or os.getcwd()).resolve())
    if data is None:
        data = {}
    cfg: Config = loader.section(Config, data, "")
    if loader.problems:
        raise ConfigError(loader.problems)
    _cross_checks(cfg, loader)
    if loader.problems:
        raise ConfigError(loader.problems)
    return dataclasses.replace(cfg, source=source_name if source_name != "<config>" else None)


def load_config_or_report(path: str | os.PathLike[str] | None) -> Config | None:
    """``load_config`` for a command: on errors, every problem (each naming the file and the key) is
    printed to stderr, one a line, and the answer is None (the command then exits 1)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Load and validate a config file; ``None`` → all defaults with ``state_dir`` = ``./state``."""
    if path is None:
        return config_from_mapping({}, base_dir=os.getcwd())
    file_path = Path(path)
    name = str(path)
    try:
        text = file_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{name}: cannot read: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{name}: not valid YAML{where}: {problem}"]) from None
    return config_from_mapping(data, source_name=name, base_dir=str(file_path.resolve().parent))


# --------------------------------------------------------------------------------------------------
# Printing the effective configuration.

REDACTED = "<redacted>"


def config_to_dict(cfg: Any, *, redact: bool = True) -> Any:
    """The effective config as plain YAML-able data, units re-attached, secrets redacted."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        spec: _Spec | None = f.metadata.get("spec")
        if spec is None:
            continue
        value = getattr(cfg, f.name)
        out[f.name] = _plain(spec, value, redact)
    return out


def _plain(spec: _Spec, value: Any, redact: bool) -> Any:
    if value is None:
        return None
    if spec.secret and redact:
        return REDACTED
    if spec.kind == "section":
        return config_to_dict(value, redact=redact)
    if spec.kind == "list_of_sections":
        return [config_to_dict(v, redact=redact) for v in value]
    if spec.kind == "size":
        return format_size(value)
    if spec.kind == "duration":
        return format_duration(value)
    if spec.kind == "address":
        return str(value)
    if spec.kind in ("str_list", "path_list"):
        return list(value)
    if spec.kind == "selector":
        return {k: (list(v) if isinstance(v, list) else v) for k, v in value.items()}
    if spec.kind == "str_map":
        return dict(value)
    return value


def config_to_yaml(cfg: Config, *, redact: bool = True) -> str:
    """The effective config as YAML; paths with a computed default (``audit.log_file``) are printed
    as the path kubegate will use."""
    data = config_to_dict(cfg, redact=redact)
    data["audit"]["log_file"] = cfg.audit_log_file
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
