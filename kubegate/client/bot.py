"""A bot that joins over the auth endpoint (Machine ID's flow): no CA key on the bot's machine.

First start: the CA is fetched and checked against ``--ca-pin`` (``fetch_pinned_ca``), then the one-time
join token and a fresh public key go to ``/kubegate/auth/join``. Afterwards the bot renews with its own
certificate (mutual TLS to ``/kubegate/auth/renew``, a new key each time) before the current one expires;
the proxy refuses once the bot is removed or locked, and the bot then stops with that message. The files
in ``--dest`` are the same as a local bot's (``certs.bot``): identity.pem, tls.crt, tls.key, ca.crt,
kubeconfig, kubeconfig-exec.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from cryptography import x509

from certs.bot import (
    BotError,
    BotFiles,
    BotResult,
    exclusive_dest,
    read_identity,
    write_identity,
    write_kubeconfigs,
)
from certs.ca import CLOCK_SKEW
from certs.files import ensure_private_dir
from certs.identity import identity_from_certificate
from kubegate.client.api import AuthClient, ClientError, fetch_pinned_ca
from kubegate.client.login import new_key

__all__ = ["remote_bot_step", "run_remote_bot"]

log = logging.getLogger(__name__)

# Renew when this share of the certificate's lifetime has passed (a 1 h certificate: after 40 min).
RENEW_AT = 2 / 3


def remote_bot_step(proxy: str, dest: str | Path, *, token: str | None, ca_pin: str | None,
                    clock: Callable[[], float] = time.time) -> BotResult:
    """Join or renew if due, then refresh the kubeconfigs. ``ClientError`` from the proxy propagates."""
    files = BotFiles(ensure_private_dir(dest))
    current = read_identity(files)
    ca_pem = files.ca.read_bytes() if files.ca.exists() else None
    now = clock()
    reason = ""
    if current is not None and ca_pem is not None and current[0].not_valid_after_utc.timestamp() > now + 10:
        certificate, cert_pem, key_pem = current
        due = _due(certificate)
        if now >= due:
            key_pem_new, public = new_key()
            answer = AuthClient(proxy, ca_pem, (cert_pem, key_pem)).post("renew", {"public_key": public})
            cert_pem, key_pem, reason = answer["certificate"].encode(), key_pem_new, "renewal due"
    else:
        if not token:
            raise BotError(f"no usable certificate in {files.dest} and no --token to join with")
        if not ca_pin:
            raise BotError("--ca-pin is needed to join (kubegate bots add prints it)")
        ca_pem = fetch_pinned_ca(proxy, ca_pin)
        key_pem, public = new_key()
        answer = AuthClient(proxy, ca_pem).post("join", {"token": token, "public_key": public})
        cert_pem, reason = answer["certificate"].encode(), "joined"
    if reason:
        write_identity(files, cert_pem, key_pem)
    certificate = x509.load_pem_x509_certificate(cert_pem)
    user = identity_from_certificate(certificate).user
    clusters = tuple(c["name"] for c in AuthClient(proxy, ca_pem, (cert_pem, key_pem)).get("clusters"))
    write_kubeconfigs(files, ca_pem, proxy, clusters, user)
    return BotResult(renewed=bool(reason), serial=format(certificate.serial_number, "x"),
                     not_after=certificate.not_valid_after_utc, next_due=_due(certificate), clusters=clusters,
                     reason=reason)


def _due(certificate: x509.Certificate) -> float:
    issued = certificate.not_valid_before_utc + CLOCK_SKEW
    lifetime = certificate.not_valid_after_utc - issued
    return (issued + timedelta(seconds=lifetime.total_seconds() * RENEW_AT)).timestamp()


def run_remote_bot(proxy: str, dest: str | Path, *, token: str | None, ca_pin: str | None,
                   wait: Callable[[float], bool], once: bool = False,
                   on_result: Callable[[BotResult], None] | None = None, retry_after: float = 10.0,
                   clock: Callable[[], float] = time.time) -> BotResult | None:
    """Keep ``dest`` fresh until ``wait`` says stop. A refusal (401/403: token used or expired, bot removed
    or locked) ends the bot with ``BotError``; an unreachable proxy is retried after ``retry_after``."""
    files = BotFiles(ensure_private_dir(dest))
    result = None
    with exclusive_dest(files):
        while True:
            try:
                result = remote_bot_step(proxy, files.dest, token=token, ca_pin=ca_pin, clock=clock)
            except ClientError as exc:
                if exc.code in (400, 401, 403, 404) or once:
                    raise BotError(str(exc)) from None
                log.error("bot: the proxy is unreachable, retrying in %.0fs: %s", retry_after, exc)
                if wait(retry_after):
                    return result
                continue
            if on_result is not None:
                on_result(result)
            if once or wait(max(result.next_due - clock(), 0.05)):
                return result
