"""kubegate discovery: where the proxy's clusters come from, and how a running proxy learns they changed.

Public API (the proxy reads only ``discovery.model`` + the registry; the app wires the service)::

    from discovery.registry import ClusterRegistry
    registry = ClusterRegistry([dict(r.labels) for r in cfg.kubernetes_service.resources])
        .get(name) -> Cluster | None          # one dict lookup (~60-110 ns), served clusters only
        .list() -> list[Cluster]              # cached snapshot, sorted by name
        .subscribe(fn(name, cluster|None)) -> unsubscribe   # after every change of the served view;
                                              # None = removed or no longer selected: end its streams
        .all() / .peek(name)                  # every known cluster, served or not
        .upsert(cluster, source) / .remove(name, source) / .replace_source(source, clusters)
        .set_dynamic_labels(name, labels) / .set_health(name, health, detail) / .set_selectors(sel)

    from discovery.service import DiscoveryService
    service = DiscoveryService.from_config(cfg, registry, cloud=(worker_index == 0))
    await service.start()   # first sync of every local source done on return; loops keep running:
                            # kubeconfig files, clusters_dir (kube_cluster files), <state_dir>/clusters
                            # (CLI + discovered), dynamic labels, health checks, EKS/AKS pollers
    await service.stop()
    service.errors          # {source: [error naming file/cluster]} for /readyz or logs

Building blocks: ``discovery.kubeconfig`` (``clusters_from_kubeconfig``,
``kubeconfig_clusters_with_errors``), ``discovery.kube_cluster`` (Teleport ``kube_cluster`` v3),
``discovery.store`` (crash-safe ``<state_dir>/clusters/<name>.json``), ``discovery.reconcile`` (pure),
``discovery.eks`` / ``discovery.aks`` (fetchers + ``EksTokenProvider`` / ``AadTokenProvider``),
``discovery.credentials`` (token files, exec plugins), ``discovery.dynamic_labels``,
``discovery.health`` (``check_cluster``, ``HealthChecker``), ``discovery.metrics``.

Only one process should run the cloud pollers (``cloud=True``): they write the store, and every
worker's store watcher picks the records up within ``watch_interval`` (1 s). Each worker runs its own
watchers and health checks for its own registry.
"""
