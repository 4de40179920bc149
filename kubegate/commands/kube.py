"""``kubegate kube ls | login | credentials``: the clusters your roles can see, kubeconfig contexts for
them, and the exec credential plugin those contexts call."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta

from kubegate.client.profile import Profile
from kubegate.commands.ca import CommandError, report_errors

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("kube", help="clusters you can reach through kubegate; kubectl contexts")
    sub = parser.add_subparsers(dest="kube_command", metavar="SUBCOMMAND")
    sub.required = True
    ls = sub.add_parser("ls", help="the clusters your roles can see, with their labels")
    ls.add_argument("--proxy", metavar="HOST:PORT", help="default: the last proxy signed in to")
    ls.add_argument("--format", choices=("text", "json"), default="text")
    ls.set_defaults(func=report_errors(run_ls))
    login = sub.add_parser(
        "login", help="add or update a kubectl context for a cluster ($KUBECONFIG or ~/.kube/config)",
        description="Adds (or updates) the cluster, its context <proxy host>-<cluster> and one user entry "
        "(an exec plugin reading your kubegate identity) to $KUBECONFIG's first file or ~/.kube/config, "
        "leaving every other entry as it was, and makes the context current.")
    login.add_argument("cluster", nargs="?", help="cluster name (see kubegate kube ls)")
    login.add_argument("--all", action="store_true", help="a context for every cluster you can see")
    login.add_argument("--proxy", metavar="HOST:PORT", help="default: the last proxy signed in to")
    login.set_defaults(func=report_errors(run_login))
    cred = sub.add_parser("credentials", help="print an ExecCredential with your certificate (kubectl calls this)")
    cred.add_argument("--proxy", metavar="HOST:PORT", required=True)
    cred.set_defaults(func=report_errors(run_credentials))


def _signed_in(proxy: str | None) -> Profile:
    from kubegate.client.profile import load_profile

    profile = load_profile(proxy)
    if profile is None:
        raise CommandError("not signed in: run kubegate login --proxy HOST:PORT")
    if profile.expired():
        raise CommandError(f"your certificate expired at {profile.expires}; run kubegate login")
    return profile


def _clusters(profile: Profile) -> list[dict[str, object]]:
    from kubegate.client.api import AuthClient, ClientError

    try:
        client = AuthClient(profile.proxy, profile.server_ca, (profile.cert_pem, profile.key_pem))
        return client.get("clusters")
    except ClientError as exc:
        raise CommandError(str(exc)) from None


def run_ls(args: argparse.Namespace) -> int:
    clusters = _clusters(_signed_in(args.proxy))
    if args.format == "json":
        print(json.dumps(clusters, indent=2))
        return 0
    if not clusters:
        print("no clusters: your roles see none")
        return 0
    width = max(len("CLUSTER"), *(len(str(c["name"])) for c in clusters))
    print(f"{'CLUSTER':<{width}}  LABELS")
    for cluster in clusters:
        labels = ",".join(f"{k}={v}" for k, v in sorted(dict(cluster["labels"]).items()))
        print(f"{cluster['name']!s:<{width}}  {labels}")
    return 0


def run_login(args: argparse.Namespace) -> int:
    from kubegate.client.kubeconfig import kubeconfig_path, merge_contexts

    if bool(args.cluster) == bool(args.all):
        raise CommandError("name one CLUSTER, or give --all")
    profile = _signed_in(args.proxy)
    visible = [str(c["name"]) for c in _clusters(profile)]
    if args.cluster and args.cluster not in visible:
        raise CommandError(f"cluster {args.cluster!r} not found (yours: {', '.join(visible) or 'none'})")
    chosen = visible if args.all else [args.cluster]
    path = kubeconfig_path()
    try:
        names = merge_contexts(path, profile.proxy, chosen, profile.server_ca,
                               current=args.cluster or (chosen[0] if chosen else None))
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot update {path}: {exc}") from None
    for name in names:
        print(f"context {name} in {path}")
    if names:
        print(f"switched to context {names[0] if args.all else names[-1]}")
    return 0


def run_credentials(args: argparse.Namespace) -> int:
    import os

    from kubegate.client.kubeconfig import EXEC_API_VERSION
    from kubegate.client.profile import load_profile

    profile = load_profile(args.proxy)
    if profile is None:
        raise CommandError(f"not signed in to {args.proxy}: run kubegate login --proxy {args.proxy}")
    now = datetime.now(UTC)
    if profile.not_after - now < timedelta(minutes=1) and sys.stdin.isatty():
        from kubegate.commands.login import sign_in

        print(f"kubegate: your certificate expired at {profile.expires}; signing in again", file=sys.stderr)
        profile = sign_in(args.proxy, profile.connector or None, None, headless=False, open_browser=True)
    status: dict[str, str] = {"clientCertificateData": profile.cert_pem.decode(),
                              "clientKeyData": profile.key_pem.decode()}
    if not profile.expired():
        status["expirationTimestamp"] = profile.expires
    else:
        # Non-interactive: hand over the expired certificate anyway; the proxy answers 401 with "your
        # certificate expired at …; run kubegate login", which kubectl prints.
        print(f"kubegate: your certificate expired at {profile.expires}; run kubegate login",
              file=sys.stderr)
    try:
        version = json.loads(os.environ.get("KUBERNETES_EXEC_INFO") or "{}").get("apiVersion") or EXEC_API_VERSION
    except ValueError:
        version = EXEC_API_VERSION
    print(json.dumps({"apiVersion": version, "kind": "ExecCredential", "status": status}))
    return 0
