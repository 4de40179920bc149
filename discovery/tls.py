"""A cluster's TLS material (its CA, kubegate's client certificate for it) loaded into an ``ssl.SSLContext``.

One place for the proxy's upstream contexts (``proxy.tls.upstream_context``) and the health checker's
(``discovery.health``), with one error for data that cannot be used: a discovered or configured cluster
whose CA is not PEM certificates (binary, non-ASCII, truncated) or whose client key does not match raises
:class:`ClusterTLSError` with a message that says which part is wrong, never a bare ``TypeError`` or
``ssl.SSLError`` from deep inside ``ssl``.
"""

from __future__ import annotations

import os
import ssl
import tempfile

from discovery.errors import DiscoveryError


class ClusterTLSError(DiscoveryError):
    """The cluster's CA data or kubegate's client certificate for it cannot be loaded."""


def load_cluster_ca(ctx: ssl.SSLContext, ca_pem: bytes) -> None:
    """Trust exactly the PEM certificates in ``ca_pem`` (``certificate-authority-data``)."""
    try:
        ctx.load_verify_locations(cadata=ca_pem.decode("ascii"))
    except UnicodeDecodeError as exc:
        raise ClusterTLSError("certificate-authority data is not PEM text (it holds non-ASCII bytes)") from exc
    except (ssl.SSLError, ValueError, TypeError) as exc:
        raise ClusterTLSError(f"certificate-authority data holds no usable PEM certificate: {_reason(exc)}") from exc


def load_client_certificate(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """``load_cert_chain`` reads files only: write both to a private temporary file, load it, remove it."""
    fd, path = tempfile.mkstemp(prefix="kubegate-cluster-", suffix=".pem")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(cert_pem.rstrip(b"\n") + b"\n" + key_pem)
        ctx.load_cert_chain(path)
    except (ssl.SSLError, ValueError) as exc:
        raise ClusterTLSError(f"client certificate or key is not usable: {_reason(exc)}") from exc
    finally:
        os.unlink(path)


def _reason(exc: Exception) -> str:
    return getattr(exc, "reason", None) or str(exc) or type(exc).__name__
