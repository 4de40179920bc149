"""Upstream credential providers (``discovery.model.CredentialsProvider``) for kubeconfig-style auth.

- ``FileCredentials``: a bearer token file (``tokenFile``) and/or client certificate and key files,
  re-read when a file changes (checked at most once per ``recheck_interval`` seconds); inline values
  (``token``, ``client-*-data``) fill in what no file gives, and ``tokenFile`` beats ``token`` (client-go).
- ``ExecCredentials``: a ``client.authentication.k8s.io`` exec plugin (``v1`` or ``v1beta1``), run
  without a shell with a timeout; its ``ExecCredential`` is cached until ``expirationTimestamp`` (minus a
  margin) or, without one, until ``invalidate()`` (client-go behaviour: re-run after a 401).

Providers are loop-agnostic: blocking work (reading files, running the plugin) happens in a worker thread,
and a ``threading.Lock`` guards the cache, so the proxy's loop and the health checker can share one.
Providers compare equal when their configuration is equal (the cache is not compared), which lets the
registry recognise an unchanged cluster.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from discovery.errors import DiscoveryError
from discovery.model import UpstreamCredentials

log = logging.getLogger(__name__)

EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
EXPIRY_MARGIN = 60.0  # refresh this many seconds before a credential expires


class RenewingTokenProvider:
    """Base of the providers of a token that expires (EKS, AKS): the token is kept until it has less than
    ``margin`` seconds left, then fetched again (``_fetch``, in a worker thread from ``get``; one fetch
    at a time). Subclasses compare equal on their configuration, never on the cache."""

    margin: float = EXPIRY_MARGIN

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._value: UpstreamCredentials | None = None

    def _fetch(self) -> UpstreamCredentials:
        raise NotImplementedError

    def _fresh(self) -> UpstreamCredentials | None:
        value = self._value
        if value is not None and value.expires_at is not None and value.expires_at - self.margin > self.clock():
            return value
        return None

    async def get(self) -> UpstreamCredentials:
        return self._fresh() or await asyncio.to_thread(self.current)

    def current(self) -> UpstreamCredentials:
        with self._lock:
            value = self._fresh()
            if value is None:
                value = self._value = self._fetch()
            return value


@dataclass(eq=True)
class FileCredentials:
    token_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cluster: str = ""
    static_token: str | None = None  # from the kubeconfig; tokenFile wins when both are set (client-go)
    static_cert_pem: bytes | None = field(default=None, repr=False)  # *-data, when not given as files
    static_key_pem: bytes | None = field(default=None, repr=False)
    recheck_interval: float = 1.0
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)
    _stamp: tuple[Any, ...] | None = field(default=None, compare=False, repr=False)
    _checked: float = field(default=-1e18, compare=False, repr=False)
    _value: UpstreamCredentials | None = field(default=None, compare=False, repr=False)

    def _paths(self) -> list[str]:
        return [p for p in (self.token_file, self.cert_file, self.key_file) if p]

    def current(self) -> UpstreamCredentials:
        """Synchronous read (cheap when nothing changed)."""
        now = self.clock()
        with self._lock:
            if self._value is not None and now - self._checked < self.recheck_interval:
                return self._value
            self._checked = now
            stamp = tuple(_stat_stamp(p) for p in self._paths())
            if self._value is not None and stamp == self._stamp:
                return self._value
            self._value = self._read()
            self._stamp = stamp
            return self._value

    async def get(self) -> UpstreamCredentials:
        value = self._value
        if value is not None and self.clock() - self._checked < self.recheck_interval:
            return value
        return await asyncio.to_thread(self.current)

    def _read(self) -> UpstreamCredentials:
        token, cert, key = self.static_token, self.static_cert_pem, self.static_key_pem
        try:
            if self.token_file:
                with open(self.token_file, encoding="utf-8") as f:
                    token = f.read().strip() or token
            if self.cert_file:
                with open(self.cert_file, "rb") as f:
                    cert = f.read()
            if self.key_file:
                with open(self.key_file, "rb") as f:
                    key = f.read()
        except OSError as exc:
            raise DiscoveryError(f"cluster {self.cluster!r}: cannot read credentials: {exc}") from None
        return UpstreamCredentials(client_cert_pem=cert, client_key_pem=key, bearer_token=token or None)


def _stat_stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass(eq=True)
class ExecCredentials:
    """Runs a kubeconfig ``exec`` plugin; see the module docstring."""

    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = "client.authentication.k8s.io/v1"
    cluster: str = ""
    cluster_info: dict[str, Any] | None = None  # passed when provideClusterInfo is true
    timeout: float = 30.0
    static_cert_pem: bytes | None = None  # client cert/key from the kubeconfig, if any (used as fallback)
    static_key_pem: bytes | None = None
    clock: Callable[[], float] = field(default=time.time, compare=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)
    _value: UpstreamCredentials | None = field(default=None, compare=False, repr=False)

    def invalidate(self) -> None:
        with self._lock:
            self._value = None

    def _fresh(self) -> UpstreamCredentials | None:
        value = self._value
        if value is None:
            return None
        if value.expires_at is not None and value.expires_at - EXPIRY_MARGIN <= self.clock():
            return None
        return value

    async def get(self) -> UpstreamCredentials:
        value = self._fresh()
        if value is not None:
            return value
        return await asyncio.to_thread(self.current)

    def current(self) -> UpstreamCredentials:
        with self._lock:
            value = self._fresh()
            if value is None:
                value = self._value = self._run()
            return value

    def _run(self) -> UpstreamCredentials:
        exec_info: dict[str, Any] = {
            "apiVersion": self.api_version,
            "kind": "ExecCredential",
            "spec": {"interactive": False},
        }
        if self.cluster_info is not None:
            exec_info["spec"]["cluster"] = self.cluster_info
        env = dict(os.environ)
        env.update(dict(self.env))
        env["KUBERNETES_EXEC_INFO"] = json.dumps(exec_info)
        where = f"cluster {self.cluster!r}: exec plugin {self.command!r}"
        try:
            proc = subprocess.run(
                [self.command, *self.args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=env,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise DiscoveryError(f"{where} timed out after {self.timeout:g}s") from None
        except OSError as exc:
            raise DiscoveryError(f"{where} cannot run: {exc}") from None
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()[:500]
            raise DiscoveryError(f"{where} exited with status {proc.returncode}: {err}")
        return parse_exec_credential(proc.stdout, where, self.api_version,
                                     self.static_cert_pem, self.static_key_pem)


def parse_exec_credential(
    stdout: bytes,
    where: str,
    api_version: str,
    static_cert: bytes | None = None,
    static_key: bytes | None = None,
) -> UpstreamCredentials:
    try:
        doc = json.loads(stdout)
    except ValueError as exc:
        raise DiscoveryError(f"{where} printed no ExecCredential JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "ExecCredential":
        raise DiscoveryError(f"{where} printed something other than an ExecCredential")
    if doc.get("apiVersion") != api_version:
        raise DiscoveryError(
            f"{where} answered apiVersion {doc.get('apiVersion')!r}, expected {api_version!r}"
        )
    status = doc.get("status") or {}
    token = status.get("token")
    cert = status.get("clientCertificateData")
    key = status.get("clientKeyData")
    if not token and not (cert and key):
        raise DiscoveryError(f"{where} returned neither a token nor a client certificate and key")
    expires_at = None
    if status.get("expirationTimestamp"):
        expires_at = parse_rfc3339(str(status["expirationTimestamp"]), where)
    return UpstreamCredentials(
        client_cert_pem=cert.encode() if cert else static_cert,
        client_key_pem=key.encode() if key else static_key,
        bearer_token=token or None,
        expires_at=expires_at,
    )


def parse_rfc3339(value: str, where: str = "") -> float:
    try:
        stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise DiscoveryError(f"{where}: bad timestamp {value!r}") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()
