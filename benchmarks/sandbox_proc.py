"""The benchmark's upstream: the sandbox cluster in its own process, seeded for the benchmark.

    python -m benchmarks.sandbox_proc DIR [--pods 500]

Seeds namespaces ``bench`` (``--pods`` pods ``pod-0`` …, realistic size), ``bench-idle`` (empty: idle
watches) and ``bench-watch`` (event relay); prints one JSON line on stdout with ``port``, ``pid``,
``admin_kubeconfig``, ``ca_file``, the admin client ``cert_file``/``key_file`` and the serving
``server_cert_file``/``server_key_file`` (the benchmark's nginx upstream presents the same certificate); runs until its
stdin closes (the harness holds it open) or it gets SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

import yaml


def pod_object(namespace: str, name: str, index: int) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": "bench", "tier": "web", "shard": str(index % 16)},
            "annotations": {"kubegate.dev/bench": "true", "description": "x" * 200},
        },
        "spec": {
            "nodeName": f"node-{index % 8}",
            "containers": [{
                "name": "app",
                "image": "registry.example.com/bench/app:1.2.3",
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "env": [{"name": f"VAR_{i}", "value": f"value-{i}"} for i in range(8)],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                              "limits": {"cpu": "500m", "memory": "256Mi"}},
            }],
        },
        "status": {"phase": "Running", "podIP": f"10.0.{index // 250}.{index % 250}",
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }


def seed(store: object, pods: int) -> None:
    for ns in ("bench", "bench-idle", "bench-watch"):
        store.put_object("", "namespaces", {"apiVersion": "v1", "kind": "Namespace",  # type: ignore[attr-defined]
                                            "metadata": {"name": ns}})
    for i in range(pods):
        store.put_object("", "pods", pod_object("bench", f"pod-{i}", i))  # type: ignore[attr-defined]


def _client_files(kubeconfig: str, out_dir: Path) -> tuple[str, str]:
    """The admin kubeconfig's client certificate and key as files."""
    import base64

    doc = yaml.safe_load(Path(kubeconfig).read_text())
    user = doc["users"][0]["user"]
    base = Path(kubeconfig).resolve().parent
    paths = []
    for data_key, file_key, name in (("client-certificate-data", "client-certificate", "admin.pem"),
                                     ("client-key-data", "client-key", "admin-key.pem")):
        if data_key in user:
            path = out_dir / name
            path.write_bytes(base64.b64decode(user[data_key]))
            os.chmod(path, 0o600)
            paths.append(str(path))
        else:
            value = user[file_key]
            paths.append(value if os.path.isabs(value) else str(base / value))
    return paths[0], paths[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--pods", type=int, default=500)
    args = parser.parse_args()
    from sandbox.testing import running_sandbox

    out_dir = Path(args.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with running_sandbox(out_dir) as sb:
        seed(sb.store, args.pods)
        cert_file, key_file = _client_files(str(sb.admin_kubeconfig), out_dir)
        print(json.dumps({"port": sb.port, "pid": os.getpid(), "admin_kubeconfig": str(sb.admin_kubeconfig),
                          "ca_file": str(sb.ca_pem_path), "cert_file": cert_file, "key_file": key_file,
                          "server_cert_file": str(sb.ca_pem_path.parent / "server.crt"),
                          "server_key_file": str(sb.ca_pem_path.parent / "server.key")}),
              flush=True)
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
