"""``kubegate demo``: the embedded default — a sandbox cluster behind kubegate, ready for kubectl."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a sandbox cluster behind kubegate and print the kubectl line to try",
        description=(
            "Start the embedded sandbox Kubernetes API server (in this process), create a kubegate CA, a "
            "roles directory with demo roles (demo-admin: everything as group system:masters; viewer: "
            "read-only, no secrets), issue a demo user certificate, write a kubeconfig whose cluster "
            "'sandbox' is reached through kubegate, start the proxy and its metrics listener, and print "
            "the `kubectl --kubeconfig … get pods -A` line to paste. Runs until Ctrl-C, then stops and "
            "removes its temporary state (kept when --state is given)."
        ),
    )
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="a kubegate.yaml whose settings (limits, log, audit, …) the demo uses; the demo "
                             "still sets the state dir, listen addresses, roles and clusters itself")
    parser.add_argument("--state", metavar="DIR",
                        help="keep the demo state (CA, roles, kubeconfig, audit log) in DIR (default: temporary)")
    parser.add_argument("--port", type=int, default=0, metavar="N",
                        help="proxy port on 127.0.0.1 (default: a free port)")
    parser.add_argument("--metrics-port", type=int, default=0, metavar="N",
                        help="metrics/healthz/readyz port on 127.0.0.1 (default: a free port)")
    parser.add_argument("--user", default="demo", help="the demo user's name (default: demo)")
    parser.add_argument("--role", action="append", dest="roles", metavar="ROLE",
                        help="role(s) in the demo certificate: demo-admin (default) or viewer; repeatable")
    parser.add_argument("--no-sso", action="store_true",
                        help="do not start the demo OpenID provider (started when node and oidc-provider are "
                             "installed) for `kubegate login`")
    parser.set_defaults(func=run)


def kubectl_command() -> str:
    """The kubectl to suggest: the checkout's .tools/bin/kubectl when installed, else the one on PATH."""
    local = ROOT / ".tools" / "bin" / "kubectl"
    if local.exists():
        return str(local)
    return shutil.which("kubectl") or "kubectl"


def run(args: argparse.Namespace) -> int:
    from kubegate import logging as kglog
    from kubegate.app import (
        ProxyService,
        StartupError,
        certificate_expiry_collector,
        cluster_health_collector,
        prepare,
    )
    from kubegate.config import load_config, load_config_or_report
    from kubegate.demo import deep_merge, free_port, prepare_demo_state, viewer_binding
    from kubegate.workers import install_uvloop, serve_single

    extra: dict = {}
    if args.config:
        import yaml

        from kubegate.demo import without_owned

        if load_config_or_report(args.config) is None:  # every problem, naming the user's file
            return 1
        extra = without_owned(yaml.safe_load(Path(args.config).read_text()) or {})
    temporary = args.state is None
    state_dir = Path(args.state).resolve() if args.state else Path(tempfile.mkdtemp(prefix="kubegate-demo-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "kubegate.log"
    log_stream = open(log_path, "a", buffering=1)  # noqa: SIM115 - closed below
    kglog.configure("info", "json", log_stream)
    roles = tuple(args.roles or ("demo-admin",))
    try:
        from sandbox.testing import running_sandbox

        print("starting the sandbox cluster …", flush=True)
        with running_sandbox(state_dir / "sandbox") as sb, demo_provider(state_dir, args.no_sso) as provider:
            sb.store.put_object("rbac.authorization.k8s.io", "clusterrolebindings", viewer_binding())
            if provider is not None:
                extra = deep_merge(extra, {"auth": {"connectors": [demo_connector(provider.issuer)]}})
            state = prepare_demo_state(
                state_dir, sb.admin_kubeconfig, proxy_port=args.port or free_port(),
                metrics_port=args.metrics_port or free_port(), user=args.user, roles=roles,
                extra_config=extra)
            cfg = load_config(str(state.config_path))
            kglog.configure(cfg.log.level, cfg.log.format, log_stream)
            collectors = [certificate_expiry_collector(prepare(cfg)), cluster_health_collector(cfg)]

            def on_ready(service: object, metrics: object) -> None:
                kubectl = kubectl_command()
                print(f"""
kubegate is running: https://127.0.0.1:{state.proxy_port} → cluster '{state.cluster_name}' (sandbox at {sb.url})
  user {args.user!r} with roles {', '.join(roles)}; state in {state_dir}{' (temporary)' if temporary else ''}
  metrics: http://127.0.0.1:{state.metrics_port}/metrics   logs: {log_path}   audit: {cfg.audit_log_file}

Try it (in another terminal):

  {shlex.quote(kubectl)} --kubeconfig {shlex.quote(str(state.kubeconfig_path))} get pods -A

  Note: the sandbox has no containers. `kubectl exec` and `attach` run the command as a real process
  on THIS machine, as you, in the pod's directory under {sb.state_dir / "pods"}

""" + sign_in_help(state, provider, state_dir) + """
Press Ctrl-C to stop.""", flush=True)

            install_uvloop()

            async def main() -> None:
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                await serve_single(cfg, ProxyService.factory, stop, on_ready, collectors)

            asyncio.run(main())
            print("\nstopping …", flush=True)
    except KeyboardInterrupt:  # Ctrl-C before the proxy took over the signals (still starting)
        print("\ninterrupted while starting", file=sys.stderr, flush=True)
        return 130
    except (OSError, StartupError) as exc:  # e.g. --port already in use
        print(f"kubegate demo: cannot start: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        log_stream.close()
        if temporary:
            shutil.rmtree(state_dir, ignore_errors=True)
    print("stopped" + ("" if temporary else f"; state kept in {state_dir}"), flush=True)
    return 0


@contextlib.contextmanager
def demo_provider(state_dir: Path, disabled: bool) -> Iterator[Any]:
    """The demo OpenID provider (sandbox.oidc_provider) when it can run here, else None."""
    from sandbox.oidc_provider import provider_available, running_provider

    if disabled or provider_available() is not None:
        yield None
        return
    print("starting the demo OpenID provider …", flush=True)
    with running_provider(state_dir / "oidc-provider") as provider:
        yield provider


def demo_connector(issuer: str) -> dict[str, Any]:
    """The demo's OIDC connector: group admins → demo-admin, devs → viewer; groups become
    kubernetes_groups."""
    from sandbox.oidc_provider import CLIENT_ID

    return {"name": "demo-oidc", "type": "oidc", "display": "demo OpenID provider (oidc-provider)",
            "issuer_url": issuer, "client_id": CLIENT_ID, "scopes": ["openid", "email", "groups"],
            "claims_to_roles": [{"claim": "groups", "value": "admins", "roles": ["demo-admin"]},
                                {"claim": "groups", "value": "devs", "roles": ["viewer"]}],
            "claims_to_traits": {"kubernetes_groups": "groups"}}


def sign_in_help(state: Any, provider: Any, state_dir: Path) -> str:
    """The "sign in as a person" lines of the demo banner."""
    from certs.ca import load_certificate_file
    from certs.issuance import ca_pin
    from sandbox.oidc_provider import DEMO_USERS, provider_available

    if provider is None:
        why = provider_available() or "--no-sso"
        return f"(Sign-in with `kubegate login` is not shown: {why}; install node and npm, then rerun setup.)\n"
    pin = ca_pin(load_certificate_file(state.ca_file))
    home, kubeconfig = state_dir / "home", state_dir / "sso.kubeconfig"
    kubegate = shlex.quote(str(Path(sys.executable).parent / "kubegate"))
    users = ", ".join(f"{name} ({', '.join(u['groups'])})" for name, u in DEMO_USERS.items())
    return f"""
Or sign in as a person through the demo OpenID provider at {provider.issuer}
(users: {users}; any password). In another terminal:

  export KUBEGATE_HOME={shlex.quote(str(home))} KUBECONFIG={shlex.quote(str(kubeconfig))}
  {kubegate} login --proxy 127.0.0.1:{state.proxy_port} --ca-pin {pin}
  {kubegate} kube ls
  {kubegate} kube login {state.cluster_name}
  {shlex.quote(kubectl_command())} get pods -A
"""
