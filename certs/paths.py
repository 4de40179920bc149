"""Where the certs part keeps its files inside ``Config.state_dir`` (one place, so the proxy and the CLI
agree)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from certs.ca import CA_CERT_NAME, CA_KEY_NAME, SERVER_CERT_NAME, SERVER_KEY_NAME

__all__ = ["StatePaths"]


@dataclass(frozen=True, slots=True)
class StatePaths:
    state_dir: Path

    @classmethod
    def of(cls, state_dir: str | os.PathLike[str]) -> StatePaths:
        return cls(Path(state_dir))

    @property
    def ca_dir(self) -> Path:
        return self.state_dir / "ca"

    @property
    def ca_cert(self) -> Path:
        """``<state_dir>/ca/ca.pem``: the CA certificate (trust anchor for clients, client CA for the proxy)."""
        return self.ca_dir / CA_CERT_NAME

    @property
    def ca_key(self) -> Path:
        return self.ca_dir / CA_KEY_NAME

    @property
    def server_cert(self) -> Path:
        """``<state_dir>/ca/server.pem``: default ``proxy.tls.cert_file``."""
        return self.ca_dir / SERVER_CERT_NAME

    @property
    def server_key(self) -> Path:
        """``<state_dir>/ca/server-key.pem``: default ``proxy.tls.key_file``."""
        return self.ca_dir / SERVER_KEY_NAME

    @property
    def locks(self) -> Path:
        """``<state_dir>/locks``: the lock list (``certs.locks.LockList``; JSON), as ``Config.locks_file``."""
        return self.state_dir / "locks"

    @property
    def bots_dir(self) -> Path:
        return self.state_dir / "bots"
