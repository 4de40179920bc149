"""Machine identities (like Teleport Machine ID): a bot keeps a short-lived certificate fresh in a directory.

``run_bot`` maintains ``dest/``::

    identity.pem     certificate + private key in ONE file (0600) — what the kubeconfig and the exec
                     plugin read, so a reader can never pair a new certificate with an old key
    tls.crt          the certificate (0600)        \\  the same pair as separate files, for tools that
    tls.key          the private key (0600)        /   want them (written key first, then certificate)
    ca.crt           the kubegate CA (0600)
    kubeconfig       one context per visible cluster, client-certificate/client-key = identity.pem
    kubeconfig-exec  the same, but the user is an exec plugin: ``kubegate bot credentials --dest DIR``
                     printing an ``ExecCredential`` (client.authentication.k8s.io/v1), so kubectl asks for
                     the newest certificate each time it starts and whenever the one it holds expires

Every file is replaced atomically. The certificate *is* the state: after a restart the bot reads
``identity.pem`` and renews only when it is due (``renew`` after issuance, or at expiry, whichever comes
first), or at once if the certificate is missing, broken, from another CA, or names another bot or other
roles. The bot's user name (certificate CN) is ``bot-<name>``; its kind is ``bot``. One bot process per
directory (an ``flock`` on ``dest/.lock``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from certs.ca import CLOCK_SKEW, CertificateAuthority, Clock, same_public_key
from certs.files import ensure_private_dir, write_atomic
from certs.identity import IdentityError, identity_from_certificate
from certs.kubeconfig import (
    EXEC_API_VERSION,
    ExecCredentials,
    FileCredentials,
    build_kubeconfig,
    write_kubeconfig_document,
)
from certs.locks import format_time
from rbac.identity import Identity

__all__ = [
    "BotError",
    "BotFiles",
    "BotResult",
    "bot_user",
    "renew_if_due",
    "run_bot",
    "bot_credentials",
    "default_exec_command",
]

log = logging.getLogger(__name__)

ClustersProvider = Callable[[Identity], Sequence[str]]


class BotError(RuntimeError):
    """The bot cannot do its job (bad settings, another bot on the directory, no usable certificate)."""


def bot_user(name: str) -> str:
    """The certificate CN of bot ``name`` (what locks and audit name): ``bot-<name>``."""
    return f"bot-{name}"


class _InDest:
    """A ``BotFiles`` attribute: the file ``name`` in the bot's directory."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, files: BotFiles, owner: type | None = None) -> Path:
        return files.dest / self.name


@dataclass(frozen=True, slots=True)
class BotFiles:
    """The files ``run_bot`` keeps in ``dest`` (see the module docstring)."""

    dest: Path

    identity = _InDest("identity.pem")
    cert = _InDest("tls.crt")
    key = _InDest("tls.key")
    ca = _InDest("ca.crt")
    kubeconfig = _InDest("kubeconfig")
    kubeconfig_exec = _InDest("kubeconfig-exec")
    lock = _InDest(".lock")


@dataclass(frozen=True, slots=True)
class BotResult:
    renewed: bool  # a new certificate was issued in this step
    serial: str
    not_after: datetime
    next_due: float  # unix time of the next renewal
    clusters: tuple[str, ...] = ()
    reason: str = ""  # why it was (re)issued, or "" when the existing one was kept


def default_exec_command(dest: Path) -> tuple[str, tuple[str, ...]]:
    """``kubegate bot credentials --dest DIR``: the ``kubegate`` script next to this interpreter (the
    virtualenv's), else ``python -m kubegate`` with this interpreter."""
    args = ("bot", "credentials", "--dest", str(dest.resolve()))
    script = Path(sys.executable).parent / "kubegate"
    if script.is_file() and os.access(script, os.X_OK):
        return str(script), args
    return sys.executable, ("-m", "kubegate", *args)


def _split_identity_pem(data: bytes) -> tuple[bytes, bytes]:
    """``identity.pem`` → (certificate PEM, private key PEM)."""
    marker = b"-----BEGIN PRIVATE KEY-----"
    at = data.find(marker)
    if at < 0 or b"-----BEGIN CERTIFICATE-----" not in data[:at]:
        raise BotError("identity.pem must hold a certificate followed by a PKCS#8 private key")
    return data[:at], data[at:]


def read_identity(files: BotFiles) -> tuple[x509.Certificate, bytes, bytes] | None:
    try:
        cert_pem, key_pem = _split_identity_pem(files.identity.read_bytes())
        certificate = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (OSError, ValueError, TypeError, BotError):
        return None
    if not same_public_key(key.public_key(), certificate.public_key()):
        return None
    return certificate, cert_pem, key_pem


def _reissue_reason(
    current: tuple[x509.Certificate, bytes, bytes] | None,
    ca: CertificateAuthority,
    name: str,
    roles: Sequence[str],
    traits: Mapping[str, Sequence[str]],
    renew: timedelta,
    now: float,
) -> tuple[str, float]:
    """(why a new certificate is needed or "", when the current one is due)."""
    if current is None:
        return "no usable certificate in the destination", now
    certificate = current[0]
    try:
        certificate.verify_directly_issued_by(ca.certificate)
    except (ValueError, TypeError, InvalidSignature):
        return "the certificate is not from this CA", now
    try:
        identity = identity_from_certificate(certificate)
    except IdentityError as exc:
        return f"the certificate's identity is unreadable ({exc})", now
    if identity.user != bot_user(name) or identity.kind != "bot":
        return f"the certificate belongs to {identity.user!r}, not bot {name!r}", now
    if identity.roles != tuple(roles):
        return f"roles changed ({', '.join(identity.roles)} → {', '.join(roles)})", now
    if identity.traits != {k: tuple(v) for k, v in traits.items()}:
        return "traits changed", now
    issued_at = certificate.not_valid_before_utc + CLOCK_SKEW
    due = min((issued_at + renew).timestamp(), certificate.not_valid_after_utc.timestamp())
    if now >= due:
        return "renewal due", due
    return "", due


def renew_if_due(
    name: str,
    roles: Sequence[str],
    dest: str | os.PathLike[str],
    ttl: timedelta,
    renew: timedelta,
    ca: CertificateAuthority,
    clusters_provider: ClustersProvider,
    clock: Clock,
    *,
    server_url: str,
    traits: Mapping[str, Sequence[str]] | None = None,
    exec_command: tuple[str, Sequence[str]] | None = None,
) -> BotResult:
    """One step of the bot: renew the certificate if due (or unusable), then refresh the kubeconfigs."""
    if renew <= timedelta(0) or renew >= ttl:
        raise BotError(f"renew interval ({renew}) must be positive and shorter than the ttl ({ttl})")
    files = BotFiles(ensure_private_dir(dest))
    traits = dict(traits or {})
    now = clock()
    current = read_identity(files)
    reason, due = _reissue_reason(current, ca, name, roles, traits, renew, now)
    if reason:
        issued = ca.issue_user_certificate(bot_user(name), list(roles), ttl, traits=traits, kind="bot")
        assert issued.key_pem is not None
        cert_pem, key_pem, certificate = issued.cert_pem, issued.key_pem, issued.certificate
        write_identity(files, cert_pem, key_pem)
        due = (certificate.not_valid_before_utc + CLOCK_SKEW + renew).timestamp()
        log.info(
            "bot %s: issued certificate serial %x (%s), valid until %s",
            name,
            certificate.serial_number,
            reason,
            format_time(certificate.not_valid_after_utc),
        )
    else:
        assert current is not None
        certificate, cert_pem, key_pem = current
        if not files.cert.exists() or not files.key.exists():
            write_atomic(files.key, key_pem, 0o600)
            write_atomic(files.cert, cert_pem, 0o600)
    identity = identity_from_certificate(certificate)
    clusters = tuple(sorted(dict.fromkeys(clusters_provider(identity))))
    write_kubeconfigs(files, ca.cert_pem, server_url, clusters, bot_user(name), exec_command)
    return BotResult(
        renewed=bool(reason),
        serial=identity.serial,
        not_after=certificate.not_valid_after_utc,
        next_due=due,
        clusters=clusters,
        reason=reason,
    )


def write_identity(files: BotFiles, cert_pem: bytes, key_pem: bytes) -> None:
    """A new certificate and key: ``identity.pem`` first (one file: readers never pair it with the old
    key), then ``tls.key`` and ``tls.crt``."""
    write_atomic(files.identity, cert_pem + key_pem, 0o600)
    write_atomic(files.key, key_pem, 0o600)
    write_atomic(files.cert, cert_pem, 0o600)


def write_kubeconfigs(
    files: BotFiles,
    ca_pem: bytes,
    server_url: str,
    clusters: Sequence[str],
    user_name: str,
    exec_command: tuple[str, Sequence[str]] | None = None,
) -> None:
    """``ca.crt``, ``kubeconfig`` (certificate files) and ``kubeconfig-exec`` (exec plugin), each rewritten
    only when it changed."""
    _write_if_changed(files.ca, ca_pem)
    plain = build_kubeconfig(
        server_url,
        clusters,
        FileCredentials(str(files.identity.resolve()), str(files.identity.resolve())),
        ca_file=str(files.ca.resolve()),
        user_name=user_name,
    )
    command, args = exec_command or default_exec_command(files.dest)
    with_exec = build_kubeconfig(
        server_url, clusters, ExecCredentials(command, tuple(args)), ca_pem=ca_pem, user_name=user_name
    )
    _write_document_if_changed(files.kubeconfig, plain)
    _write_document_if_changed(files.kubeconfig_exec, with_exec)


def _write_if_changed(path: Path, data: bytes) -> None:
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    write_atomic(path, data, 0o600)


def _write_document_if_changed(path: Path, document: Mapping[str, Any]) -> None:
    try:
        if yaml.safe_load(path.read_text()) == document:
            return
    except (OSError, ValueError, yaml.YAMLError):
        pass
    write_kubeconfig_document(path, document)


@contextmanager
def exclusive_dest(files: BotFiles) -> Iterator[None]:
    fd = os.open(files.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BotError(f"another bot is already running for {files.dest}") from None
        yield
    finally:
        os.close(fd)


@dataclass
class _Waiter:
    stop: threading.Event = field(default_factory=threading.Event)

    def __call__(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True when asked to stop."""
        return self.stop.wait(seconds)


def run_bot(
    name: str,
    roles: Sequence[str],
    dest: str | os.PathLike[str],
    ttl: timedelta,
    renew: timedelta,
    ca: CertificateAuthority,
    clusters_provider: ClustersProvider,
    clock: Clock = time.time,
    *,
    server_url: str,
    traits: Mapping[str, Sequence[str]] | None = None,
    once: bool = False,
    wait: Callable[[float], bool] | None = None,
    exec_command: tuple[str, Sequence[str]] | None = None,
    on_result: Callable[[BotResult], None] | None = None,
    retry_after: float = 10.0,
) -> BotResult | None:
    """Keep ``dest`` fresh until ``wait`` says stop (``once``: one step, then return).

    ``wait(seconds) -> bool`` sleeps until the next renewal and returns True to stop (default: a
    ``threading.Event`` wait that never stops, i.e. run until the process is told to stop). A failing
    step (CA unreadable, disk full) is logged and retried after ``retry_after`` seconds; with ``once``
    it raises.
    """
    files = BotFiles(ensure_private_dir(dest))
    waiter = wait or _Waiter()
    result: BotResult | None = None
    with exclusive_dest(files):
        while True:
            try:
                result = renew_if_due(
                    name,
                    roles,
                    files.dest,
                    ttl,
                    renew,
                    ca,
                    clusters_provider,
                    clock,
                    server_url=server_url,
                    traits=traits,
                    exec_command=exec_command,
                )
            except BotError:
                raise
            except Exception as exc:  # keep the bot alive: the next attempt may succeed
                if once:
                    raise
                log.error("bot %s: renewal failed, retrying in %.0fs: %s", name, retry_after, exc)
                if waiter(retry_after):
                    return result
                continue
            if on_result is not None:
                on_result(result)
            if once:
                return result
            if waiter(max(result.next_due - clock(), 0.05)):
                return result


def bot_credentials(dest: str | os.PathLike[str], clock: Clock = time.time) -> dict[str, Any]:
    """The ``ExecCredential`` (client.authentication.k8s.io/v1) for the certificate currently in ``dest``.

    Raises ``BotError`` when there is no usable certificate or it has expired (kubectl then shows the
    message and fails instead of sending a dead certificate).
    """
    files = BotFiles(Path(dest))
    try:
        data = files.identity.read_bytes()
    except OSError as exc:
        raise BotError(
            f"no bot certificate in {files.dest}: {exc.strerror or exc} (is `kubegate bot start` running?)"
        ) from None
    cert_pem, key_pem = _split_identity_pem(data)
    try:
        certificate = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise BotError(f"{files.identity}: unreadable certificate: {exc}") from None
    now = datetime.fromtimestamp(clock(), tz=UTC)
    if now >= certificate.not_valid_after_utc:
        raise BotError(
            f"the bot certificate in {files.dest} expired at {format_time(certificate.not_valid_after_utc)} "
            "(is `kubegate bot start` running?)"
        )
    return {
        "apiVersion": EXEC_API_VERSION,
        "kind": "ExecCredential",
        "status": {
            "clientCertificateData": cert_pem.decode(),
            "clientKeyData": key_pem.decode(),
            "expirationTimestamp": format_time(certificate.not_valid_after_utc),
        },
    }


def credentials_json(dest: str | os.PathLike[str], clock: Clock = time.time) -> str:
    return json.dumps(bot_credentials(dest, clock), indent=2)
