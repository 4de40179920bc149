"""``kubegate start``: run the proxy (and its metrics listener) from a config file."""

from __future__ import annotations

import argparse
import sys

from kubegate.config import load_config_or_report


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "start",
        help="run the proxy from a config file",
        description=(
            "Run kubegate: the mTLS proxy on proxy.listen and the plain-HTTP /metrics, /healthz and /readyz "
            "listener on metrics.listen. Clusters come from kubernetes_service.kubeconfig_files (each "
            "context is a cluster), kube_cluster resources and discovery; roles from auth.roles_dir. The "
            "first start creates the kubegate CA in <state_dir>/ca and a serving certificate for "
            "proxy.public_addr unless proxy.tls names one; before that, every path and port is checked "
            "(as `kubegate config check` does) and nothing is created while any problem remains. With --workers N > 1 a supervisor runs N worker "
            "processes sharing the port (SO_REUSEPORT) and restarts any that crash. SIGTERM or Ctrl-C: stop "
            "accepting, let in-flight requests finish within proxy.limits.shutdown_grace, exit 0."
        ),
    )
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="kubegate.yaml (default: built-in defaults, state in ./state)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="worker processes (default: proxy.workers from the config)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = load_config_or_report(args.config)
    if cfg is None:
        return 1
    workers = args.workers if args.workers is not None else cfg.proxy.workers
    if workers < 1:
        print("--workers: must be at least 1", file=sys.stderr)
        return 1
    return start(cfg, args.config, workers)


def start(cfg: object, config_path: str | None, workers: int) -> int:
    from kubegate import logging as kglog
    from kubegate.app import (
        ProxyService,
        StartupError,
        certificate_expiry_collector,
        cluster_health_collector,
        load_roles,
        prepare,
    )
    from kubegate.config import Config
    from kubegate.preflight import preflight
    from kubegate.shared import open_backend
    from kubegate.workers import run_single, run_supervisor

    assert isinstance(cfg, Config)
    kglog.configure(cfg.log.level, cfg.log.format)
    problems = preflight(cfg)  # every path and port, before anything is created
    if problems:
        print("kubegate: cannot start:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    try:
        backend = open_backend(cfg)
        tls = prepare(cfg, backend)  # once, before any worker: CA, serving certificate, state directory
        if backend is None:
            load_roles(cfg)  # fail fast (before any worker starts) on a broken roles directory
        collectors = [certificate_expiry_collector(tls), cluster_health_collector(cfg)]
        if workers == 1:
            return run_single(cfg, ProxyService.factory, collectors)
        return run_supervisor(cfg, config_path, workers, collectors)
    except StartupError as exc:
        print(f"kubegate: cannot start: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"kubegate: cannot start: {exc}", file=sys.stderr)
        return 1
