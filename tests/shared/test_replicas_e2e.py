"""Three ``kubegate start`` replicas (separate state directories and ports) sharing state through a real
3-member etcd cluster on loopback, in front of the sandbox: what one replica is told, every replica
serves; a lock set on one replica ends streams on the others; etcd failures are survived."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from backend.testing import EtcdCluster
from kubegate.demo import free_port
from kubegate.listeners import held_by

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_ROLES = ROOT / "examples" / "roles"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
ENV.pop("PROMETHEUS_MULTIPROC_DIR", None)
STALE_GRACE = 8.0


def wait_until(predicate, what: str, timeout: float = 30.0, interval: float = 0.05) -> float:
    """Polls external processes' observable state (HTTP, CLI output); returns the seconds it took."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, f"timed out waiting until {what}"
        time.sleep(interval)
    return time.monotonic() - started


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


class Replica:
    def __init__(self, name: str, workdir: Path, endpoints: list[str], key_file: Path) -> None:
        self.name, self.dir = name, workdir
        workdir.mkdir(parents=True)
        self.config = workdir / "kubegate.yaml"
        self.endpoints, self.key_file = endpoints, key_file
        self.proc: subprocess.Popen[str] | None = None
        self.write_config()

    def write_config(self) -> None:
        """A config with ports that were free a moment ago (again after a start lost one of them)."""
        self.port, self.metrics_port = free_port(), free_port()  # never the same twice in this process
        if self.config.exists():  # keep what a test added to it
            config = yaml.safe_load(self.config.read_text())
            config["proxy"].update({"listen": f"127.0.0.1:{self.port}", "public_addr": f"127.0.0.1:{self.port}"})
            config["metrics"]["listen"] = f"127.0.0.1:{self.metrics_port}"
            self.config.write_text(yaml.safe_dump(config))
            return
        endpoints, key_file = self.endpoints, self.key_file
        self.config.write_text(yaml.safe_dump({
            "version": "v1", "state_dir": "./state",
            "proxy": {"listen": f"127.0.0.1:{self.port}", "public_addr": f"127.0.0.1:{self.port}",
                      "limits": {"shutdown_grace": "2s"}},
            "metrics": {"listen": f"127.0.0.1:{self.metrics_port}"},
            "backend": {"type": "etcd", "endpoints": endpoints, "prefix": "/kubegate-e2e/",
                        "timeout": "500ms", "lease_ttl": "2s", "stale_grace": f"{STALE_GRACE:g}s",
                        "ca_key_file": str(key_file)},
        }))

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kubegate", *args, "-c", str(self.config)], cwd=self.dir,
                              env=ENV, capture_output=True, text=True, timeout=60)

    def start(self, env: dict[str, str] | None = None, workers: int = 1) -> None:
        self.log = open(self.dir / "kubegate.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "kubegate", "start", "-c", str(self.config),
                                      "--workers", str(workers)],
                                     cwd=self.dir, env=env or ENV, stdout=subprocess.DEVNULL, stderr=self.log)

    def start_until_ready(self, env: dict[str, str] | None = None, workers: int = 1) -> None:
        """Start, and wait until this process answers ``/readyz`` with 200 on its own ports. When a port
        picked a moment ago was taken meanwhile (the start fails), start again on new ports, twice."""
        for attempt in range(3):
            self.start(env, workers)
            wait_until(lambda: self.proc.poll() is not None or (http_status(
                f"http://127.0.0.1:{self.metrics_port}/readyz") == 200 and self.serves_its_own_ports()),
                f"replica {self.name} starts", timeout=120)
            if self.proc.poll() is None:
                return
            self.stop()
            assert attempt < 2, (self.dir / "kubegate.log").read_text()
            self.write_config()

    def serves_its_own_ports(self) -> bool:
        """Whether this replica's process holds its metrics and proxy listeners. A port picked free a
        moment ago may meanwhile have been taken by another test's process, and that one's ``/readyz``
        would answer for a replica about to fail its start-up (seen in CI: a "ready" replica c that
        never wrote its CA)."""
        assert self.proc is not None
        return held_by(self.proc.pid, "127.0.0.1", self.metrics_port, self.port)

    def readyz(self) -> int:
        assert self.proc is not None and self.proc.poll() is None, (self.dir / "kubegate.log").read_text()
        return http_status(f"http://127.0.0.1:{self.metrics_port}/readyz")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "log", None) is not None:
            self.log.close()

    def kubeconfig(self, user: str, roles: str) -> Path:
        out = self.dir / f"{user}.kubeconfig"
        made = self.cli("kubeconfig", "--user", user, "--roles", roles, "--out", str(out))
        assert made.returncode == 0, made.stderr
        return out


@pytest.fixture(scope="module")
def etcd(tmp_path_factory):
    with EtcdCluster(tmp_path_factory.mktemp("etcd"), members=3) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    from sandbox.testing import running_sandbox

    with running_sandbox(tmp_path_factory.mktemp("sandbox")) as sb:
        yield sb


@pytest.fixture(scope="module")
def replicas(etcd, tmp_path_factory):
    root = tmp_path_factory.mktemp("replicas")
    key_file = root / "ca.key"
    key_file.write_bytes(os.urandom(32))
    key_file.chmod(0o600)
    group = [Replica(name, root / name, etcd.endpoints, key_file) for name in ("a", "b", "c")]
    for role in ("admin", "viewer"):
        applied = group[0].cli("roles", "apply", "-f", str(EXAMPLE_ROLES / f"{role}.yaml"))
        assert applied.returncode == 0, applied.stderr
    try:
        for replica in group:
            replica.start_until_ready(workers=2 if replica.name == "b" else 1)  # b: a supervisor, two workers
        yield group
    finally:
        for replica in group:
            replica.stop()


def add_sandbox_cluster(replica: Replica, sandbox, name: str) -> None:
    resource = replica.dir / f"{name}.yaml"
    resource.write_text(yaml.safe_dump({
        "kind": "kube_cluster", "version": "v3", "metadata": {"name": name, "labels": {"env": "e2e"}},
        "spec": {"kubeconfig": base64.b64encode(Path(sandbox.admin_kubeconfig).read_bytes()).decode()}}))
    added = replica.cli("clusters", "add", "-f", str(resource))
    assert added.returncode == 0, added.stderr


def kubectl(kubectl_new: str, kubeconfig: Path, replica: Replica, cluster: str, *args: str,
            timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """kubectl through ``replica`` to ``cluster`` (any context of the kubeconfig: the certificate is the same
    for all of them; the server URL names the replica and the cluster)."""
    context = yaml.safe_load(kubeconfig.read_text())["contexts"][0]["name"]
    server = f"https://127.0.0.1:{replica.port}/k8s/clusters/{cluster}"
    return subprocess.run([kubectl_new, "--kubeconfig", str(kubeconfig), "--context", context, "--server", server,
                           *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.e2e
def test_every_replica_uses_the_one_shared_ca(replicas):
    pems = {(r.dir / "state" / "ca" / "ca.pem").read_bytes() for r in replicas}
    assert len(pems) == 1, "three replicas started together adopted one CA"


@pytest.mark.e2e
def test_a_cluster_added_on_a_is_served_by_b_and_c_and_removed_on_c_is_gone_everywhere(
        replicas, sandbox, kubectl_new):
    a, b, c = replicas
    add_sandbox_cluster(a, sandbox, "east")
    admin = a.kubeconfig("root", "admin")
    for replica in (b, c):
        took = wait_until(lambda r=replica: kubectl(kubectl_new, admin, r, "east", "get", "ns", "default").returncode == 0,
                          f"east is served by {replica.name}")
        assert took < 10
    def health_on_c() -> str:
        import json

        listed = c.cli("clusters", "ls", "-o", "json")
        rows = {row["name"]: row for row in json.loads(listed.stdout)["clusters"]} if listed.returncode == 0 else {}
        return rows.get("east", {}).get("health", "")

    wait_until(lambda: health_on_c() == "healthy", "the replicas' health checks are shared (clusters ls on c)")
    removed = c.cli("clusters", "rm", "east")
    assert removed.returncode == 0, removed.stderr
    for replica in (a, b):
        wait_until(lambda r=replica: "(NotFound)" in kubectl(kubectl_new, admin, r, "east", "get", "ns", "default").stderr,
                   f"east is gone from {replica.name}")


def stream_ends(replica: Replica, user: str) -> list[float]:
    """Unix times at which ``replica`` logged ending a stream of ``user`` because of a lock."""
    import json
    from datetime import datetime

    ends = []
    for line in (replica.dir / "kubegate.log").read_text().splitlines():
        if '"ending stream"' not in line:
            continue
        entry = json.loads(line)
        if entry.get("user") == user and "is locked" in str(entry.get("reason", "")):
            ends.append(datetime.fromisoformat(entry["ts"].replace("Z", "+00:00")).timestamp())
    return ends


@pytest.mark.e2e
def test_a_lock_on_b_ends_alices_exec_and_watch_on_a_and_c_within_two_seconds(replicas, sandbox, kubectl_new):
    a, b, c = replicas
    add_sandbox_cluster(a, sandbox, "locks")
    alice = a.kubeconfig("alice", "admin")
    for replica in (a, c):
        wait_until(lambda r=replica: kubectl(kubectl_new, alice, r, "locks", "get", "ns", "default").returncode == 0,
                   f"the cluster is served by {replica.name}")

    def stream(replica: Replica, *args: str) -> subprocess.Popen[str]:
        server = f"https://127.0.0.1:{replica.port}/k8s/clusters/locks"
        return subprocess.Popen([kubectl_new, "--kubeconfig", str(alice), "--context", "locks", "--server", server,
                                 *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)

    streams = [stream(a, "get", "pods", "-n", "dev", "-w"), stream(c, "exec", "-i", "-n", "dev", "web-1", "--", "cat"),
               stream(a, "exec", "-i", "-n", "dev", "web-1", "--", "cat"), stream(c, "get", "pods", "-n", "dev", "-w")]
    try:
        time.sleep(3)  # the streams are established (kubectl discovery + upgrade) and held open
        assert all(p.poll() is None for p in streams), [p.stderr.read() for p in streams if p.poll() is not None]
        locked = b.cli("users", "lock", "alice", "--reason", "e2e")
        locked_at = time.time()  # the lock was written before the command returned
        assert locked.returncode == 0, locked.stderr
        wait_until(lambda: all(p.poll() is not None for p in streams), "every kubectl stream of alice exited",
                   timeout=30, interval=0.02)
        # when each replica ended the streams, from its own log (kubectl's exit adds client-side time a
        # loaded CI machine can stretch; the proxy's cut is what the 2 s bound is about)
        for replica in (a, c):
            ends = stream_ends(replica, "alice")
            assert len(ends) == 2, f"replica {replica.name} ended {len(ends)} of alice's 2 streams"
            late = max(ends) - locked_at
            assert late <= 2.0, f"replica {replica.name} ended alice's streams {late:.2f}s after the lock"
        denied = kubectl(kubectl_new, alice, c, "locks", "get", "ns", "default")
        assert "locked" in denied.stderr
    finally:
        for p in streams:
            if p.poll() is None:
                p.kill()
            p.wait(5)
        b.cli("users", "unlock", "alice")


def metric_sum(url: str, name: str) -> float:
    """The sum of every sample of ``name`` in a Prometheus text page."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


@pytest.mark.e2e
def test_requests_do_no_backend_io(replicas, sandbox, etcd, kubectl_new):
    """Per request nothing reaches etcd: etcd's own gRPC call counters (every member) move no more while
    a replica serves 200 requests than in as long a time with no request (the background: health
    publishing, watches, each process's presence lease renewed every ``lease_ttl / 3``)."""
    a = replicas[0]
    add_sandbox_cluster(a, sandbox, "no-io")
    admin = a.kubeconfig("root", "admin")
    wait_until(lambda: kubectl(kubectl_new, admin, a, "no-io", "get", "ns", "default").returncode == 0,
               "no-io is served")

    def etcd_calls() -> float:
        return sum(metric_sum(f"{endpoint}/metrics", "grpc_server_handled_total") for endpoint in etcd.endpoints)

    def proxied() -> float:
        return metric_sum(f"http://127.0.0.1:{a.metrics_port}/metrics", "kubegate_requests_total")

    import http.client
    import ssl

    config = yaml.safe_load(admin.read_text())
    user = config["users"][0]["user"]
    (a.dir / "root.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
    (a.dir / "root.key").write_bytes(base64.b64decode(user["client-key-data"]))
    (a.dir / "kubegate-ca.crt").write_bytes(base64.b64decode(
        config["clusters"][0]["cluster"]["certificate-authority-data"]))
    context = ssl.create_default_context(cafile=str(a.dir / "kubegate-ca.crt"))
    context.load_cert_chain(str(a.dir / "root.crt"), str(a.dir / "root.key"))
    connection = http.client.HTTPSConnection("127.0.0.1", a.port, context=context, timeout=30)
    time.sleep(1)  # the health round the new cluster triggered has been published
    idle_started, idle_before = time.monotonic(), etcd_calls()
    time.sleep(3)
    background_per_second = (etcd_calls() - idle_before) / (time.monotonic() - idle_started)
    started, calls_before, requests_before = time.monotonic(), etcd_calls(), proxied()
    for _ in range(200):
        connection.request("GET", "/k8s/clusters/no-io/api/v1/namespaces/dev/pods")
        response = connection.getresponse()
        assert response.status == 200, response.read()
        response.read()
    connection.close()
    served = proxied() - requests_before
    calls = etcd_calls() - calls_before
    background = background_per_second * (time.monotonic() - started)
    assert served >= 200, f"only {served} requests were proxied"
    assert calls < background + 20, f"{calls} etcd calls while {served} requests were proxied " \
                                    f"(background: {background:.1f} in as long)"


@pytest.mark.e2e
def test_a_second_start_on_a_used_port_is_refused_naming_the_address_and_pid(replicas):
    a = replicas[0]
    other = a.dir / "second.yaml"
    other.write_text(a.config.read_text().replace(f"127.0.0.1:{a.metrics_port}", f"127.0.0.1:{free_port()}"))
    second = subprocess.run([sys.executable, "-m", "kubegate", "start", "-c", str(other)], cwd=a.dir, env=ENV,
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert f"127.0.0.1:{a.port} is already served by another kubegate process (pid {a.proc.pid})" in second.stderr, \
        second.stderr


def eks_cluster(moto_url: str, name: str, group: str) -> None:
    import boto3

    eks = boto3.client("eks", region_name="us-east-1", endpoint_url=moto_url, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    eks.create_cluster(name=name, roleArn="arn:aws:iam::123456789012:role/eks", tags={"group": group},
                       resourcesVpcConfig={"subnetIds": ["subnet-1"]})


class Recorder:
    """Every change the backend reports under clusters/ (a watch of the test's own)."""

    def __init__(self, backend) -> None:
        from backend.cache import WatchedPrefix

        self.deleted: list[str] = []
        self.seen: set[str] = set()
        self.cache = WatchedPrefix(backend, "clusters/", on_change=self.changed)

    def changed(self, items) -> None:
        names = {key.split("/", 1)[1] for key in items}
        self.deleted.extend(sorted(self.seen - names))
        self.seen = names


@pytest.mark.e2e
def test_discovery_leadership_takeover_and_groups_that_leave_each_other_alone(etcd, moto_url, tmp_path):
    """Replicas a1 and a2 poll EKS (moto's server) for group g1, replica b for g2: one poller per group;
    kill -9 the g1 leader and the other takes over within the lease TTL without any cluster going away;
    neither group ever deletes the other's clusters."""
    from backend.etcd import EtcdBackend

    eks_cluster(moto_url, "one", "g1")
    eks_cluster(moto_url, "two", "g1")
    eks_cluster(moto_url, "three", "g2")
    key_file = tmp_path / "ca.key"
    key_file.write_bytes(os.urandom(32))
    prefix = "/kubegate-leaders/"
    env = {**ENV, "AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    group = []
    for name, discovery_group in (("a1", "g1"), ("a2", "g1"), ("b", "g2")):
        replica = Replica(name, tmp_path / name, etcd.endpoints, key_file)
        config = yaml.safe_load(replica.config.read_text())
        config["backend"]["prefix"] = prefix
        config["discovery_service"] = {"enabled": True, "discovery_group": discovery_group, "poll_interval": "1s",
                                       "aws": [{"types": ["eks"], "regions": ["us-east-1"],
                                                "tags": {"group": discovery_group}}]}
        replica.config.write_text(yaml.safe_dump(config))
        group.append(replica)
    backend = EtcdBackend(etcd.endpoints, prefix=prefix)
    recorder = Recorder(backend)
    recorder.cache.start()
    try:
        for replica in group:
            replica.start_until_ready(env)
        wait_until(lambda: recorder.seen == {"one", "two", "three"}, "both groups' clusters are stored")

        def leader(name: str) -> str:
            item = backend.get(f"leaders/discovery/{name}")
            return item.value.decode() if item is not None else ""

        first = leader("g1")
        assert leader("g2").endswith(f":{group[2].port}")
        [dying] = [r for r in group[:2] if first.endswith(f":{r.port}")]
        [survivor] = [r for r in group[:2] if r is not dying]
        time.sleep(2.5)  # a few discovery runs: nobody flaps anything
        os.kill(dying.proc.pid, signal.SIGKILL)
        dying.proc.wait(10)
        killed = time.monotonic()
        wait_until(lambda: leader("g1").endswith(f":{survivor.port}"), "the survivor leads g1", timeout=15,
                   interval=0.02)
        took = time.monotonic() - killed
        # the lease expires at most one TTL (2 s) after the dead leader's last renewal; the survivor's
        # watch reacts at once (allow a loaded machine 2 s to schedule it)
        assert took <= 2.0 + 2.0, f"takeover took {took:.2f}s with a 2 s lease TTL"
        eks_cluster(moto_url, "four", "g1")  # the new leader polls
        wait_until(lambda: "four" in recorder.seen, "the new leader's discovery run stored a new cluster")
        assert recorder.deleted == [], "no cluster went away during the takeover or because of the other group"
        assert {"one", "two", "three", "four"} <= recorder.seen
    finally:
        recorder.cache.stop()
        for replica in group:
            replica.stop()


@pytest.mark.e2e
def test_etcd_member_loss_and_full_outage(replicas, sandbox, etcd, kubectl_new):
    a, b, c = replicas
    add_sandbox_cluster(a, sandbox, "outage")
    admin = a.kubeconfig("root", "admin")
    wait_until(lambda: kubectl(kubectl_new, admin, c, "outage", "get", "ns", "default").returncode == 0,
               "outage is served by c")
    # one member killed: nothing lost, writes go on, every replica stays ready
    etcd.kill(0)
    add_sandbox_cluster(b, sandbox, "after-kill")
    wait_until(lambda: kubectl(kubectl_new, admin, a, "after-kill", "get", "ns", "default").returncode == 0,
               "a cluster added with one etcd member dead is served")
    # (a watch that was on the dead member breaks and resumes on another: readiness may blink, then stays)
    wait_until(lambda: all(r.readyz() == 200 for r in replicas), "every replica is ready with one member dead",
               timeout=15)
    # the whole etcd down: the last state is served, /readyz says 503; after stale_grace: fail closed
    down = time.monotonic()
    etcd.stop_all()
    wait_until(lambda: all(r.readyz() == 503 for r in replicas), "every replica reports not ready")
    if time.monotonic() - down < STALE_GRACE - 3:  # (a loaded machine may take longer to get here)
        served = kubectl(kubectl_new, admin, b, "outage", "get", "ns", "default")
        assert served.returncode == 0, f"the last known state is served within stale_grace: {served.stderr}"
    wait_until(lambda: "ServiceUnavailable" in kubectl(kubectl_new, admin, b, "outage", "get", "ns", "default",
                                                       "-v=6").stderr
               or "unreachable" in kubectl(kubectl_new, admin, b, "outage", "get", "ns", "default").stderr,
               "requests fail closed after stale_grace", timeout=30)
    # etcd back: the replicas recover by themselves
    etcd.start_all()
    wait_until(lambda: all(r.readyz() == 200 for r in replicas), "every replica is ready again", timeout=60)
    wait_until(lambda: kubectl(kubectl_new, admin, c, "outage", "get", "ns", "default").returncode == 0,
               "requests are served again")


def interactive_exec(kubectl_new: str, kubeconfig: Path, replica: Replica, cluster: str, marker: str):  # noqa: ANN201
    """``kubectl exec -it … -- sh`` through ``replica`` in a real pseudo-terminal (recorded: interactive),
    once the cluster is served there; it prints ``ready-<marker>`` first."""
    from tests.sessions.conftest import PtyKubectl

    wait_until(lambda: kubectl(kubectl_new, kubeconfig, replica, cluster, "get", "ns", "default").returncode == 0,
               f"the cluster is served by {replica.name}")
    context = yaml.safe_load(kubeconfig.read_text())["contexts"][0]["name"]
    return PtyKubectl([kubectl_new, "--kubeconfig", str(kubeconfig), "--context", context, "--server",
                       f"https://127.0.0.1:{replica.port}/k8s/clusters/{cluster}", "exec", "-it", "-n", "dev",
                       "web-1", "--", "sh", "-c", f"echo ready-{marker}; exec sh -i"], dict(os.environ, TERM="xterm"))


@pytest.mark.e2e
def test_a_session_held_by_a_is_joined_through_c(replicas, sandbox, kubectl_new, tmp_path):
    """Alice's interactive exec goes through replica a, which records it; bob's ``kubegate sessions join``
    reaches replica c, which finds in the shared index that a holds the session and asks a for it as
    bob: bob watches it live and alice's terminal says he joined."""
    from tests.sessions.conftest import ROLES, read_until

    a, _, c = replicas
    add_sandbox_cluster(a, sandbox, "joins")
    role = tmp_path / "observer.yaml"
    role.write_text(ROLES["observer"])  # may watch the sessions of "admin" holders
    applied = a.cli("roles", "apply", "-f", str(role))
    assert applied.returncode == 0, applied.stderr
    alice, bob = a.kubeconfig("alice", "admin"), c.kubeconfig("bob", "observer")
    marker = os.urandom(6).hex()
    term = interactive_exec(kubectl_new, alice, a, "joins", marker)
    joiner = None
    try:
        term.read_until(f"ready-{marker}".encode())

        def live_session() -> dict | None:
            import json

            listed = c.cli("sessions", "ls", "--json")
            records = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
            return next((r for r in records if marker in " ".join(r.get("command") or [])
                         and r.get("state") == "live"), None)

        wait_until(lambda: live_session() is not None, "the live session is in the shared index")
        session = live_session()
        assert session is not None and session["proxy_addr"] == f"127.0.0.1:{a.port}"
        joiner = subprocess.Popen([sys.executable, "-m", "kubegate", "sessions", "join", session["session_id"],
                                   "--kubeconfig", str(bob)], cwd=c.dir, env=ENV, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        read_until(joiner, f"ready-{marker}".encode())  # the recent screen, from a through c
        term.read_until(b"bob joined this session")
        term.type("echo live-$((2+3))\r")
        read_until(joiner, b"live-5")
        term.type("exit\r")
        assert term.wait() == 0
        assert joiner.wait(timeout=30) == 0
    finally:
        term.close()
        if joiner is not None and joiner.poll() is None:
            joiner.kill()
            joiner.wait()
    import json

    audited = [json.loads(line) for line in (c.dir / "state" / "audit.log").read_text().splitlines()]
    assert [(e["user"], e["held_by"]) for e in audited if e.get("event") == "session.join"] == \
        [("bob", f"127.0.0.1:{a.port}")]


@pytest.mark.e2e
def test_a_live_session_of_a_killed_replica_shows_interrupted_everywhere(replicas, sandbox, kubectl_new):
    """Replica a is killed (SIGKILL) during alice's interactive exec: within its presence lease (2 s here)
    c's ``kubegate sessions ls`` calls the session ``interrupted`` (a's process no longer holds its key in
    etcd; c cannot look for a PID of another host), and once a starts again it marks the record so in
    the shared index itself."""
    import json

    a, _, c = replicas
    add_sandbox_cluster(a, sandbox, "killed")
    marker = os.urandom(6).hex()
    term = interactive_exec(kubectl_new, a.kubeconfig("alice", "admin"), a, "killed", marker)

    def listed(*extra: str) -> list[str]:
        return [line for line in c.cli("sessions", "ls", *extra).stdout.splitlines() if marker in line]

    try:
        term.read_until(f"ready-{marker}".encode())
        wait_until(lambda: listed() and " live " in listed()[0], "c lists the session live")
        a.proc.kill()
        a.proc.wait(10)
        wait_until(lambda: " interrupted " in listed()[0], "c lists the session interrupted", timeout=15)
    finally:
        term.close()
        a.stop()
    a.start_until_ready()  # the module's later tests (and its own sweep) need a again
    record = json.loads(listed("--json")[0])
    assert record["state"] == "interrupted" and record["proxy_addr"] == f"127.0.0.1:{a.port}"
