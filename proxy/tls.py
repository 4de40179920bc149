"""TLS contexts: the mTLS listener and the upstream (client) contexts per cluster.

Listener: TLS 1.2+; a client certificate is requested and, when sent, verified by OpenSSL against the
kubegate CA (chain and signature) with the time check switched off (``X509_V_FLAG_NO_CHECK_TIME``).
After the handshake ``check_client_certificate`` checks the validity period and what OpenSSL leaves
open for a client certificate (key usage allows signatures; extended key usage, when present, includes
clientAuth). Why: an expired certificate then reaches the HTTP layer and gets a 401 ``Status`` saying
it expired and how to get a new one (kubectl prints it), where a TLS alert shows as a bare "EOF"; and a
client without a certificate can reach kubegate's own sign-in endpoints (``/kubegate/auth/``) on the
same port — every other path answers it 401. ALPN offers ``h2`` and ``http/1.1``. No session tickets
(``OP_NO_TICKET``, ``num_tickets = 0``): kubectl and client-go (Go's TLS client has no session cache
unless one is configured) and Python's clients never resume, and the two TLS 1.3 tickets OpenSSL sends
by default cost ~2 M instructions of every handshake; a client that would resume makes a full
handshake instead (TLS 1.2 session ids still resume from OpenSSL's session cache).

Upstream: one ``SSLContext`` per (cluster, credentials) with the cluster's CA (or the system store), the
client certificate and key when the kubeconfig has one, and ALPN. A client ``SSLContext`` resumes no
session by itself (OpenSSL keeps no client-side session cache unless asked): where the upstream
connections run through kubegate's TLS layer (``tls_layer``), the pool offers each new connection the
session of the last one made with the same context (``ClusterPool._resumable_session``); through
uvloop's TLS transport (no session argument) every connection is a full handshake.
``insecure_skip_tls_verify`` only when the cluster says so, with a warning.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from discovery.model import Cluster, UpstreamCredentials
from discovery.tls import load_client_certificate, load_cluster_ca

log = logging.getLogger("kubegate.proxy.tls")

ALPN_SERVER = ("h2", "http/1.1")
# OpenSSL's X509_V_FLAG_NO_CHECK_TIME (1.1.0+): verify chain and signatures but not validity periods
# (the ssl module has no name for it); the proxy checks the client certificate's period itself.
VERIFY_NO_CHECK_TIME = 0x200000


def _direct_tls() -> Callable[[object], Any] | None:
    """``proxy.tls_direct.attach`` when that accelerator was built, its OpenSSL functions were found and
    the process is not held to the pure-Python modules (``KUBEGATE_PURE_PYTHON=1``); else None."""
    if os.environ.get("KUBEGATE_PURE_PYTHON") == "1":
        return None
    try:
        from proxy import tls_direct  # type: ignore[attr-defined]
    except ImportError:
        return None
    return tls_direct.attach if tls_direct.resolve() else None


_ATTACH_DIRECT = _direct_tls()


def tls_layer() -> Callable[..., Any] | None:
    """``proxy.tls_direct.TLSTransport`` (the TLS layer over uvloop's TCP transport of the listener and of
    the upstream connections) where the accelerator was built and every OpenSSL function it calls was
    found, unless the process is held to the pure-Python modules (``KUBEGATE_PURE_PYTHON=1``); else
    None: uvloop's own TLS transport."""
    if _ATTACH_DIRECT is None:
        return None
    from proxy import tls_direct  # type: ignore[attr-defined]

    return tls_direct.TLSTransport if tls_direct.layer_available() else None  # type: ignore[no-any-return]


async def handshake_within(layer: Any, raw: asyncio.BaseTransport, timeout: float) -> None:
    """Wait until ``layer`` (a ``TLSTransport`` over the TCP transport ``raw``, either side) has done its
    handshake, ``timeout`` seconds at most; on its failure, the timeout or a cancellation the TCP
    connection is aborted and the error raised (the ``ssl`` module's, ``TimeoutError``...)."""
    try:
        await asyncio.wait_for(layer.handshake_done, timeout)
    except BaseException:
        raw.abort()
        raise


class DirectSSLObject(ssl.SSLObject):
    """An ``SSLObject`` whose ``read``, ``write`` and ``pending`` are C functions, not the ``ssl``
    module's Python methods that only pass their arguments on (uvloop calls each at least once per TLS
    record in and out: three Python calls, ~1,500 instructions, per relayed watch event; ~2,500 per
    GET). Made by ``SSLContext.wrap_bio`` once a context's ``sslobject_class`` is this class
    (``direct_ssl_objects``). The functions are ``proxy.tls_direct``'s, which call OpenSSL without
    letting go of the GIL and read a record without a 256 KiB allocation, where that accelerator is
    available; else the C methods of the ``_ssl`` connection the object wraps. Either way the same calls
    with the same arguments give the ``ssl`` module's answers. Where a Python version names its
    internals differently (its ``_create`` or ``_sslobj``), the object is a plain ``SSLObject``."""

    @classmethod
    def _create(cls, *args: object, **kwargs: object) -> ssl.SSLObject:
        sslobj = super()._create(*args, **kwargs)  # type: ignore[misc]
        inner = getattr(sslobj, "_sslobj", None)
        if inner is not None:
            direct = _ATTACH_DIRECT(inner) if _ATTACH_DIRECT is not None else None
            methods = direct if direct is not None else inner
            sslobj.read = methods.read  # type: ignore[method-assign]
            sslobj.write = methods.write  # type: ignore[method-assign]
            sslobj.pending = methods.pending  # type: ignore[method-assign]
        return sslobj


def direct_ssl_objects(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """``ctx``, whose TLS connections over memory BIOs (uvloop's) are ``DirectSSLObject``s."""
    ctx.sslobject_class = DirectSSLObject
    return ctx


def server_context(
    cert_file: str, key_file: str, client_ca_file: str, *, alpn: tuple[str, ...] = ALPN_SERVER
) -> ssl.SSLContext:
    """The listener's context: client certificates from ``client_ca_file`` (optional; time not checked by
    OpenSSL, see the module docstring)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    ctx.load_verify_locations(cafile=client_ca_file)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.verify_flags |= VERIFY_NO_CHECK_TIME
    ctx.set_alpn_protocols(list(alpn))
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_TICKET
    ctx.num_tickets = 0  # TLS 1.3: no session tickets (see the module docstring)
    return direct_ssl_objects(ctx)


def check_client_certificate(
    cert: x509.Certificate, now: datetime | None = None, *, allow_expired: bool = False
) -> str | None:
    """What is wrong with a (chain-verified) client certificate for client authentication, or None.
    ``allow_expired``: expiry is left to the caller (the proxy answers such requests with a 401)."""
    now = now or datetime.now(UTC)
    if cert.not_valid_after_utc <= now and not allow_expired:
        return "certificate has expired"
    if cert.not_valid_before_utc > now:
        return "certificate is not yet valid"
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.digital_signature and not ku.key_agreement:
            return "certificate key usage does not allow digital signatures"
    except x509.ExtensionNotFound:
        pass
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CLIENT_AUTH not in eku and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku:
            return "certificate extended key usage does not include clientAuth"
    except x509.ExtensionNotFound:
        pass
    return None


def classify_handshake_error(exc: BaseException) -> str:
    """A short, bounded label for a failed handshake (the metric's ``reason``)."""
    if isinstance(exc, TimeoutError) or (isinstance(exc, ConnectionAbortedError) and "longer than" in str(exc)):
        return "timeout"
    if isinstance(exc, ssl.SSLCertVerificationError):
        message = (exc.verify_message or "").lower()
        if "expired" in message:
            return "client_cert_expired"
        if "not yet valid" in message:
            return "client_cert_not_yet_valid"
        return "client_cert_untrusted"
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        if reason in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "NO_CERTIFICATE_RETURNED"):
            return "no_client_cert"
        if reason in ("HTTP_REQUEST", "HTTPS_PROXY_REQUEST"):
            return "plain_http"
        if "CERTIFICATE" in reason and ("UNKNOWN" in reason or "BAD" in reason or "VERIFY" in reason):
            return "client_cert_untrusted"
        if "CERTIFICATE_EXPIRED" in reason:
            return "client_cert_expired"
        if reason in ("WRONG_VERSION_NUMBER", "UNSUPPORTED_PROTOCOL", "UNKNOWN_PROTOCOL", "VERSION_TOO_LOW"):
            return "protocol_version"
        if "CIPHER" in reason:
            return "no_shared_cipher"
        if isinstance(exc, ssl.SSLEOFError) or "EOF" in reason:
            return "eof"
        return "tls_error"
    if isinstance(exc, ConnectionError | EOFError):
        return "eof"
    return "other"


def upstream_context(
    cluster: Cluster, credentials: UpstreamCredentials, *, alpn: tuple[str, ...] = ("h2", "http/1.1")
) -> ssl.SSLContext:
    """The client context kubegate uses towards one cluster's API server; ``ClusterTLSError`` when the
    cluster's CA data or kubegate's client certificate for it cannot be loaded."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cluster.insecure_skip_tls_verify:
        log.warning(
            "cluster %s: insecure_skip_tls_verify is set, the API server's certificate is NOT verified",
            cluster.name,
        )
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif cluster.ca_pem:
        load_cluster_ca(ctx, cluster.ca_pem)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if credentials.client_cert_pem and credentials.client_key_pem:
        load_client_certificate(ctx, credentials.client_cert_pem, credentials.client_key_pem)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return direct_ssl_objects(ctx)
