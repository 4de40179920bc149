"""``kubegate kubeconfig``: a kubeconfig with one context per cluster the identity's roles can see.

The cluster list comes from the config's cluster sources (``configured_clusters``): the contexts of
``kubernetes_service.kubeconfig_files``, the kube_cluster resources in ``kubernetes_service.clusters_dir``
and the persisted registry (``<state_dir>/clusters``, clusters added with the CLI or found by cloud
discovery), restricted to those this proxy serves (``kubernetes_service.resources``), then filtered by
the identity's roles (``certs.access.visible_clusters``). Dynamic labels count with the values the running
proxy last recorded (``<state_dir>/clusters/dynamic_labels.state``); before it has run them, a role that
needs one to see a cluster does not get its context.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certs.access import NamedCluster, visible_clusters
from certs.ca import CertificateAuthority, CertificateVerificationError, same_public_key, verify_client_chain
from certs.identity import IdentityError, identity_from_certificate
from certs.kubeconfig import EmbeddedCredentials, build_kubeconfig, write_kubeconfig_document
from certs.locks import format_time
from kubegate.commands.ca import (
    CommandError,
    add_config_argument,
    load_cfg,
    load_roles,
    open_ca,
    parse_traits,
    report_errors,
)
from kubegate.commands.users import add_identity_arguments, issue_for
from kubegate.config import Config
from rbac.identity import Identity
from rbac.roles import RoleSet

__all__ = ["register", "configured_clusters", "kubeconfig_document"]

log = logging.getLogger(__name__)


def configured_clusters(cfg: Config) -> tuple[list[NamedCluster], list[str]]:
    """(clusters this proxy serves per the config's sources, problems found reading them): the view of
    ``kubegate clusters ls``; unreadable sources are reported, never fatal."""
    from kubegate.commands.clusters import served_clusters

    clusters, problems = served_clusters(cfg)
    return [NamedCluster(c.name, dict(c.labels)) for c in clusters], problems


def kubeconfig_document(
    identity: Identity,
    roles: RoleSet,
    clusters: Iterable[NamedCluster],
    server_url: str,
    ca_pem: bytes,
    cert_pem: bytes,
    key_pem: bytes,
    current: str | None = None,
) -> dict:
    """The kubeconfig for ``identity``: contexts = the clusters its roles can see (CommandError if none)."""
    names = visible_clusters(identity, roles, clusters)
    if not names:
        pinned = f" (certificate pinned to {identity.pinned_cluster!r})" if identity.pinned_cluster else ""
        raise CommandError(
            f"no cluster is visible to {identity.user!r} with roles {', '.join(identity.roles) or '(none)'}{pinned}"
        )
    if current is not None and current not in names:
        raise CommandError(f"--context {current!r} is not among the visible clusters: {', '.join(names)}")
    return build_kubeconfig(
        server_url,
        names,
        EmbeddedCredentials(cert_pem, key_pem),
        ca_pem=ca_pem,
        user_name=identity.user,
        current=current,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "kubeconfig",
        help="write a kubeconfig for a user (new certificate) or for an existing certificate",
        description=(
            "Write a kubeconfig with one context per cluster the identity's roles can see (context and "
            "cluster entries are named after the kubegate cluster; server "
            "https://<proxy.public_addr>/k8s/clusters/<cluster>), all sharing one embedded client "
            "certificate and the kubegate CA. With --user a new certificate is issued (like `users "
            "issue`); with --cert/--key an existing certificate is used and its roles decide the "
            "contexts. The file is written atomically with mode 0600."
        ),
    )
    add_config_argument(parser)
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", help="issue a new certificate for this user (needs --roles)")
    who.add_argument(
        "--cert", metavar="FILE", help="use this existing certificate (PEM) issued by the kubegate CA"
    )
    parser.add_argument("--key", metavar="FILE", help="private key (PEM) of --cert")
    add_identity_arguments(parser, roles_required=False)
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="where to write the kubeconfig (default: ./<user>.kubeconfig; '-' prints it)",
    )
    parser.add_argument(
        "--context", metavar="CLUSTER", help="current context (default: first cluster by name)"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="one certificate per cluster, each pinned to its cluster (a user entry <user>@<cluster> per "
        "context): a pinned certificate also reaches its cluster without the /k8s/clusters/<name> prefix, "
        "which clients that drop the server URL's path need (kubectl 1.20 `get --raw /api/...`); with --user",
    )
    parser.add_argument(
        "--proxy-addr",
        metavar="HOST:PORT",
        help="address clients use to reach the proxy (default: proxy.public_addr, else the listen address)",
    )
    parser.set_defaults(func=report_errors(run_kubeconfig))


def _existing(
    ca: CertificateAuthority, cert_file: str, key_file: str | None
) -> tuple[Identity, bytes, bytes]:
    if not key_file:
        raise CommandError("--cert needs --key")
    try:
        cert_pem = Path(cert_file).read_bytes()
        key_pem = Path(key_file).read_bytes()
        certificate = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise CommandError(f"cannot read --cert/--key: {exc}") from None
    if not same_public_key(key.public_key(), certificate.public_key()):
        raise CommandError(f"{key_file} is not the private key of {cert_file}")
    try:
        verify_client_chain(certificate, ca)
        identity = identity_from_certificate(certificate)
    except (CertificateVerificationError, IdentityError) as exc:
        raise CommandError(f"{cert_file}: {exc}") from None
    return identity, cert_pem, key_pem


def _pinned_document(args: argparse.Namespace, cfg: Config, ca: CertificateAuthority) -> tuple[dict, list[Identity]]:
    """``--pin``: the kubeconfig with one certificate per visible cluster, each pinned to it."""
    if not args.user:
        raise CommandError("--pin issues new certificates: it needs --user (and --roles)")
    if args.cluster:
        raise CommandError("--pin gives every cluster its own pinned certificate; --cluster pins one: choose one")
    if not args.roles:
        raise CommandError("--user needs --roles (kubegate keeps no user database)")
    traits = parse_traits(args.traits)
    wanted = Identity(user=args.user, roles=tuple(args.roles), traits={k: tuple(v) for k, v in traits.items()})
    clusters, problems = configured_clusters(cfg)
    for problem in problems:
        print(f"kubegate: warning: {problem}", file=sys.stderr)
    names = visible_clusters(wanted, load_roles(cfg), clusters)
    if not names:
        raise CommandError(f"no cluster is visible to {args.user!r} with roles {', '.join(args.roles)}")
    if args.context is not None and args.context not in names:
        raise CommandError(f"--context {args.context!r} is not among the visible clusters: {', '.join(names)}")
    credentials: dict[str, EmbeddedCredentials] = {}
    identities = []
    for name in names:
        issued = issue_for(cfg, ca, args.user, args.roles, args.ttl, traits, name)
        assert issued.key_pem is not None
        credentials[name] = EmbeddedCredentials(issued.cert_pem, issued.key_pem)
        identities.append(identity_from_certificate(issued.certificate))
    document = build_kubeconfig(args.proxy_addr or cfg.proxy.public_address, names, credentials,
                                ca_pem=ca.cert_pem, user_name=args.user, current=args.context)
    return document, identities


def run_kubeconfig(args: argparse.Namespace) -> int:
    cfg = load_cfg(args)
    ca = open_ca(cfg)
    if args.pin:
        document, identities = _pinned_document(args, cfg, ca)
        _write(args, document, args.user)
        for identity in identities:
            expires = format_time(identity.not_after) if identity.not_after else "?"
            print(f"context {identity.pinned_cluster}: user {identity.user} (serial {identity.serial}, pinned, "
                  f"expires {expires})", file=sys.stderr if args.out == "-" else sys.stdout)
        return 0
    if args.user:
        if not args.roles:
            raise CommandError("--user needs --roles (kubegate keeps no user database)")
        issued = issue_for(cfg, ca, args.user, args.roles, args.ttl, parse_traits(args.traits), args.cluster)
        assert issued.key_pem is not None
        identity = identity_from_certificate(issued.certificate)
        cert_pem, key_pem = issued.cert_pem, issued.key_pem
    else:
        if args.roles or args.traits or args.cluster:
            raise CommandError(
                "--roles/--traits/--cluster apply to a new certificate (--user), not to --cert"
            )
        identity, cert_pem, key_pem = _existing(ca, args.cert, args.key)
    roles = load_roles(cfg)
    clusters, problems = configured_clusters(cfg)
    for problem in problems:
        print(f"kubegate: warning: {problem}", file=sys.stderr)
    document = kubeconfig_document(
        identity,
        roles,
        clusters,
        args.proxy_addr or cfg.proxy.public_address,
        ca.cert_pem,
        cert_pem,
        key_pem,
        current=args.context,
    )
    contexts = [c["name"] for c in document["contexts"]]
    _write(args, document, identity.user)
    expires = format_time(identity.not_after) if identity.not_after else "?"
    print(
        f"user {identity.user} (serial {identity.serial}, expires {expires}); contexts: {', '.join(contexts)}; "
        f"current: {document['current-context']}",
        file=sys.stderr if args.out == "-" else sys.stdout,
    )
    return 0


def _write(args: argparse.Namespace, document: dict, user: str) -> None:
    if args.out == "-":
        sys.stdout.write(yaml.safe_dump(document, sort_keys=False))
    else:
        out = Path(args.out or f"{user}.kubeconfig")
        write_kubeconfig_document(out, document)
        print(f"kubeconfig: {out}")
