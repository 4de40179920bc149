"""``kubegate ca``: the certificate authority (``ca init``, ``ca show``).

Also home of the small helpers the other certificate commands share (``users``, ``kubeconfig``, ``bot``):
config loading, duration / role / trait arguments, opening the CA and the role set.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from certs.ca import CAError, CertificateAuthority, server_hosts
from certs.locks import format_time
from certs.paths import StatePaths
from kubegate.config import Config, ConfigError, load_config, parse_duration
from rbac.roles import RoleError, RoleSet, load_roles_dir

__all__ = [
    "CommandError",
    "register",
    "add_config_argument",
    "load_cfg",
    "duration_argument",
    "roles_argument",
    "parse_traits",
    "open_ca",
    "load_roles",
    "report_errors",
]


class CommandError(Exception):
    """A user-facing failure: printed as ``kubegate: error: <message>``, exit status 1."""


# ------------------------------------------------------------------------------------------ shared helpers
def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="kubegate config file (YAML); default: built-in defaults with state_dir ./state",
    )


def load_cfg(args: argparse.Namespace) -> Config:
    try:
        return load_config(getattr(args, "config", None))
    except ConfigError as exc:
        raise CommandError("invalid configuration:\n  " + "\n  ".join(exc.problems)) from None


def duration_argument(text: str) -> timedelta:
    """argparse type: ``8h``, ``20m``, ``1h30m`` → timedelta (must be positive)."""
    if text.strip().startswith("-"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive duration (e.g. 30m, 8h)")
    try:
        seconds = parse_duration(text)
    except Exception as exc:  # kubegate.config raises its own private error type
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be longer than 0")
    return timedelta(seconds=seconds)


def roles_argument(text: str) -> list[str]:
    """argparse type: ``dev-access,viewer`` → ["dev-access", "viewer"] (no empty names, no duplicates)."""
    names = [part.strip() for part in text.split(",")]
    if any(not name for name in names):
        raise argparse.ArgumentTypeError(f"{text!r}: role names are comma separated and non-empty")
    return list(dict.fromkeys(names))


def parse_traits(values: list[str] | None) -> dict[str, list[str]]:
    """``["kubernetes_groups=a,b", "logins=root"]`` → ``{"kubernetes_groups": ["a", "b"], "logins": ["root"]}``.

    A trait given twice accumulates its values; ``k=`` gives the trait an empty list.
    """
    traits: dict[str, list[str]] = {}
    for item in values or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CommandError(f"--traits {item!r}: expected NAME=VALUE[,VALUE...]")
        bucket = traits.setdefault(key, [])
        bucket.extend(v.strip() for v in raw.split(",") if v.strip())
    return traits


def open_ca(cfg: Config) -> CertificateAuthority:
    try:
        return CertificateAuthority.load(cfg.ca_dir)
    except CAError as exc:
        raise CommandError(str(exc)) from None


def load_roles(cfg: Config) -> RoleSet:
    """The roles of ``auth.roles_dir``; each refused role file is named on stderr (file, role, key)
    and the others' roles are used."""
    if cfg.backend.type == "etcd":  # roles live in the shared backend (kubegate roles apply)
        from backend.base import BackendError
        from kubegate.shared import open_backend
        from kubegate.shared_roles import SharedRoles

        try:
            return SharedRoles(open_backend(cfg), watch=False).current()
        except BackendError as exc:
            raise CommandError(f"cannot load roles from the shared backend: {exc}") from None
    try:
        roles = load_roles_dir(cfg.auth.roles_dir)
    except RoleError as exc:
        raise CommandError(f"cannot load roles (auth.roles_dir): {exc}") from None
    for exc in roles.refused.values():
        print(f"kubegate: warning: role file refused, its roles are not available: {exc}", file=sys.stderr)
    return roles


def report_errors(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Decorator for command functions: ``CommandError`` → message on stderr, exit status 1."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return int(run(args) or 0)
        except CommandError as exc:
            print(f"kubegate: error: {exc}", file=sys.stderr)
            return 1

    return wrapper


# ------------------------------------------------------------------------------------------------ ca
def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ca",
        help="create and inspect kubegate's certificate authority",
        description=(
            "kubegate's certificate authority (an EC P-256 key in <state_dir>/ca/) signs the client "
            "certificates of users and bots and the proxy's own serving certificate."
        ),
    )
    sub = parser.add_subparsers(dest="ca_command", metavar="SUBCOMMAND")
    sub.required = True
    init = sub.add_parser(
        "init",
        help="create the CA and the proxy's serving certificate (idempotent)",
        description=(
            "Create the CA in <state_dir>/ca/ (ca.pem, and ca-key.pem with mode 0600) unless it exists, "
            "then make sure the proxy's serving certificate <state_dir>/ca/server.pem (key server-key.pem) "
            "exists, is signed by this CA and names every host clients use: proxy.public_addr, "
            "proxy.listen (unless 0.0.0.0/::), localhost, 127.0.0.1 and ::1. It is re-issued when a "
            "host is missing or it expires within 30 days; skipped when proxy.tls.cert_file is set. "
            "Prints the paths and the CA's SHA-256 fingerprint. Running it again changes nothing."
        ),
    )
    add_config_argument(init)
    init.set_defaults(func=report_errors(run_init))
    show = sub.add_parser(
        "show",
        help="print the CA's paths, subject, expiry and fingerprint",
        description="Print where the CA lives, its subject, validity and SHA-256 fingerprint.",
    )
    add_config_argument(show)
    show.add_argument("--pem", action="store_true", help="print the CA certificate (PEM) instead")
    show.set_defaults(func=report_errors(run_show))


def run_init(args: argparse.Namespace) -> int:
    cfg = load_cfg(args)
    paths = StatePaths.of(cfg.state_dir)
    try:
        ca, created = CertificateAuthority.load_or_create(paths.ca_dir)
    except (CAError, OSError) as exc:
        raise CommandError(f"cannot create the CA in {paths.ca_dir}: {exc}") from None
    print(f"CA certificate:   {ca.cert_path}  ({'created' if created else 'already present'})")
    print(f"CA private key:   {ca.key_path}  (mode 0600)")
    print(f"CA fingerprint:   SHA256 {ca.fingerprint_sha256}")
    if cfg.proxy.tls.cert_file:
        print(
            f"serving cert:     {cfg.proxy.tls.cert_file}  (proxy.tls.cert_file is set: not managed by kubegate)"
        )
        return 0
    hosts = server_hosts([cfg.proxy.public_address], str(cfg.proxy.listen))
    cert_path, key_path, issued = ca.ensure_server_certificate(hosts)
    state = "issued" if issued else "up to date"
    print(f"serving cert:     {cert_path}  ({state}; hosts: {', '.join(hosts)})")
    print(f"serving key:      {key_path}  (mode 0600)")
    return 0


def run_show(args: argparse.Namespace) -> int:
    cfg = load_cfg(args)
    ca = open_ca(cfg)
    if args.pem:
        sys.stdout.write(ca.cert_pem.decode())
        return 0
    cert = ca.certificate
    print(f"CA certificate:   {ca.cert_path}")
    print(f"subject:          {cert.subject.rfc4514_string()}")
    print(
        f"valid:            {format_time(cert.not_valid_before_utc)} .. {format_time(cert.not_valid_after_utc)}"
    )
    print(f"fingerprint:      SHA256 {ca.fingerprint_sha256}")
    server = Path(StatePaths.of(cfg.state_dir).server_cert)
    print(f"serving cert:     {server if server.exists() else '(none: run kubegate ca init)'}")
    return 0
