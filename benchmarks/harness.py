"""The benchmark harness: the same load against the sandbox directly and through kubegate, in one run.

    python -m benchmarks [--quick] [--duration S] [--only requests,watches,exec,events] [--out DIR]
    kubegate bench …                                   (the same)

What it does:
1. starts the sandbox cluster in its own process (``benchmarks.sandbox_proc``), seeded with 500 pods;
2. writes a kubegate state (CA, demo roles, user certificate, config naming the sandbox) and starts
   ``kubegate start`` in its own process, pinned to CPU 0 with ``taskset -c 0`` when there are ≥ 2
   CPUs; the load generator (this process) and the sandbox are pinned to CPU 1;
3. measures, for GET one pod and LIST 500 pods, over HTTP/1.1 and h2, at 1/16/64 concurrent clients,
   against the sandbox directly and through kubegate: requests/s, p50/p99 latency, and the proxy's CPU
   time per request (its utime+stime from ``/proc/<pid>/stat`` ÷ requests: robust on a noisy machine);
   then GET at a paced 1,000/s over 10 clients, kubegate and nginx alternated in ``paced_rounds``
   rounds of ``duration`` each (a change in the shared machine's load falls on both alike);
4. proxy memory (RSS delta) with 1,000 and 10,000 idle watches (raises ``ulimit -n`` first);
5. exec stdout relay (``head -c N /dev/zero`` over WebSocket) MB/s and proxy CPU-seconds per GB;
6. watch event relay: proxy CPU per 1,000 events, kubegate and nginx alternated in
   ``watch_event_rounds`` rounds;
then prints a table and writes ``benchmarks/results/<timestamp>.json`` (gitignored).

Everything is bounded: each request cell runs ``duration`` seconds; counts are fixed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from benchmarks import load
from benchmarks.nginx import (
    NginxProcess,
    UpstreamTLS,
    fast_upstream_conf,
    fetch_raw,
    find_nginx,
    reference_proxy_conf,
)
from kubegate.demo import free_port, single_context_kubeconfig

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

GET_PATH = "/api/v1/namespaces/bench/pods/pod-0"
LIST_PATH = "/api/v1/namespaces/bench/pods"
IDLE_WATCH_PATH = "/api/v1/namespaces/bench-idle/configmaps?watch=true"
EVENT_WATCH_PATH = "/api/v1/namespaces/bench-watch/configmaps?watch=true"
FAST_CLUSTER = "fast"  # the nginx upstream (benchmarks.nginx): request cells go there


@dataclass
class Settings:
    mode: str = "full"
    duration: float = 3.0
    concurrencies: tuple[int, ...] = (1, 16, 64)
    protocols: tuple[str, ...] = ("h1", "h2")
    operations: tuple[str, ...] = ("get", "list")
    pods: int = 500
    idle_watches: tuple[int, ...] = (1000, 10000)
    idle_watches_h1: tuple[int, ...] = (1000,)  # one HTTP/1.1 connection per watch
    exec_bytes: int = 256 * 1024 * 1024  # one exec session's stdout …
    exec_rounds: int = 5  # … through each proxy in turn, in this many rounds (measure_exec)
    watch_events: int = 20000  # CPU time is read in 10 ms ticks: ~0.3 s of it for ~2 % resolution
    watch_event_rounds: int = 4  # … through each proxy in turn, in this many rounds (measure_watch_events)
    only: tuple[str, ...] = ("requests", "watches", "exec", "events")
    workers: int = 1
    out_dir: str = str(RESULTS_DIR)
    pin: bool = True
    profile: bool = False
    wrap: tuple[str, ...] = ()  # a command prefix for kubegate and the reference nginx (benchmarks.instructions)
    paced_rate: float = 1000.0  # the paced cell: GET over HTTP/1.1 at this total rate …
    paced_clients: int = 10     # … spread over this many keep-alive clients
    paced_rounds: int = 3       # … kubegate and nginx alternated, each round ``duration`` long
    backend: str = "local"      # "etcd": kubegate keeps its shared state in a 3-member etcd on loopback

    @classmethod
    def quick(cls) -> Settings:
        return cls(mode="quick", duration=0.3, concurrencies=(1, 4), pods=20, idle_watches=(20,), idle_watches_h1=(10,),
                   exec_bytes=1024 * 1024, exec_rounds=2, watch_events=50, paced_rate=200.0, paced_clients=2,
                   paced_rounds=1)


# ------------------------------------------------------------------------------------ /proc helpers

def wait_ready(metrics_port: int, proxy: subprocess.Popen, timeout: float = 60.0, log: Path | None = None) -> None:
    """Until kubegate's ``/readyz`` on ``metrics_port`` answers 200; RuntimeError (with the end of ``log``)
    when the ``proxy`` process exits first or ``timeout`` seconds pass."""
    def tail() -> str:
        return log.read_text()[-3000:] if log is not None and log.exists() else ""

    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{metrics_port}/readyz"
    while time.monotonic() < deadline:
        if proxy.poll() is not None:
            raise RuntimeError(f"kubegate exited ({proxy.returncode}):\n{tail()}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        time.sleep(0.1)
    raise RuntimeError(f"kubegate not ready after {timeout}s:\n{tail()}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * PAGE


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (the supervisor's workers with ``--workers N``)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            pids.extend(int(x) for x in (task / "children").read_text().split())
    return pids


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(p) for p in process_tree(pid))


def tree_rss_bytes(pid: int) -> int:
    return sum(rss_bytes(p) for p in process_tree(pid))


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _can_pin() -> bool:
    return shutil.which("taskset") is not None and len(os.sched_getaffinity(0)) >= 2


# ------------------------------------------------------------------------------------- processes

class Processes:
    """The sandbox and the proxy under test, as child processes; ``close()`` ends both."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self.sandbox: subprocess.Popen[str] | None = None
        self.proxy: subprocess.Popen[bytes] | None = None
        self.sandbox_info: dict = {}
        self.state = None
        self.pinned = settings.pin and _can_pin()
        self.proxy_log = workdir / "proxy.log"
        self.fast: NginxProcess | None = None
        self.nginx: NginxProcess | None = None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return env

    def start(self) -> None:
        from kubegate.demo import prepare_demo_state

        cmd = [sys.executable, "-m", "benchmarks.sandbox_proc", str(self.workdir / "sandbox"),
               "--pods", str(self.settings.pods)]
        if self.pinned:
            cmd = ["taskset", "-c", "1", *cmd]
        self.sandbox = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env=self._env(), cwd=ROOT)
        assert self.sandbox.stdout is not None
        line = self.sandbox.stdout.readline()
        if not line:
            raise RuntimeError("the sandbox process did not start")
        self.sandbox_info = json.loads(line)

        fast_kubeconfig = self._start_fast_upstream()
        proxy_port, metrics_port = free_port(), free_port()
        # every policy on, as in production: roles, impersonation, metrics, audit (to a file), locks
        self.state = prepare_demo_state(
            self.workdir / "state", self.sandbox_info["admin_kubeconfig"], proxy_port=proxy_port,
            metrics_port=metrics_port, workers=self.settings.workers, log_level="warning")
        config = yaml.safe_load(self.state.config_path.read_text())
        config["kubernetes_service"]["kubeconfig_files"].append(str(fast_kubeconfig))
        if self.settings.wrap:  # everything runs ~50× slower under callgrind: health checks too
            config["kubernetes_service"]["health_timeout"] = "300s"
        if self.settings.backend == "etcd":
            config["backend"] = self._start_etcd()
        self.state.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        cmd = [sys.executable, "-m", "kubegate", "start", "-c", str(self.state.config_path)]
        cmd = [*self.settings.wrap, *cmd]
        if self.pinned and self.settings.workers == 1:
            cmd = ["taskset", "-c", "0", *cmd]
        log_file = open(self.proxy_log, "wb")  # noqa: SIM115 - closed in close()
        self._log_file = log_file
        self.proxy = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=self._env(), cwd=ROOT)
        self._wait_ready(metrics_port, timeout=600.0 if self.settings.wrap else 60.0)
        self._start_reference_proxy()
        if self.pinned:
            os.sched_setaffinity(0, {1})

    def _start_etcd(self) -> dict:
        """A 3-member etcd on loopback holding kubegate's shared state (the demo roles stored there, as
        ``kubegate roles apply`` would); returns the config's ``backend`` section."""
        from backend.etcd import EtcdBackend
        from backend.testing import EtcdCluster
        from kubegate.shared_roles import PREFIX

        self.etcd = EtcdCluster(self.workdir / "etcd", members=3)
        self.etcd.start_all()
        backend = EtcdBackend(self.etcd.endpoints, prefix="/kubegate/")
        for role_file in sorted(self.state.roles_dir.glob("*.yaml")):
            for doc in yaml.safe_load_all(role_file.read_text()):
                backend.put(PREFIX + doc["metadata"]["name"], yaml.safe_dump(doc).encode())
        key_file = self.workdir / "ca.key"
        key_file.write_bytes(os.urandom(32))
        return {"type": "etcd", "endpoints": self.etcd.endpoints, "ca_key_file": str(key_file)}

    def _start_fast_upstream(self) -> Path:
        """nginx serving the benchmark's GET and LIST bodies (captured from the sandbox) and proxying
        the rest to the sandbox; returns a kubeconfig naming it as cluster ``fast``."""
        info = self.sandbox_info
        binary = find_nginx()
        if binary is None:
            raise RuntimeError("nginx is not installed: run scripts/install-tools.sh")
        static_dir = self.workdir / "static"
        static_dir.mkdir(mode=0o755)
        # nginx started as root runs its worker as nobody: it must be able to reach and read the files
        self.workdir.chmod(0o711)
        static = {}
        for name, path in (("get.json", GET_PATH), ("list.json", LIST_PATH)):
            body, ctype = fetch_raw(info["port"], path, info["ca_file"], info["cert_file"], info["key_file"])
            (static_dir / name).write_bytes(body)
            (static_dir / name).chmod(0o644)
            static[path] = (static_dir / name, ctype)
        sandbox = UpstreamTLS("sandbox", info["port"], info["ca_file"], info["cert_file"], info["key_file"])
        port = free_port()
        conf = fast_upstream_conf(self.workdir / "nginx-upstream", port, info["server_cert_file"],
                                  info["server_key_file"], static, sandbox)
        self.fast = NginxProcess(binary, self.workdir / "nginx-upstream", conf, port, 1 if self.pinned else None)
        doc = single_context_kubeconfig(info["admin_kubeconfig"], FAST_CLUSTER)
        doc["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
        path = self.workdir / "fast.kubeconfig"
        path.write_text(yaml.safe_dump(doc))
        return path

    def _start_reference_proxy(self) -> None:
        """nginx doing kubegate's job without policy, pinned where kubegate is (see benchmarks.nginx)."""
        info, st = self.sandbox_info, self.state
        assert self.fast is not None and st is not None
        binary = find_nginx()
        assert binary is not None
        creds = (info["ca_file"], info["cert_file"], info["key_file"])
        clusters = [UpstreamTLS(FAST_CLUSTER, self.fast.port, *creds),
                    UpstreamTLS(st.cluster_name, info["port"], *creds)]
        port = free_port()
        ca_dir = st.state_dir / "ca"
        conf = reference_proxy_conf(self.workdir / "nginx-proxy", port, str(ca_dir / "server.pem"),
                                    str(ca_dir / "server-key.pem"), str(st.ca_file), clusters,
                                    {"demo-admin": "system:masters"})
        self.nginx = NginxProcess(binary, self.workdir / "nginx-proxy", conf, port, 0 if self.pinned else None,
                                  wrap=self.settings.wrap)

    def _wait_ready(self, metrics_port: int, timeout: float = 60.0) -> None:
        assert self.proxy is not None
        wait_ready(metrics_port, self.proxy, timeout, self.proxy_log)

    @property
    def proxy_pid(self) -> int:
        assert self.proxy is not None
        return self.proxy.pid

    def direct(self) -> load.Endpoint:
        info = self.sandbox_info
        return load.Endpoint("127.0.0.1", info["port"], info["ca_file"], info["cert_file"], info["key_file"])

    def through_proxy(self, cluster: str | None = None) -> load.Endpoint:
        st = self.state
        assert st is not None
        return load.Endpoint("127.0.0.1", st.proxy_port, str(st.ca_file), str(st.cert_file), str(st.key_file),
                             prefix=f"/k8s/clusters/{cluster or st.cluster_name}")

    def fast_direct(self) -> load.Endpoint:
        """The fast (nginx) upstream reached directly, with the cluster's admin credentials."""
        info = self.sandbox_info
        assert self.fast is not None
        return load.Endpoint("127.0.0.1", self.fast.port, info["ca_file"], info["cert_file"], info["key_file"])

    def through_nginx(self, cluster: str | None = None) -> load.Endpoint:
        """The reference nginx proxy, with the same client certificate as kubegate's clients."""
        st = self.state
        assert st is not None and self.nginx is not None
        return load.Endpoint("127.0.0.1", self.nginx.port, str(st.ca_file), str(st.cert_file), str(st.key_file),
                             prefix=f"/k8s/clusters/{cluster or st.cluster_name}")

    @property
    def nginx_pid(self) -> int:
        assert self.nginx is not None
        return self.nginx.pid

    def close(self) -> None:
        for nginx in (self.nginx, self.fast):
            if nginx is not None:
                nginx.close()
        if self.proxy is not None and self.proxy.poll() is None:
            self.proxy.send_signal(signal.SIGTERM)
            try:
                self.proxy.wait(20)
            except subprocess.TimeoutExpired:
                self.proxy.kill()
                self.proxy.wait()
        if getattr(self, "_log_file", None) is not None:
            self._log_file.close()
        if getattr(self, "etcd", None) is not None:
            self.etcd.stop_all()
        if self.sandbox is not None and self.sandbox.poll() is None:
            assert self.sandbox.stdin is not None
            with contextlib.suppress(OSError):
                self.sandbox.stdin.close()
            try:
                self.sandbox.wait(20)
            except subprocess.TimeoutExpired:
                self.sandbox.kill()
                self.sandbox.wait()


def start_bare_relay(procs: Processes, wrap: tuple[str, ...]) -> tuple[subprocess.Popen[bytes], load.Endpoint]:
    """``benchmarks.bare_relay`` under ``wrap`` in front of the fast upstream, with kubegate's serving
    certificate and client CA and the fast upstream's client credentials: the process and its endpoint."""
    info, st = procs.sandbox_info, procs.state
    assert st is not None and procs.fast is not None
    port, ca_dir, prefix = free_port(), st.state_dir / "ca", f"/k8s/clusters/{FAST_CLUSTER}"
    cmd = [*wrap, sys.executable, "-m", "benchmarks.bare_relay", str(port), str(ca_dir / "server.pem"),
           str(ca_dir / "server-key.pem"), str(st.ca_file), prefix, str(procs.fast.port), info["ca_file"],
           info["cert_file"], info["key_file"]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=ROOT, env=procs._env())
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        proc.kill()
        raise RuntimeError("the bare relay did not start")
    return proc, load.Endpoint("127.0.0.1", port, str(st.ca_file), str(st.cert_file), str(st.key_file), prefix=prefix)


# -------------------------------------------------------------------------------------- measuring

@dataclass
class Cell:
    op: str
    protocol: str
    concurrency: int
    direct: dict = field(default_factory=dict)
    proxy: dict = field(default_factory=dict)
    nginx: dict = field(default_factory=dict)
    proxy_cpu_us_per_request: float = 0.0
    nginx_cpu_us_per_request: float = 0.0
    cpu_ratio_to_nginx: float = 0.0
    added_p50_ms: float = 0.0
    nginx_added_p50_ms: float = 0.0
    rate: float | None = None  # paced cells: requests per second offered in total
    # HTTP/1.1 GET cells: the bare Python relay (``benchmarks.bare_relay``, no policy) measured alike
    bare: dict = field(default_factory=dict)
    bare_cpu_us_per_request: float = 0.0
    bare_added_p50_ms: float = 0.0


def _merged(results: list[load.LoadResult]) -> load.LoadResult:
    """Several load runs of the same kind as one: counts and seconds added, latencies pooled."""
    out = load.LoadResult()
    for res in results:
        out.requests += res.requests
        out.errors += res.errors
        out.bytes += res.bytes
        out.elapsed += res.elapsed
        out.latencies.extend(res.latencies)
        for status, n in res.statuses.items():
            out.statuses[status] = out.statuses.get(status, 0) + n
    return out


async def _measured_alternately(sides: list[tuple[load.Endpoint, int]], path: str, protocol: str, conc: int,
                                duration: float, rate: float | None, rounds: int) -> list[tuple[dict, float]]:
    """``rounds`` load runs of ``duration`` against each of ``sides`` (endpoint, pid) in turn (A, B, A,
    B, ...): a change in the shared machine's load during the cell falls on every side alike. Per side:
    the pooled summary and its tree's CPU µs per successful request over all its rounds."""
    results: list[list[load.LoadResult]] = [[] for _ in sides]
    cpu = [0.0 for _ in sides]
    for _ in range(rounds):
        for i, (ep, pid) in enumerate(sides):
            cpu0 = tree_cpu_seconds(pid)
            results[i].append(await load.run_load(ep, path, protocol=protocol, concurrency=conc,
                                                  duration=duration, rate=rate))
            cpu[i] += tree_cpu_seconds(pid) - cpu0
    out = []
    for i in range(len(sides)):
        res = _merged(results[i])
        out.append((res.summary(), round(cpu[i] / max(1, res.requests - res.errors) * 1e6, 1)))
    return out


async def measure_requests(procs: Processes, settings: Settings) -> list[Cell]:
    """Request cells against the fast (nginx) upstream: directly, through kubegate and through the
    reference nginx proxy, one after the other in the same run; then the paced cell."""
    paths = {"get": GET_PATH, "list": LIST_PATH}
    cells: list[Cell] = []
    direct, proxied, nginx = procs.fast_direct(), procs.through_proxy(FAST_CLUSTER), procs.through_nginx(FAST_CLUSTER)
    plan = [(op, protocol, conc, None) for protocol in settings.protocols for op in settings.operations
            for conc in settings.concurrencies]
    if settings.paced_rate:
        plan.append(("get", "h1", settings.paced_clients, settings.paced_rate))
    # The bare Python relay (no policy: the floor for a Python proxy of this job), pinned as kubegate is,
    # in the HTTP/1.1 GET cells beside kubegate and nginx.
    relay: subprocess.Popen[bytes] | None = None
    if any(op == "get" and protocol == "h1" for op, protocol, _, _ in plan):
        relay, bare = start_bare_relay(procs, ("taskset", "-c", "0") if procs.pinned else ())
    try:
        warmed: set[str] = set()
        for op, protocol, conc, rate in plan:
            with_bare = relay is not None and op == "get" and protocol == "h1"
            if protocol not in warmed:  # warm every path (connections, caches, upstream pools)
                warmed.add(protocol)
                for ep in (direct, proxied, nginx, *((bare,) if with_bare else ())):
                    await load.run_load(ep, GET_PATH, protocol=protocol, concurrency=4,
                                        duration=min(0.5, settings.duration))
            cell = Cell(op, protocol, conc, rate=rate)
            res = await load.run_load(direct, paths[op], protocol=protocol, concurrency=conc,
                                      duration=settings.duration, rate=rate)
            cell.direct = res.summary()
            rounds = settings.paced_rounds if rate else 1  # the paced cell: the proxies alternated in rounds
            sides = [(proxied, procs.proxy_pid), (nginx, procs.nginx_pid)]
            if with_bare:
                assert relay is not None
                sides.append((bare, relay.pid))
            measured = await _measured_alternately(sides, paths[op], protocol, conc, settings.duration, rate, rounds)
            (cell.proxy, cell.proxy_cpu_us_per_request), (cell.nginx, cell.nginx_cpu_us_per_request) = measured[:2]
            if with_bare:
                cell.bare, cell.bare_cpu_us_per_request = measured[2]
                cell.bare_added_p50_ms = round(cell.bare["p50_ms"] - cell.direct["p50_ms"], 3)
            cell.cpu_ratio_to_nginx = round(cell.proxy_cpu_us_per_request / max(0.1, cell.nginx_cpu_us_per_request), 2)
            cell.added_p50_ms = round(cell.proxy["p50_ms"] - cell.direct["p50_ms"], 3)
            cell.nginx_added_p50_ms = round(cell.nginx["p50_ms"] - cell.direct["p50_ms"], 3)
            cells.append(cell)
            label = f"{rate:g}/s" if rate else f"c={conc}"
            floor = (f"   bare relay {cell.bare_cpu_us_per_request:>7} µs CPU/req, +{cell.bare_added_p50_ms} ms p50"
                     if with_bare else "")
            print(f"  {op:4} {protocol} {label:<7} direct {cell.direct['rps']:>8} rps   "
                  f"kubegate {cell.proxy['rps']:>8} rps {cell.proxy_cpu_us_per_request:>7} µs CPU/req   "
                  f"nginx {cell.nginx['rps']:>8} rps {cell.nginx_cpu_us_per_request:>7} µs CPU/req   "
                  f"ratio {cell.cpu_ratio_to_nginx}{floor}", file=sys.stderr, flush=True)
    finally:
        if relay is not None:
            relay.terminate()
            relay.wait(30)
    return cells


def _configmap(namespace: str, name: str) -> bytes:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
                       "data": {"key": "v" * 64}}).encode()


async def create_configmap(ep: load.Endpoint, namespace: str, name: str) -> None:
    conn = await load.h1_connect(ep)
    try:
        status, _ = await conn.request(load.h1_request_bytes(
            "POST", f"/api/v1/namespaces/{namespace}/configmaps", ep.authority, _configmap(namespace, name)))
        if status >= 300:
            raise RuntimeError(f"creating configmap {namespace}/{name} answered {status}")
    finally:
        assert conn.transport is not None
        conn.transport.close()


async def measure_idle_watches(procs: Processes, settings: Settings) -> list[dict]:
    """Idle watches over h2 (multiplexed), then over HTTP/1.1 (a TLS connection each)."""
    out = await _idle_watches(procs, settings, settings.idle_watches, "h2")
    if settings.idle_watches_h1:
        out += await _idle_watches(procs, settings, settings.idle_watches_h1, "h1")
    return out


async def _idle_watches(procs: Processes, settings: Settings, counts: tuple[int, ...], protocol: str) -> list[dict]:
    """kubegate's RSS growth with idle watches open. After a warm-up (200 watches opened and closed:
    first-use allocations, upstream connections), watches are added up to each count in turn and kept
    open, so every figure is measured from the same baseline: (RSS now - baseline) / watches open.
    Each watch has relayed one event: the trigger that makes every response head arrive."""
    out = []
    direct, proxied = procs.direct(), procs.through_proxy()
    run = int(time.time() * 1000) % 10**9
    holders: list[load.WatchHolder] = []

    async def open_more(n: int, tag: str) -> load.WatchHolder:
        rv = await load.current_resource_version(direct, "/api/v1/namespaces/bench-idle/configmaps")
        holder = load.WatchHolder(proxied, f"{IDLE_WATCH_PATH}&resourceVersion={rv}", n, protocol=protocol)

        async def trigger() -> None:
            await asyncio.sleep(0.5)
            await create_configmap(direct, "bench-idle", f"idle-{run}-{protocol}-{tag}")

        await holder.open(timeout=max(30.0, n / 50), trigger=trigger)
        return holder

    try:
        warm = await open_more(min(200, max(counts)), "warmup")
        await warm.close()
        await asyncio.sleep(1.0)
        rss0 = tree_rss_bytes(procs.proxy_pid)
        opened = failed = 0
        failures: dict[str, int] = {}
        t0 = time.perf_counter()
        for count in sorted(counts):
            holder = await open_more(count - opened - failed, str(count))
            holders.append(holder)
            opened += holder.opened
            failed += holder.failed
            for why, n in holder.failures.items():
                failures[why] = failures.get(why, 0) + n
            await asyncio.sleep(1.0)
            rss1 = tree_rss_bytes(procs.proxy_pid)
            delta = rss1 - rss0
            entry = {"protocol": protocol, "watches": count, "opened": opened, "failed": failed, "failures": dict(failures),
                     "open_seconds": round(time.perf_counter() - t0, 2),
                     "rss_before_mib": round(rss0 / 2**20, 1), "rss_after_mib": round(rss1 / 2**20, 1),
                     "rss_delta_mib": round(delta / 2**20, 1),
                     "kib_per_watch": round(delta / 1024 / max(1, opened), 2)}
            out.append(entry)
            print(f"  idle watches {protocol} {count}: opened {opened}, {entry['kib_per_watch']} KiB/watch",
                  file=sys.stderr, flush=True)
    finally:
        for holder in holders:
            await holder.close()
    return out


async def measure_exec(procs: Processes, settings: Settings) -> dict:
    """exec stdout relay (WebSocket v5) directly, then through kubegate and through the reference nginx
    in ``exec_rounds`` rounds that alternate the two (kubegate, nginx, kubegate, ...), each round one
    exec session of ``exec_bytes``. One session is ~0.5 s of a proxy's CPU, and the shared machine's load
    moved a single session's CPU per GB by a third from one session to the next: alternated, a change in
    that load falls on both proxies alike. Each proxy's CPU per GB is its rounds' CPU over their bytes;
    ``rounds_cpu_seconds_per_gb`` keeps each round's."""
    pod = "/api/v1/namespaces/bench/pods/pod-0"
    nbytes, secs = await load.exec_stdout(procs.direct(), pod, settings.exec_bytes)
    direct = {"bytes": nbytes, "seconds": round(secs, 3), "mb_per_s": round(nbytes / secs / 1e6, 1) if secs else 0}
    rounds = max(1, settings.exec_rounds)
    out: dict = {"direct": direct, "requested_bytes": settings.exec_bytes, "rounds": rounds}
    sides = (("proxy", procs.through_proxy(), procs.proxy_pid), ("nginx", procs.through_nginx(), procs.nginx_pid))
    totals = {key: {"bytes": 0, "seconds": 0.0, "cpu": 0.0, "per_round": []} for key, _, _ in sides}
    for _ in range(rounds):
        for key, ep, pid in sides:
            cpu0 = tree_cpu_seconds(pid)
            nbytes, secs = await load.exec_stdout(ep, pod, settings.exec_bytes)
            cpu = tree_cpu_seconds(pid) - cpu0
            total = totals[key]
            total["bytes"] += nbytes
            total["seconds"] += secs
            total["cpu"] += cpu
            total["per_round"].append(round(cpu / nbytes * 1e9, 2) if nbytes else None)
    for key, total in totals.items():
        nbytes, secs, cpu = total["bytes"], total["seconds"], total["cpu"]
        out[key] = {"bytes": nbytes // rounds, "seconds": round(secs / rounds, 3),
                    "mb_per_s": round(nbytes / secs / 1e6, 1) if secs else 0, "cpu_seconds": round(cpu, 3),
                    "cpu_seconds_per_gb": round(cpu / nbytes * 1e9, 2) if nbytes else None,
                    "rounds_cpu_seconds_per_gb": total["per_round"]}
    out["proxy"]["proxy_cpu_seconds_per_gb"] = out["proxy"]["cpu_seconds_per_gb"]
    print(f"  exec stdout: direct {direct['mb_per_s']} MB/s, kubegate {out['proxy']['mb_per_s']} MB/s "
          f"{out['proxy']['cpu_seconds_per_gb']} CPU-s/GB, nginx {out['nginx']['mb_per_s']} MB/s "
          f"{out['nginx']['cpu_seconds_per_gb']} CPU-s/GB ({rounds} rounds alternated; per round kubegate "
          f"{out['proxy']['rounds_cpu_seconds_per_gb']}, nginx {out['nginx']['rounds_cpu_seconds_per_gb']})",
          file=sys.stderr, flush=True)
    return out


async def _watch_event_cost(procs: Processes, n: int, ep: load.Endpoint, pid: int, tag: str) -> dict:
    """One watch through ``ep`` counting ``n`` configmaps created directly on the sandbox: the events
    seen, the seconds they took and the CPU seconds of ``pid``'s process tree meanwhile."""
    direct = procs.direct()
    run = f"{int(time.time() * 1000) % 10**9}-{tag}"
    conns = [await load.h1_connect(direct) for _ in range(8)]
    rv = await load.current_resource_version(direct, "/api/v1/namespaces/bench-watch/configmaps")

    async def trigger() -> None:
        async def creator(k: int) -> None:
            conn = conns[k]
            for i in range(k, n, len(conns)):
                status, _ = await conn.request(load.h1_request_bytes(
                    "POST", "/api/v1/namespaces/bench-watch/configmaps", direct.authority,
                    _configmap("bench-watch", f"cm-{run}-{i}")))
                if status >= 300:
                    raise RuntimeError(f"creating a configmap answered {status}")
        await asyncio.gather(*(creator(k) for k in range(len(conns))))

    cpu0 = tree_cpu_seconds(pid)
    seen, secs = await load.watch_events(ep, f"{EVENT_WATCH_PATH}&resourceVersion={rv}", expect=n, trigger=trigger)
    cpu = tree_cpu_seconds(pid) - cpu0
    for conn in conns:
        assert conn.transport is not None
        conn.transport.close()
    return {"events": seen, "seconds": secs, "cpu_seconds": cpu}


def _per_1000_events(total: dict) -> dict:
    events = max(1, total["events"])
    return {"events": total["events"], "seconds": round(total["seconds"], 3), "cpu_seconds": round(total["cpu_seconds"], 4),
            "cpu_ms_per_1000_events": round(total["cpu_seconds"] / events * 1000 * 1000, 2)}


async def measure_watch_events(procs: Processes, settings: Settings) -> dict:
    """``watch_events`` events through kubegate and as many through the reference nginx, in
    ``watch_event_rounds`` rounds that alternate the two (kubegate, nginx, kubegate, ...), each round a
    watch of its own: a change in the shared machine's load during the cell falls on both alike
    instead of on whichever proxy's share ran then. Each proxy's CPU per 1,000 events is its rounds'
    CPU over their events."""
    rounds = max(1, settings.watch_event_rounds)
    per_round = max(1, -(-settings.watch_events // rounds))  # at least watch_events in all
    totals = {key: {"events": 0, "seconds": 0.0, "cpu_seconds": 0.0} for key in ("kubegate", "nginx")}
    for r in range(rounds):
        for key, ep, pid in (("kubegate", procs.through_proxy(), procs.proxy_pid),
                             ("nginx", procs.through_nginx(), procs.nginx_pid)):
            got = await _watch_event_cost(procs, per_round, ep, pid, f"{key}{r}")
            for name in ("events", "seconds", "cpu_seconds"):
                totals[key][name] += got[name]
    proxy, nginx = _per_1000_events(totals["kubegate"]), _per_1000_events(totals["nginx"])
    result = {"events": proxy["events"], "rounds": rounds, "seconds": proxy["seconds"],
              "proxy_cpu_seconds": proxy["cpu_seconds"],
              "proxy_cpu_ms_per_1000_events": proxy["cpu_ms_per_1000_events"], "nginx": nginx,
              "ratio_to_nginx": round(proxy["cpu_ms_per_1000_events"] / max(0.01, nginx["cpu_ms_per_1000_events"]), 2)}
    print(f"  watch events: {proxy['events']} in {rounds} rounds, {proxy['seconds']} s, kubegate "
          f"{proxy['cpu_ms_per_1000_events']} ms CPU / 1000 events, nginx {nginx['cpu_ms_per_1000_events']}",
          file=sys.stderr, flush=True)
    return result


async def profile_proxy(procs: Processes, settings: Settings) -> dict:
    """Sample kubegate with py-spy while it serves GET one pod over HTTP/1.1 at 16 clients; the
    functions with the most samples (self and inclusive). ``--native``: most of the per-request work
    runs in compiled code (kubegate's Cython modules, uvloop, OpenSSL), which Python frames alone would
    show as time spent in the loop's ``run_forever``; py-spy pauses the process for each native sample,
    so the load's rate drops meanwhile (the shares are what count)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(spy):
        return {"error": "py-spy is not installed (pip install py-spy)"}
    seconds = max(4, int(settings.duration * 3))
    out = procs.workdir / "profile.txt"
    # warmed first (upstream pools, catalogs, memoised decisions), so the samples are of the steady state
    await load.run_load(procs.through_proxy(), GET_PATH, protocol="h1", concurrency=16, duration=1.0)
    spy_proc = await asyncio.create_subprocess_exec(
        spy, "record", "--format", "raw", "--rate", "100", "--native", "--pid", str(process_tree(procs.proxy_pid)[-1]),
        "--duration", str(seconds), "--output", str(out), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    await asyncio.sleep(0.5)
    await load.run_load(procs.through_proxy(), GET_PATH, protocol="h1", concurrency=16, duration=seconds)
    _, err = await spy_proc.communicate()
    if spy_proc.returncode != 0 or not out.exists():
        return {"error": f"py-spy failed: {err.decode(errors='replace')[-500:]}"}
    out_dir = Path(settings.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = out_dir / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-profile.txt"
    shutil.copy(out, kept)  # the stacks as py-spy wrote them (flamegraph tools read this format)
    return summarize_collapsed(out.read_text(), thread_frame="uv_run")  # the event loop's thread


def summarize_collapsed(text: str, top: int = 15, thread_frame: str | None = None) -> dict:
    """Self and inclusive sample counts per function from py-spy's collapsed ("raw") stacks; with
    ``thread_frame``, only the stacks that hold a frame of that name (one thread's: a native profile
    also samples the threads that only wait, the executor's and the audit writer's)."""
    self_counts: dict[str, int] = {}
    incl_counts: dict[str, int] = {}
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        if thread_frame is not None and f";{thread_frame} (" not in stack:
            continue
        count = int(count_text)
        total += count
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                  if " (" in f else f for f in stack.split(";")]
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for frame in set(frames):
            incl_counts[frame] = incl_counts.get(frame, 0) + count

    def ranked(counts: dict[str, int]) -> list[dict]:
        return [{"function": name, "percent": round(100 * n / max(1, total), 1)}
                for name, n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": total, "self": ranked(self_counts), "inclusive": ranked(incl_counts)}


# ------------------------------------------------------------------------------------------ report

def render_table(report: dict) -> str:
    lines = []
    cells = report.get("requests") or []
    if cells:
        lines.append("| op | proto | clients | direct req/s | kubegate req/s | nginx req/s | kubegate p50/p99 ms | "
                     "added p50 ms kubegate / nginx | CPU µs/req kubegate | CPU µs/req nginx | kubegate ÷ nginx |")
        lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in cells:
            d, p, n = c["direct"], c["proxy"], c.get("nginx") or {}
            clients = f"{c['concurrency']} @ {c['rate']:g}/s" if c.get("rate") else str(c["concurrency"])
            lines.append(
                f"| {c['op'].upper()} | {'HTTP/1.1' if c['protocol'] == 'h1' else 'h2'} | {clients} | "
                f"{d['rps']:.0f} | {p['rps']:.0f} | {n.get('rps', 0):.0f} | "
                f"{p['p50_ms']:.2f} / {p['p99_ms']:.2f} | {c['added_p50_ms']:+.2f} / {c.get('nginx_added_p50_ms', 0):+.2f} | "
                f"{c['proxy_cpu_us_per_request']:.0f} | {c.get('nginx_cpu_us_per_request', 0):.0f} | "
                f"{c.get('cpu_ratio_to_nginx', 0):.2f}× |")
    floor = [c for c in cells if c.get("bare")]
    if floor:
        lines.append("")
        lines.append("The floor for a Python proxy of this job, measured in the same cells (`benchmarks/bare_relay.py`: "
                     "uvloop and httptools, mTLS in, `Impersonate-*` from the certificate, keep-alive TLS upstream, "
                     "answers relayed as bytes, no policy, pinned as kubegate is):")
        lines.append("")
        lines.append("| GET HTTP/1.1 clients | bare relay req/s | added p50 ms bare relay / kubegate / nginx | "
                     "CPU µs/req bare relay | bare relay ÷ nginx | kubegate ÷ bare relay |")
        lines.append("|---:|---:|---:|---:|---:|---:|")
        for c in floor:
            clients = f"{c['concurrency']} @ {c['rate']:g}/s" if c.get("rate") else str(c["concurrency"])
            bare_cpu = c["bare_cpu_us_per_request"]
            lines.append(
                f"| {clients} | {c['bare']['rps']:.0f} | {c['bare_added_p50_ms']:+.2f} / {c['added_p50_ms']:+.2f} / "
                f"{c.get('nginx_added_p50_ms', 0):+.2f} | {bare_cpu:.0f} | "
                f"{bare_cpu / max(0.1, c.get('nginx_cpu_us_per_request', 0)):.2f}× | "
                f"{c['proxy_cpu_us_per_request'] / max(0.1, bare_cpu):.2f}× |")
    if report.get("idle_watches"):
        lines.append("")
        lines.append("| idle watches | client protocol | opened | kubegate RSS delta MiB | KiB per watch |")
        lines.append("|---:|---|---:|---:|---:|")
        for w in report["idle_watches"]:
            proto = "HTTP/1.1" if w.get("protocol") == "h1" else "h2"
            lines.append(f"| {w['watches']} | {proto} | {w['opened']} | {w['rss_delta_mib']} | {w['kib_per_watch']} |")
    if report.get("exec"):
        e = report["exec"]
        ng = e.get("nginx") or {}
        lines.append("")
        alternated = f" per session, kubegate and nginx alternated in {e['rounds']} rounds" if e.get("rounds", 1) > 1 else ""
        lines.append(f"exec stdout relay ({e['proxy']['bytes'] / 2**20:.0f} MiB{alternated}): direct {e['direct']['mb_per_s']} MB/s; "
                     f"kubegate {e['proxy']['mb_per_s']} MB/s, {e['proxy']['proxy_cpu_seconds_per_gb']} CPU-s/GB; "
                     f"nginx {ng.get('mb_per_s')} MB/s, {ng.get('cpu_seconds_per_gb')} CPU-s/GB")
    if report.get("watch_events"):
        w = report["watch_events"]
        ng = w.get("nginx") or {}
        alternated = f", kubegate and nginx alternated in {w['rounds']} rounds" if w.get("rounds", 1) > 1 else ""
        lines.append(f"watch event relay ({w['events']} events{alternated}): kubegate {w['proxy_cpu_ms_per_1000_events']} ms CPU "
                     f"per 1,000 events, nginx {ng.get('cpu_ms_per_1000_events')} ms "
                     f"(kubegate ÷ nginx {w.get('ratio_to_nginx')}×)")
    prof = report.get("profile")
    if prof:
        lines.append("")
        if "error" in prof:
            lines.append(f"profile: {prof['error']}")
        else:
            lines.append(f"profile (py-spy, GET HTTP/1.1 16 clients, {prof['samples']} samples), self time:")
            lines.append("```")
            lines.extend(f"{e['percent']:5.1f}%  {e['function']}" for e in prof["self"])
            lines.append("```")
    return "\n".join(lines)


def _git_commit() -> str:
    with contextlib.suppress(Exception):
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=5).stdout.strip()
    return ""


def run(settings: Settings) -> dict:
    load.install_uvloop()
    nofile = raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="kubegate-bench-"))
    procs = Processes(settings, workdir)
    report: dict = {
        "meta": {"mode": settings.mode, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "commit": _git_commit(), "python": platform.python_version(), "cpus": os.cpu_count(),
                 "cpu_model": _cpu_model(), "nofile": nofile, "settings": asdict(settings)},
    }
    affinity = os.sched_getaffinity(0)
    try:
        procs.start()
        report["meta"]["pinned"] = procs.pinned
        report["meta"]["proxy_workers"] = settings.workers

        async def main() -> None:
            if "requests" in settings.only:
                print("requests:", file=sys.stderr, flush=True)
                report["requests"] = [asdict(c) for c in await measure_requests(procs, settings)]
            if "watches" in settings.only:
                print("idle watches:", file=sys.stderr, flush=True)
                report["idle_watches"] = await measure_idle_watches(procs, settings)
            if "exec" in settings.only:
                report["exec"] = await measure_exec(procs, settings)
            if "events" in settings.only:
                report["watch_events"] = await measure_watch_events(procs, settings)
            if settings.profile:
                report["profile"] = await profile_proxy(procs, settings)

        asyncio.run(main())
    finally:
        procs.close()
        os.sched_setaffinity(0, affinity)
        shutil.rmtree(workdir, ignore_errors=True)
    report["meta"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out_dir = Path(settings.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{settings.mode}.json"
    path.write_text(json.dumps(report, indent=2))
    report["meta"]["json_path"] = str(path)
    return report


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def build_arg_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny numbers (seconds, for smoke tests): 20 pods, 1 and 4 clients, 0.3 s cells")
    parser.add_argument("--duration", type=float, help="seconds per request cell (default 3, quick 0.3)")
    parser.add_argument("--concurrency", help="comma-separated client counts (default 1,16,64)")
    parser.add_argument("--only", help="comma-separated parts: requests,watches,exec,events (default all)")
    parser.add_argument("--event-rounds", type=int,
                        help="rounds the events cell alternates kubegate and nginx in (default 4)")
    parser.add_argument("--idle-watches", help="comma-separated idle watch counts (default 1000,10000)")
    parser.add_argument("--workers", type=int, default=1, help="kubegate worker processes (default 1)")
    parser.add_argument("--profile", action="store_true",
                        help="also sample kubegate with py-spy under GET load and list the hottest functions")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs with taskset")
    parser.add_argument("--backend", choices=("local", "etcd"), default="local",
                        help="kubegate's shared state: the state directory (default) or a 3-member etcd")
    parser.add_argument("--out", help=f"directory for the JSON result (default {RESULTS_DIR})")
    parser.add_argument("--runs", type=int, default=1,
                        help="repeat the whole run (fresh processes) and report each figure's median")
    parser.add_argument("--update-readme", action="store_true",
                        help="write the table into README.md between its benchmark markers")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = Settings.quick() if args.quick else Settings()
    if args.duration:
        settings.duration = args.duration
    if args.concurrency:
        settings.concurrencies = tuple(int(x) for x in args.concurrency.split(","))
    if args.only:
        settings.only = tuple(x.strip() for x in args.only.split(","))
    if args.event_rounds:
        settings.watch_event_rounds = args.event_rounds
    if args.idle_watches:
        settings.idle_watches = tuple(int(x) for x in args.idle_watches.split(","))
    settings.workers = args.workers
    settings.pin = not args.no_pin
    settings.backend = args.backend
    settings.profile = args.profile
    if args.out:
        settings.out_dir = args.out
    return settings


def rebuild_compiled() -> None:
    """Rebuild the checkout's compiled modules whose sources changed (``scripts/build_compiled.py``, as the
    test suite does first): the proxy measured runs the code as it is, not a stale build of it."""
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_compiled.py")], check=False)


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    rebuild_compiled()
    return run_and_print(settings_from_args(args), update_readme=args.update_readme, runs=args.runs)


def median_report(reports: list[dict]) -> dict:
    """One report of the same shape whose every number is the median of the runs' (strings and other
    values from the first run); ``meta.runs`` says how many runs it summarises."""
    def combine(values: list) -> object:
        first = values[0]
        if isinstance(first, bool) or first is None or isinstance(first, str):
            return first
        if isinstance(first, (int, float)):
            numbers = [v for v in values if isinstance(v, (int, float))]
            return round(statistics.median(numbers), 2) if numbers else first
        if isinstance(first, dict):
            return {k: combine([v.get(k) for v in values if isinstance(v, dict)]) for k in first}
        if isinstance(first, list) and all(isinstance(v, list) and len(v) == len(first) for v in values):
            return [combine([v[i] for v in values]) for i in range(len(first))]
        return first

    merged = combine(reports)
    assert isinstance(merged, dict)
    merged["meta"] = {**reports[0]["meta"], "runs": len(reports),
                      "json_paths": [r["meta"].get("json_path") for r in reports]}
    return merged


def run_and_print(settings: Settings, update_readme: bool = False, runs: int = 1) -> int:
    reports = [run(settings) for _ in range(max(1, runs))]
    report = reports[0] if len(reports) == 1 else median_report(reports)
    print(render_table(report))
    print(f"\nJSON: {report['meta']['json_path']}")
    if update_readme:
        write_readme_table(report, ROOT / "README.md")
        print("README.md: benchmark table updated")
    return 0


README_START = "<!-- BENCHMARK-TABLE -->"
README_END = "<!-- /BENCHMARK-TABLE -->"


def write_readme_table(report: dict, readme: Path) -> None:
    """Replace the text between the README's benchmark markers with this run's table."""
    meta = report["meta"]
    runs = f", each figure the median of {meta['runs']} runs" if meta.get("runs", 1) > 1 else ""
    intro = (f"Measured {meta['started'][:10]} on {meta['cpus']} vCPUs ({meta['cpu_model']}), CPython "
             f"{meta['python']}, uvloop, {meta['proxy_workers']} kubegate worker, "
             f"{'pinned with taskset' if meta.get('pinned') else 'not pinned'}, "
             f"{meta['settings']['duration']:g} s per cell (the paced cell: "
             f"{meta['settings'].get('paced_rounds', 1)} rounds of it, kubegate and nginx alternated), "
             f"commit {meta['commit']}{runs}:")
    text = readme.read_text()
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    readme.write_text(text[:start] + "\n" + intro + "\n\n" + render_table(report) + "\n" + text[end:])
