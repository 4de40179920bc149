"""Who kubegate is on a cluster: the user name its upstream credentials authenticate as.

``SelfSubjectReview`` (``authentication.k8s.io/v1``, Kubernetes ≥ 1.28) asked with kubegate's own
credentials for the cluster; when the API does not serve it, the client certificate's CN (how the API
server names a certificate user). Blocking (``http.client`` over ``ssl``, as the health check): for the
CLI.
"""

from __future__ import annotations

import http.client
import json
import ssl

from cryptography import x509
from cryptography.x509.oid import NameOID

from discovery.errors import DiscoveryError
from discovery.health import _request
from discovery.model import Cluster, UpstreamCredentials

SELF_SUBJECT_REVIEWS = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
_REVIEW = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).encode()


def certificate_user(cert_pem: bytes | None) -> str | None:
    """The CN of a client certificate (the user name the API server sees), or None."""
    if not cert_pem:
        return None
    try:
        names = x509.load_pem_x509_certificate(cert_pem).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return None
    value = names[0].value if names else None
    return value if isinstance(value, str) and value else None


def upstream_username(cluster: Cluster, creds: UpstreamCredentials, timeout: float = 10.0) -> str:
    """The user name ``creds`` authenticate as on ``cluster``; ``DiscoveryError`` when it cannot be told."""
    try:
        [(status, body)] = _request(cluster, creds, timeout, [("POST", SELF_SUBJECT_REVIEWS, _REVIEW)])
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        status, body = 0, str(exc).encode()
    if status in (200, 201):
        try:
            name = json.loads(body)["status"]["userInfo"]["username"]
        except (ValueError, KeyError, TypeError):
            name = None
        if isinstance(name, str) and name:
            return name
    fallback = certificate_user(creds.client_cert_pem)
    if fallback:
        return fallback
    asked = f"HTTP {status}" if status else f"unreachable: {body.decode(errors='replace')}"
    raise DiscoveryError(
        f"cluster {cluster.name!r}: cannot tell which user kubegate's credentials authenticate as "
        f"(SelfSubjectReview: {asked}); name it with --upstream-user"
    )
