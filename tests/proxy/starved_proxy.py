"""A kubegate proxy in a process of its own whose file descriptor limit is low, for the test of what
the listener does when ``accept`` fails with EMFILE (the pytest process must not run out of fds).

    python starved_proxy.py WORKDIR FD_LIMIT

Prints one JSON line (port, pid, CA and a client certificate's paths) once listening, then serves
(no clusters: requests get kubegate's own 404 Status) until stdin closes.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

from proxy.forward import ProxySettings
from proxy.testing import running_proxy
from rbac import RoleWatcher

ROLE = """kind: role
version: v8
metadata: {name: admin}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources: [{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: ['*']}]
"""


def main() -> None:
    workdir = Path(sys.argv[1])
    limit = int(sys.argv[2])
    roles = workdir / "roles"
    roles.mkdir(parents=True, exist_ok=True)
    (roles / "admin.yaml").write_text(ROLE)
    settings = ProxySettings(header_timeout=30.0, idle_timeout=60.0)
    with running_proxy(workdir / "proxy", clusters=[], roles=RoleWatcher(str(roles), time.time), settings=settings) as px:
        cert, key = px.issue_user("alice", ["admin"])
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        print(json.dumps({"port": px.port, "pid": os.getpid(), "ca": str(px.ca_pem_path), "cert": str(cert),
                          "key": str(key)}), flush=True)  # fmt: skip
        sys.stdin.read()


if __name__ == "__main__":
    main()
