"""Where ``kubegate login`` keeps a person's identity: ``$KUBEGATE_HOME`` or ``~/.kubegate`` (``$HOME``).

    ~/.kubegate/                     0700
      current                        the proxy (HOST:PORT) of the last login
      profiles/<host_port>/          0700, one per proxy
        identity.pem                 certificate + private key in one file (0600): never a new
                                     certificate with an old key
        ca.pem                       the kubegate CA of that proxy (pinned at first contact; what
                                     verifies the proxy unless profile.json says system_trust)
        profile.json                 proxy, user, roles, traits, kind, expiry, connector (0600)
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from certs.files import ensure_private_dir, write_atomic

__all__ = ["HOME_ENV", "Profile", "home", "load_profile", "save_profile", "remove_profile", "current_proxy"]

HOME_ENV = "KUBEGATE_HOME"


def home() -> Path:
    override = os.environ.get(HOME_ENV)
    return Path(override) if override else Path.home() / ".kubegate"


def _profile_dir(proxy: str) -> Path:
    return home() / "profiles" / re.sub(r"[^A-Za-z0-9.-]", "_", proxy)


@dataclass
class Profile:
    proxy: str
    user: str
    roles: list[str]
    traits: dict[str, list[str]]
    kind: str
    expires: str  # ISO 8601 UTC
    connector: str = ""
    serial: str = ""
    # The proxy's serving certificate is trusted through the system's CAs (a public certificate), not
    # through the pinned kubegate CA: kubeconfigs then carry no certificate-authority-data.
    system_trust: bool = False
    cert_pem: bytes = field(default=b"", repr=False)
    key_pem: bytes = field(default=b"", repr=False)
    ca_pem: bytes = field(default=b"", repr=False)

    @property
    def directory(self) -> Path:
        return _profile_dir(self.proxy)

    @property
    def identity_file(self) -> Path:
        return self.directory / "identity.pem"

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def server_ca(self) -> bytes | None:
        """What verifies the proxy's serving certificate: the pinned CA, or None for the system's CAs."""
        return None if self.system_trust else self.ca_pem

    @property
    def not_after(self) -> datetime:
        return datetime.strptime(self.expires, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)

    def expired(self, now: datetime | None = None) -> bool:
        return self.not_after <= (now or datetime.now(UTC))

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        for secret in ("cert_pem", "key_pem", "ca_pem"):
            data.pop(secret)
        return data


def save_profile(profile: Profile) -> Path:
    ensure_private_dir(home())
    directory = ensure_private_dir(profile.directory)
    write_atomic(profile.identity_file, profile.cert_pem.rstrip(b"\n") + b"\n" + profile.key_pem, 0o600)
    write_atomic(profile.ca_file, profile.ca_pem, 0o600)
    write_atomic(directory / "profile.json", json.dumps(profile.summary(), indent=2) + "\n", 0o600)
    write_atomic(home() / "current", profile.proxy + "\n", 0o600)
    return directory


def current_proxy() -> str | None:
    try:
        return (home() / "current").read_text().strip() or None
    except FileNotFoundError:
        return None


def load_profile(proxy: str | None = None) -> Profile | None:
    proxy = proxy or current_proxy()
    if not proxy:
        return None
    directory = _profile_dir(proxy)
    try:
        data = json.loads((directory / "profile.json").read_text())
        identity = (directory / "identity.pem").read_bytes()
        ca_pem = (directory / "ca.pem").read_bytes()
    except (FileNotFoundError, ValueError):
        return None
    marker = identity.find(b"-----BEGIN PRIVATE KEY-----")
    return Profile(**data, cert_pem=identity[:marker], key_pem=identity[marker:], ca_pem=ca_pem)


def remove_profile(proxy: str | None = None) -> str | None:
    """Delete the profile (certificate and key) of ``proxy`` (default: the current one); its name or None."""
    proxy = proxy or current_proxy()
    if not proxy:
        return None
    directory = _profile_dir(proxy)
    existed = directory.exists()
    shutil.rmtree(directory, ignore_errors=True)
    if current_proxy() == proxy:
        (home() / "current").unlink(missing_ok=True)
    return proxy if existed else None
