"""``kubegate clusters add -f FILE | ls | show NAME | rm NAME``: the clusters a proxy serves.

``add`` validates ``kube_cluster`` resources (Teleport format) and stores them in
``<state_dir>/clusters/`` (atomic writes); a running proxy picks the change up within its watch interval
(about a second) without a restart, and ``rm`` removes a cluster the same way (its in-flight streams end
with a Status). ``ls``/``show`` list every cluster from every source — kubeconfig files, the clusters
directory, the store (CLI-added and cloud-discovered) — with labels, origin, whether this proxy's
``kubernetes_service.resources`` select it, and the health and dynamic label values the running proxy
last recorded (a dynamic label it has not run yet shows as ``key=?``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from dataclasses import dataclass, field
from typing import Any

from discovery.errors import DiscoveryError
from discovery.kube_cluster import ORIGIN as KUBE_CLUSTER
from discovery.kube_cluster import ClustersDirScanner, KubeClusterResource, load_resource_file
from discovery.kubeconfig import kubeconfig_clusters_with_errors, kubeconfig_files_collisions
from discovery.model import Cluster
from discovery.registry import ClusterRegistry
from discovery.store import ClusterStore, read_dynamic_labels, read_health
from kubegate.config import load_config_or_report


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "clusters",
        help="add, list, show and remove clusters",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    sub = parser.add_subparsers(dest="clusters_command", metavar="SUBCOMMAND")
    sub.required = True

    add = sub.add_parser("add", help="add or update kube_cluster resources from a YAML file")
    add.add_argument("-f", "--file", required=True, metavar="FILE", help="kube_cluster resource(s), YAML")
    add.set_defaults(func=run_add)

    ls = sub.add_parser(
        "ls",
        help="list clusters with labels, origin and health",
        description="List every cluster of every source with labels, origin, health and whether this "
        "proxy serves it. With --user and --roles (or --cert), only the served clusters that identity's "
        "roles can see: the contexts its kubeconfig gets.",
    )
    ls.add_argument("-o", "--output", choices=("table", "json"), default="table")
    who = ls.add_mutually_exclusive_group()
    who.add_argument("--user", help="show only what this user can reach (with --roles)")
    who.add_argument("--cert", metavar="FILE", help="show only what this kubegate certificate can reach")
    ls.add_argument("--roles", default="", help="comma-separated kubegate roles of --user")
    ls.add_argument("--traits", action="append", default=[], metavar="KEY=V1,V2",
                    help="traits of --user (repeatable), as for `users issue`")
    ls.set_defaults(func=run_ls)

    show = sub.add_parser("show", help="show one cluster (never its credentials)")
    show.add_argument("name")
    show.set_defaults(func=run_show)

    rm = sub.add_parser("rm", help="remove a cluster added with 'clusters add'")
    rm.add_argument("name")
    rm.add_argument("--force", action="store_true",
                    help="also remove a cloud-discovered cluster (the next discovery run re-creates it if "
                         "it still exists)")
    rm.set_defaults(func=run_rm)

    setup = sub.add_parser(
        "setup",
        help="print (or --apply) the Kubernetes RBAC a cluster needs for kubegate",
        description="Print the RBAC objects cluster NAME needs: a ClusterRole and ClusterRoleBinding "
        "kubegate-impersonator for kubegate's own upstream identity (impersonate users, groups and service "
        "accounts; get pods; create self access/rules reviews), found with a SelfSubjectReview (or the "
        "client certificate's CN), and, for every kubegate role that can see the cluster, Roles/ClusterRoles "
        "and bindings that let the groups and users it impersonates do what the role allows (the cluster's "
        "own RBAC still applies to them). With --apply they are applied with kubectl and the operator's own "
        "kubeconfig (--kubeconfig/--context, default kubectl's). Notes on what RBAC cannot express go to "
        "the output as comments (stderr with --apply).",
    )
    setup.add_argument("name", metavar="NAME", help="the cluster (as `clusters ls` names it)")
    setup.add_argument("--apply", action="store_true", help="apply with `kubectl apply -f -`")
    setup.add_argument("--kubeconfig", metavar="FILE", help="--apply: the operator's kubeconfig (for kubectl)")
    setup.add_argument("--context", metavar="NAME", help="--apply: the context in --kubeconfig")
    setup.add_argument("--kubectl", metavar="PATH", default="kubectl", help="--apply: kubectl to run")
    setup.add_argument("--upstream-user", metavar="USER",
                       help="the user kubegate's credentials authenticate as (default: asked from the cluster)")
    setup.add_argument("--traits", action="append", default=[], metavar="KEY=V1,V2",
                       help="trait values to expand role templates such as {{internal.kubernetes_groups}} "
                       "(repeatable); without them templated groups are not bound")
    setup.set_defaults(func=run_setup)

    for p in (add, ls, show, rm, setup):
        p.add_argument("-c", "--config", metavar="FILE", help="kubegate.yaml (default: built-in defaults)")


def _config(args: argparse.Namespace) -> Any:
    return load_config_or_report(args.config)


def _store(cfg: Any) -> Any:
    """The file store, or the shared one with ``backend.type: etcd`` (kubegate.shared)."""
    from kubegate.shared import cluster_store

    return cluster_store(cfg)


def run_add(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if cfg is None:
        return 1
    try:
        resources = load_resource_file(args.file)
        for resource in resources:  # validate everything before storing anything
            resource.to_cluster(args.file)
    except DiscoveryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    store = _store(cfg)
    for resource in resources:
        existing = _existing(store, resource.name)
        if existing is not None and existing.origin != KUBE_CLUSTER:
            print(f"error: cluster {resource.name!r} exists with origin {existing.origin}; not replaced",
                  file=sys.stderr)
            return 1
    for resource in resources:
        verb = "updated" if _existing(store, resource.name) is not None else "added"
        store.put(resource.to_record())
        print(f"cluster {resource.name} {verb}")
    return 0


def _existing(store: ClusterStore, name: str) -> Any:
    try:
        return store.get(name)
    except DiscoveryError:
        return None


def run_rm(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if cfg is None:
        return 1
    store = _store(cfg)
    try:
        record = store.get(args.name)
    except DiscoveryError as exc:  # unreadable record: remove it anyway
        print(f"warning: {exc}", file=sys.stderr)
        record = None
        if isinstance(store, ClusterStore) and not store.path_for(args.name).exists():
            return 1
    else:
        if record is None:
            view = _collect(cfg)
            entry = view.entries.get(args.name)
            if entry is not None:
                print(f"error: cluster {args.name!r} is defined in {entry.source}; remove it there",
                      file=sys.stderr)
            else:
                print(f"error: no cluster named {args.name!r}", file=sys.stderr)
            return 1
        if record.origin != KUBE_CLUSTER and not args.force:
            print(f"error: cluster {args.name!r} was discovered ({record.origin}, group "
                  f"{record.discovery_group or '-'}); use --force to remove it anyway", file=sys.stderr)
            return 1
    store.delete(args.name)
    print(f"cluster {args.name} removed")
    return 0


@dataclass
class _Entry:
    cluster: Cluster
    source: str
    dynamic: list[str] = field(default_factory=list)


@dataclass
class _View:
    entries: dict[str, _Entry] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _collect(cfg: Any) -> _View:
    """Every cluster of every source, as a proxy with this config would load them."""
    view = _View()

    def add(cluster: Cluster, source: str, dynamic: list[str] | None = None) -> None:
        if cluster.name in view.entries:
            view.errors.append(f"cluster {cluster.name!r} from {source} is already defined by "
                               f"{view.entries[cluster.name].source}")
            return
        view.entries[cluster.name] = _Entry(cluster, source, dynamic or [])

    loaded, errors = load_kubeconfig_files(cfg)
    view.errors.extend(errors)
    for path, clusters in loaded:
        for cluster in clusters:
            add(cluster, f"kubeconfig {path}")
    if cfg.kubernetes_service.clusters_dir:
        scanner = ClustersDirScanner(cfg.kubernetes_service.clusters_dir)
        scanner.scan()
        for path, loaded in sorted(scanner.by_file.items()):
            for lc in loaded:
                add(lc.cluster, f"file {path}", [s.key for s in lc.dynamic_labels])
        for errors in scanner.errors.values():
            view.errors.extend(errors)
    store = _store(cfg)
    records, errors = store.load_all()
    view.errors.extend(errors)
    for record in records.values():
        where = str(store.path_for(record.name))
        if record.origin == KUBE_CLUSTER:
            try:
                resource = KubeClusterResource.from_record(record, where)
                add(resource.to_cluster(where), f"store {where}", [s.key for s in resource.dynamic_labels])
            except DiscoveryError as exc:
                view.errors.append(str(exc))
        else:  # cloud records: show them without building credentials
            add(Cluster(name=record.name, labels=dict(record.labels), server=str(record.spec.get("endpoint", "")),
                        origin=record.origin, discovery_group=record.discovery_group), f"store {where}")
    _with_dynamic_values(view, read_dynamic_labels(cfg.registry_dir))
    return view


def _with_dynamic_values(view: _View, recorded: dict[str, dict[str, str]]) -> None:
    """Merge the dynamic label values the running proxy last recorded into the clusters' labels (dynamic
    wins over static, as in the registry), so that ``ls`` shows them and ``kubeconfig`` sees them."""
    for name, entry in view.entries.items():
        values = {k: v for k, v in recorded.get(name, {}).items() if k in entry.dynamic}
        if values:
            entry.cluster = dataclasses.replace(entry.cluster, labels={**entry.cluster.labels, **values})


def load_kubeconfig_files(cfg: Any) -> tuple[list[tuple[str, list[Cluster]]], list[str]]:
    """Every ``kubernetes_service.kubeconfig_files`` entry loaded as the proxy loads them: (path, clusters)
    per readable file, and every problem (unusable contexts, name collisions inside and across files)."""
    loaded: list[tuple[str, list[Cluster]]] = []
    errors: list[str] = []
    loader_log = logging.getLogger("discovery.kubeconfig")
    was_disabled, loader_log.disabled = loader_log.disabled, True  # the caller prints every problem once
    try:
        for entry in cfg.kubernetes_service.kubeconfig_files:
            try:
                clusters, problems = kubeconfig_clusters_with_errors(entry)
            except DiscoveryError as exc:
                errors.append(str(exc))
                continue
            errors.extend(problems)
            loaded.append((entry.path, clusters))
    finally:
        loader_log.disabled = was_disabled
    kept, collisions = kubeconfig_files_collisions(loaded)
    return kept, errors + collisions


def _selector(cfg: Any) -> ClusterRegistry:
    """Answers whether this proxy serves a cluster (``kubernetes_service.resources``)."""
    return ClusterRegistry([dict(r.labels) for r in cfg.kubernetes_service.resources])


def _rows(cfg: Any, view: _View, selector: ClusterRegistry) -> list[dict[str, Any]]:
    store = _store(cfg)
    health = store.read_health() if hasattr(store, "read_health") else read_health(cfg.registry_dir)
    rows = []
    for name in sorted(view.entries):
        entry = view.entries[name]
        c = entry.cluster
        h = health.get(name) or {}
        rows.append({
            "name": name,
            "origin": c.origin,
            "discovery_group": c.discovery_group,
            "source": entry.source,
            "server": c.server,
            "labels": dict(sorted(c.labels.items())),
            "dynamic_labels": entry.dynamic,
            "served": selector.matches(c.labels),
            "health": h.get("health", "unknown"),
            "health_detail": h.get("detail", ""),
            "insecure_skip_tls_verify": c.insecure_skip_tls_verify,
        })
    return rows


def _served(view: _View, selector: ClusterRegistry) -> list[Cluster]:
    return [view.entries[name].cluster for name in sorted(view.entries)
            if selector.matches(view.entries[name].cluster.labels)]


def served_clusters(cfg: Any) -> tuple[list[Cluster], list[str]]:
    """(clusters this proxy serves per the config's sources, problems found reading them); first source
    wins on a name clash, as in the registry."""
    view = _collect(cfg)
    return _served(view, _selector(cfg)), view.errors


def _identity(args: argparse.Namespace) -> Any:
    """The identity named on the command line (--cert, or --user with --roles), or None."""
    from certs.identity import IdentityError, from_pem
    from kubegate.commands.ca import parse_traits
    from rbac.identity import Identity

    if args.cert:
        try:
            with open(args.cert, "rb") as f:
                return from_pem(f.read())
        except (OSError, ValueError, IdentityError) as exc:
            raise DiscoveryError(f"--cert {args.cert}: {exc}") from None
    if args.user:
        roles = tuple(r.strip() for r in args.roles.split(",") if r.strip())
        if not roles:
            raise DiscoveryError("--user needs --roles (kubegate keeps no user database)")
        traits = {k: tuple(v) for k, v in parse_traits(args.traits).items()}
        return Identity(user=args.user, roles=roles, traits=traits)
    return None


def run_ls(args: argparse.Namespace) -> int:
    from certs.access import visible_clusters
    from kubegate.commands.ca import CommandError, load_roles

    cfg = _config(args)
    if cfg is None:
        return 1
    view = _collect(cfg)  # every source read once, for the rows and for the identity's view
    selector = _selector(cfg)
    rows = _rows(cfg, view, selector)
    try:
        identity = _identity(args)
        if identity is not None:
            visible = set(visible_clusters(identity, load_roles(cfg), _served(view, selector)))
            rows = [r for r in rows if r["served"] and r["name"] in visible]
    except (DiscoveryError, CommandError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps({"clusters": rows, "errors": view.errors}, indent=2))
    else:
        table = [("NAME", "ORIGIN", "HEALTH", "SERVED", "LABELS")]
        for r in rows:
            unknown = {k: "?" for k in r["dynamic_labels"] if k not in r["labels"]}  # not run yet
            labels = ",".join(f"{k}={v}" for k, v in sorted({**r["labels"], **unknown}.items()))
            table.append((r["name"], r["origin"], r["health"], "yes" if r["served"] else "no", labels))
        widths = [max(len(row[i]) for row in table) for i in range(4)]
        for row in table:
            print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
        details = [f"{r['name']}: {r['health']}: {r['health_detail']}" for r in rows if r["health_detail"]]
        if details:  # why a cluster is unhealthy (e.g. "impersonation not permitted: …"), under the table
            print("\n" + "\n".join(details))
    for error in view.errors:
        print(f"error: {error}", file=sys.stderr)
    return 0


def run_show(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if cfg is None:
        return 1
    rows = _rows(cfg, _collect(cfg), _selector(cfg))
    for row in rows:
        if row["name"] == args.name:
            width = max(len(k) for k in row)
            for key, value in row.items():
                if isinstance(value, dict):
                    value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
                elif isinstance(value, list):
                    value = ", ".join(value) or "-"
                print(f"{key.replace('_', ' ').ljust(width)}  {value if value != '' else '-'}")
            return 0
    print(f"error: no cluster named {args.name!r}", file=sys.stderr)
    return 1


def run_setup(args: argparse.Namespace) -> int:
    import asyncio
    import shutil
    import subprocess

    import yaml

    from discovery.whoami import upstream_username
    from kubegate.commands.ca import CommandError, load_roles, parse_traits
    from kubegate.upstream_rbac import impersonator_objects, role_objects, subject_for_username
    from rbac.decision import cluster_visible
    from rbac.identity import Identity

    cfg = _config(args)
    if cfg is None:
        return 1
    entry = _collect(cfg).entries.get(args.name)
    if entry is None:
        print(f"error: no cluster named {args.name!r} (see `kubegate clusters ls`)", file=sys.stderr)
        return 1
    cluster = entry.cluster
    try:
        roles = load_roles(cfg)
        traits = {k: tuple(v) for k, v in parse_traits(args.traits).items()}
        username = args.upstream_user
        if not username:
            creds = asyncio.run(cluster.credentials.get())
            username = upstream_username(cluster, creds)
    except (DiscoveryError, CommandError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a credentials provider failing (exec plugin, cloud token …)
        print(f"error: cluster {args.name!r}: credentials: {exc}", file=sys.stderr)
        return 1
    seeing = [role for role in roles
              if cluster_visible(Identity(user=username, roles=(role.name,), traits=traits), roles,
                                 cluster.labels, cluster.name)]
    plan = role_objects(seeing, traits)
    objects = impersonator_objects(subject_for_username(username)) + plan.objects
    text = yaml.safe_dump_all(objects, sort_keys=False)
    header = [f"kubegate RBAC for cluster {cluster.name} (kubegate authenticates as {username!r}); "
              f"roles that see it: {', '.join(r.name for r in seeing) or 'none'}", *plan.notes]
    if not args.apply:
        sys.stdout.write("".join(f"# {line}\n" for line in header) + text)
        return 0
    for line in header:
        print(f"note: {line}", file=sys.stderr)
    kubectl = shutil.which(args.kubectl) or args.kubectl
    command = [kubectl, "apply", "-f", "-"]
    if args.kubeconfig:
        command += ["--kubeconfig", args.kubeconfig]
    if args.context:
        command += ["--context", args.context]
    try:
        done = subprocess.run(command, input=text, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"error: {' '.join(command)}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode
