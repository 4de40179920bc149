"""A real OpenID Connect provider for the demo and the tests: the npm package ``oidc-provider`` (OpenID
Certified) under Node, configured by ``sandbox/oidc/provider.mjs`` with a few users and a ``groups``
claim, on a free loopback port. ``scripts/install-oidc-provider.sh`` installs it into
``.tools/oidc-provider`` when node and npm exist.

    with running_provider(workdir) as provider:   # provider.issuer, provider.key (its signing key)
        ...

Users sign in at its development login form (any password; the login must be one of ``users``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CLIENT_ID", "DEMO_USERS", "Provider", "provider_available", "running_provider"]

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "sandbox" / "oidc" / "provider.mjs"
INSTALLED = ROOT / ".tools" / "oidc-provider" / "node_modules" / "oidc-provider" / "package.json"
CLIENT_ID = "kubegate"
DEMO_USERS: dict[str, dict[str, Any]] = {
    "alice": {"email": "alice@example.com", "groups": ["admins", "devs"]},
    "bob": {"email": "bob@example.com", "groups": ["contractors"]},
}


def provider_available() -> str | None:
    """Why the provider cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not INSTALLED.exists():
        return "oidc-provider is not installed (scripts/install-oidc-provider.sh)"
    return None


@dataclass
class Provider:
    issuer: str
    key: Any  # joserfc RSAKey: the provider's signing key
    process: subprocess.Popen[str]


@contextmanager
def running_provider(workdir: str | Path, users: Mapping[str, Mapping[str, Any]] = DEMO_USERS,
                     port: int = 0, key: Any = None) -> Iterator[Provider]:
    """The provider on ``port`` (default: a free one) signing with ``key`` (default: a new RSA key)."""
    from joserfc.jwk import RSAKey

    from kubegate.demo import free_port

    problem = provider_available()
    if problem:
        raise RuntimeError(f"cannot run the OpenID provider: {problem}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    key = key or RSAKey.generate_key(2048, parameters={"kid": "sandbox-key-1", "use": "sig", "alg": "RS256"},
                                     private=True)
    settings = {
        "port": port,
        "jwks": {"keys": [key.as_dict(private=True)]},
        "users": dict(users),
        "clients": [{
            "client_id": CLIENT_ID,
            "application_type": "native",  # loopback redirect URIs on any port (RFC 8252)
            "token_endpoint_auth_method": "none",  # a public client: PKCE instead of a secret
            "redirect_uris": ["http://127.0.0.1/callback"],
            "grant_types": ["authorization_code", "urn:ietf:params:oauth:grant-type:device_code"],
            "response_types": ["code"],
        }],
    }
    settings_file = workdir / "provider.json"
    settings_file.write_text(json.dumps(settings))
    settings_file.chmod(0o600)
    log = open(workdir / "provider.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen([str(shutil.which("node")), str(SCRIPT), str(settings_file)],
                               stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = process.stdout.readline() if process.stdout else ""
        if not line.startswith("listening "):
            raise RuntimeError(f"the OpenID provider did not start: {(workdir / 'provider.log').read_text()[-2000:]}")
        issuer = line.split(" ", 1)[1].strip()
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(issuer + "/.well-known/openid-configuration", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the OpenID provider did not answer") from None
                time.sleep(0.05)
        yield Provider(issuer, key, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()
