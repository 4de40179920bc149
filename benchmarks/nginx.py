"""nginx in the benchmark: the fast upstream for request cells and the reference proxy beside kubegate.

Two nginx instances (Debian's ``nginx`` binary, installed into ``.tools/bin/nginx`` by
``scripts/install-tools.sh``), each one worker, each in its own prefix directory:

- **the fast upstream** (``FastUpstream``): a TLS server with the sandbox's serving certificate that
  answers ``GET`` of the benchmark pod and the benchmark pod list from files captured from the sandbox
  (same bytes, same ``Content-Type``), and proxies every other path (discovery, health, watches) to
  the sandbox. The Python sandbox spends ~100 µs per GET and would bound the run; nginx serving a file
  does not, so the proxies' own cost is what the request cells measure.
- **the reference proxy** (``ReferenceProxy``): what an operator would write to do kubegate's job
  without policy: mTLS in against kubegate's CA (``ssl_verify_client on``), ``Impersonate-User`` /
  ``Impersonate-Group`` set from the client certificate's CN / O, any client ``Authorization`` dropped,
  TLS to the upstream with the cluster's client certificate, a keep-alive upstream pool,
  ``proxy_buffering off``; ``/k8s/clusters/<name>/`` routes to each cluster as kubegate's prefix does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def find_nginx() -> str | None:
    """The nginx binary: ``.tools/bin/nginx`` (installed by scripts/install-tools.sh), else on PATH."""
    local = ROOT / ".tools" / "bin" / "nginx"
    if local.exists() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("nginx")


@dataclass(frozen=True)
class UpstreamTLS:
    """How nginx reaches a cluster: its address and the credentials from its kubeconfig."""

    name: str
    port: int
    ca_file: str
    client_cert_file: str
    client_key_file: str


def _common(prefix: Path) -> str:
    """The parts of nginx.conf every instance shares: one worker, logs to stderr, temp dirs inside
    the prefix (the packaged binary's defaults point into /var/lib/nginx)."""
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    return f"""
worker_processes 1;
daemon off;
error_log stderr warn;
pid {prefix}/nginx.pid;
worker_rlimit_nofile 65536;
events {{ worker_connections 30000; }}
"""


def _http_common(prefix: Path) -> str:
    return f"""
    access_log off;
    client_body_temp_path {prefix}/tmp/client_body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    http2_max_requests 10000000;
    http2_max_concurrent_streams 1000;
    proxy_http_version 1.1;
    map $http_upgrade $upstream_connection {{ default upgrade; "" ""; }}
    proxy_set_header Connection $upstream_connection;
    proxy_set_header Upgrade $http_upgrade;
    proxy_buffering off;
    proxy_request_buffering off;
    proxy_read_timeout 3600s;
    proxy_ssl_session_reuse on;
"""


def _upstream_block(up: UpstreamTLS) -> str:
    return f"    upstream {up.name} {{ server 127.0.0.1:{up.port}; keepalive 128; }}\n"


def _upstream_tls(up: UpstreamTLS) -> str:
    return (f"proxy_ssl_certificate {up.client_cert_file}; proxy_ssl_certificate_key {up.client_key_file}; "
            f"proxy_ssl_trusted_certificate {up.ca_file}; proxy_ssl_verify on; proxy_ssl_name localhost;")


class NginxProcess:
    """One nginx master + worker in ``prefix``; ``pid`` is the master (its worker is its child)."""

    def __init__(self, binary: str, prefix: Path, conf: str, port: int, cpu: int | None,
                 wrap: tuple[str, ...] = ()) -> None:
        self.prefix = prefix
        self.port = port
        prefix.mkdir(parents=True, exist_ok=True)
        self.conf_path = prefix / "nginx.conf"
        self.conf_path.write_text(conf)
        self.log_path = prefix / "nginx.log"
        cmd = [*wrap, binary, "-p", str(prefix), "-c", str(self.conf_path), "-e", "stderr"]
        if wrap:  # one process (no master/worker fork) so the wrapper (callgrind) sees the worker's work
            cmd += ["-g", "master_process off;"]
        if cpu is not None and shutil.which("taskset"):
            cmd = ["taskset", "-c", str(cpu), *cmd]
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_listening()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_listening(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited ({self.proc.returncode}):\n{self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"nginx did not listen on {self.port} within {timeout}s")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def fast_upstream_conf(prefix: Path, port: int, server_cert: str, server_key: str,
                       static: dict[str, tuple[Path, str]], sandbox: UpstreamTLS, extra: str = "") -> str:
    """nginx.conf of the fast upstream: ``static`` maps an exact path to (file, content type); ``extra``
    is more of the server block (directives, locations: the tests' gzip and 204 answers)."""
    locations = "".join(
        f"        location = {path} {{ default_type {ctype}; alias {file}; }}\n"
        for path, (file, ctype) in static.items())
    return _common(prefix) + f"""
http {{
{_http_common(prefix)}
{_upstream_block(sandbox)}
    server {{
        listen 127.0.0.1:{port} ssl http2 backlog=4096;
        ssl_certificate {server_cert};
        ssl_certificate_key {server_key};
        ssl_session_cache shared:up:10m;
{locations}{extra}
        location / {{
            proxy_pass https://{sandbox.name};
            {_upstream_tls(sandbox)}
        }}
    }}
}}
"""


def reference_proxy_conf(prefix: Path, port: int, server_cert: str, server_key: str, client_ca: str,
                         clusters: list[UpstreamTLS], role_groups: dict[str, str]) -> str:
    """nginx.conf of the reference proxy (kubegate's job without policy: see the module docstring).
    ``role_groups`` maps a certificate's O (a kubegate role) to the group to impersonate, a static
    lookup standing in for kubegate's roles → kubernetes_groups."""
    upstreams = "".join(_upstream_block(c) for c in clusters)
    groups = "".join(f' "{role}" "{group}";' for role, group in role_groups.items())
    locations = "".join(f"""
        location /k8s/clusters/{c.name}/ {{
            proxy_pass https://{c.name}/;
            {_upstream_tls(c)}
        }}
""" for c in clusters)
    return _common(prefix) + f"""
http {{
{_http_common(prefix)}
    map $ssl_client_s_dn $kubegate_user {{ "~(^|,)CN=(?<cn>[^,]+)" $cn; default ""; }}
    map $ssl_client_s_dn $kubegate_role {{ "~(^|,)O=(?<o>[^,]+)" $o; default ""; }}
    map $kubegate_role $kubegate_group {{{groups} default $kubegate_role; }}
{upstreams}
    server {{
        listen 127.0.0.1:{port} ssl http2 backlog=4096;
        ssl_certificate {server_cert};
        ssl_certificate_key {server_key};
        ssl_client_certificate {client_ca};
        ssl_verify_client on;
        ssl_session_cache shared:px:10m;
        # proxy_set_header at this level replaces (not extends) the http level's: repeat those two
        proxy_set_header Connection $upstream_connection;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Authorization "";
        proxy_set_header Impersonate-User $kubegate_user;
        proxy_set_header Impersonate-Group $kubegate_group;
        proxy_set_header X-Forwarded-For $remote_addr;
{locations}
    }}
}}
"""


def fetch_raw(port: int, path: str, ca_file: str, cert_file: str, key_file: str) -> tuple[bytes, str]:
    """GET ``path`` from 127.0.0.1:``port`` over TLS with a client certificate: (body, content type)."""
    import http.client
    import ssl

    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.load_cert_chain(cert_file, key_file)
    ctx.check_hostname = False
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
    try:
        conn.request("GET", path, headers={"Accept": "application/json"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path} answered {response.status}: {body[:200]!r}")
        return body, response.getheader("Content-Type", "application/json").split(";")[0]
    finally:
        conn.close()
