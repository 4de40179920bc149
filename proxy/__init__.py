"""kubegate's data path: mTLS listener → HTTP/1.1 or h2 front → route → authorize once → rewrite headers
once → upstream pool → bytes both ways.

Modules (one job each)::

    app.Proxy             the whole data path on the running loop (what `kubegate start` / workers / tests build)
    server.Listener       accept loop, connection limit, TLS handshake (failures counted by reason)
    connection            one client connection: drives the proxy.protocol codec chosen by ALPN, timeouts
    forward               the per-request pipeline (Forwarder shared state, Exchange per request)
    upgrade               exec / attach / portforward relay (SPDY or WebSocket over HTTP/1.1), audit tap
    routing / headers     pure: /k8s/clusters/<name>/ routing; request / response header rewriting
    policy                the seam to rbac/ (RbacPolicy: visibility, decisions, self reviews), memoised
    catalogs              per-cluster resource catalogs from the upstream's discovery documents
    upstream/             per-cluster pools: HTTP/1.1 keep-alive (short requests), h2 multiplexed
                          (watches, followed logs), fresh HTTP/1.1 for upgrades
    tls / identity        listener and upstream SSL contexts; identity from the client certificate
    metrics / audit       kubegate_* Prometheus metrics; JSON-lines audit sink
    protobuf              just enough protobuf to read a SelfSubjectAccessReview (kubectl auth can-i);
                          the wire reading is protocol.protobuf_wire's
    testing               running_proxy(...) (own thread + uvloop loop), EchoUpstream, cluster_for_sandbox

``Proxy`` API::

    Proxy(clusters=ClusterSource, roles=<has .current() -> RoleSet> | policy=Policy,
          ssl_context=... | cert_file=, key_file=, client_ca_file=,
          host="127.0.0.1", port=0, reuse_port=False,
          locks=<has .is_locked(identity), .generation (None: ask on every request); optional
                 .watch(loop) / .unwatch(), called by start / shutdown: certs.locks.LockList>,
          audit=<callable(dict)>, settings=ProxySettings(...), pool_settings=PoolSettings(...),
          sweep_interval=1.0, clock=None)
    Proxy.from_config(cfg, **same keywords)  # reads cfg.proxy.limits.* (already validated)
    await proxy.start([sockets])             # or bind host/port itself
    proxy.port; proxy.readiness() -> (bool, reason); proxy.stats() -> dict
    await proxy.shutdown(grace)              # stop accepting, finish in-flight, end streams cleanly

Without ``roles`` or ``policy`` the constructor raises: kubegate never allows everything by default.
"""

from pathlib import Path as _Path

from proxy.protocol import use_sources as _use_sources

# The fast path's modules (fastpath, connection) are compiled where the build made them (setup.py, typed
# by the .pxd beside each); KUBEGATE_PURE_PYTHON=1 makes a process import their .py files.
_use_sources(__name__, _Path(__file__).resolve().parent)
