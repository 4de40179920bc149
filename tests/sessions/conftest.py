"""Fixtures for the session recording tests: a sandbox cluster and a kubegate proxy in front of it whose
recordings go to a file store in a temporary directory, plus a driver for kubectl under a real pty."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROLES = {
    # Records interactive sessions (the default) with input; may watch sessions of "admin" holders.
    "admin": """
kind: role
version: v8
metadata: {name: admin}
spec:
  options:
    record_session: {default: best_effort, input: true}
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources: [{kind: '*', api_group: '*', namespace: '*', name: '*', verbs: ['*']}]
    kubernetes_groups: ['system:masters']
""",
    # Also records non-interactive sessions' content.
    "auditor": """
kind: role
version: v8
metadata: {name: auditor}
spec:
  options:
    record_session: {default: best_effort, non_interactive: best_effort}
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources: [{kind: pods, api_group: '', namespace: '*', name: '*', verbs: ['*']}]
    kubernetes_groups: ['system:masters']
""",
    # May observe the sessions of users holding "admin"; cannot exec itself.
    "observer": """
kind: role
version: v8
metadata: {name: observer}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources: [{kind: pods, api_group: '', namespace: '*', name: '*', verbs: [get, list]}]
    join_sessions: [{name: watch admins, roles: [admin], kinds: [k8s], modes: [observer]}]
""",
    # Sees pods but has no join_sessions.
    "viewer": """
kind: role
version: v8
metadata: {name: viewer}
spec:
  allow:
    kubernetes_labels: {'*': '*'}
    kubernetes_resources: [{kind: pods, api_group: '', namespace: '*', name: '*', verbs: [get, list]}]
""",
}


def write_roles(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in ROLES.items():
        (directory / f"{name}.yaml").write_text(text)
    return directory


@pytest.fixture(scope="session")
def rec_gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, Path]]:
    """(sandbox, proxy, sessions dir): the proxy records sessions into ``sessions dir``."""
    from proxy.recording.index import FileSessionIndex
    from proxy.recording.recorder import Recordings
    from proxy.recording.stores import FileStore
    from proxy.testing import cluster_for_sandbox, running_proxy
    from rbac import RoleWatcher
    from sandbox.testing import running_sandbox

    base = tmp_path_factory.mktemp("rec")
    sessions = base / "sessions"
    roles = RoleWatcher(str(write_roles(base / "roles")), time.time)
    recordings = Recordings(FileStore(str(sessions)), FileSessionIndex(str(sessions)), flush_interval=0.05)
    # A second proxy with its own recording service on the same state directory and CA: another worker
    # process, as far as sessions are concerned (it shares only the files).
    recordings2 = Recordings(FileStore(str(sessions)), FileSessionIndex(str(sessions)), flush_interval=0.05)
    with running_sandbox(base / "sandbox") as sb:
        with running_proxy(base / "proxy", clusters=[cluster_for_sandbox(sb)], roles=roles,
                           recordings=recordings) as px:
            # Both are one replica, at px's address: each session's index record names it.
            recordings.origin = recordings2.origin = f"127.0.0.1:{px.port}"
            with running_proxy(base / "proxy2", clusters=[cluster_for_sandbox(sb)], roles=roles,
                               recordings=recordings2, ca=px.ca) as px2:
                yield sb, px, sessions, px2


@pytest.fixture(scope="session")
def rpx_other_replica(rec_gate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Another replica (another host, as far as sessions are concerned): the same CA and session index
    (with ``backend.type: etcd`` the index is shared), recordings of its own elsewhere, its own address;
    it asks the replica holding a session for its stream (``proxy.recording.peer``)."""
    from proxy.recording.index import FileSessionIndex
    from proxy.recording.peer import PeerSessions
    from proxy.recording.recorder import Recordings
    from proxy.recording.stores import FileStore
    from proxy.testing import cluster_for_sandbox, running_proxy
    from rbac import RoleWatcher

    sb, px, sessions, _ = rec_gate
    base = tmp_path_factory.mktemp("replica")
    roles = RoleWatcher(str(write_roles(base / "roles")), time.time)
    recordings = Recordings(FileStore(str(base / "recordings")), FileSessionIndex(str(sessions)), flush_interval=0.05,
                            peer=PeerSessions(px.ca))
    with running_proxy(base / "proxy", clusters=[cluster_for_sandbox(sb)], roles=roles, recordings=recordings,
                       ca=px.ca) as replica:
        recordings.origin = f"127.0.0.1:{replica.port}"
        yield replica


@pytest.fixture(scope="session")
def rpx(rec_gate):
    return rec_gate[1]


@pytest.fixture(scope="session")
def rpx_other_worker(rec_gate):
    """Another proxy process's view of the same sessions (same CA and state directory)."""
    return rec_gate[3]


@pytest.fixture(scope="session")
def sessions_dir(rec_gate) -> Path:
    return rec_gate[2]


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def read_until(proc: subprocess.Popen[bytes], needle: bytes, timeout: float = 30) -> bytes:
    """What ``proc`` (a joiner: ``kubegate sessions join``) wrote to its stdout, up to ``needle``."""
    seen = b""
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while needle not in seen:
        assert time.monotonic() < deadline, f"joiner never showed {needle!r}: {seen[-300:]!r}"
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"joiner ended before {needle!r}: {seen[-300:]!r} {proc.stderr.read() if proc.stderr else b''!r}"
            seen += chunk
    return seen


def ended_session(sessions_dir: Path, marker: str, timeout: float = 30.0) -> dict[str, Any]:
    """The index record of the ended session whose command line carries ``marker``."""
    from proxy.recording.index import FileSessionIndex

    index = FileSessionIndex(str(sessions_dir))

    def find() -> dict[str, Any] | None:
        for record in index.list():
            if marker in " ".join(record.get("command") or []) and record.get("state") == "ended":
                return record
        return None

    return wait_for(find, timeout, f"the ended session with {marker}")


class PtyKubectl:
    """kubectl with a real pseudo-terminal as its stdin and stdout (stderr on a pipe), like a person at a
    terminal: ``type`` keys, ``resize`` (TIOCSWINSZ + SIGWINCH), ``read_until`` output; ``screen`` renders
    everything kubectl wrote to the terminal with pyte, resized where the terminal was."""

    def __init__(self, argv: list[str], env: dict[str, str], cols: int = 80, rows: int = 24) -> None:
        import pyte

        self.master, slave = pty.openpty()
        self._set_size(slave, cols, rows)
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=subprocess.PIPE, env=env,
                                     start_new_session=True, close_fds=True)
        os.close(slave)
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.output = b""

    @staticmethod
    def _set_size(fd: int, cols: int, rows: int) -> None:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def resize(self, cols: int, rows: int) -> None:
        self._set_size(self.master, cols, rows)
        self.screen.resize(rows, cols)
        self.proc.send_signal(signal.SIGWINCH)

    def pump(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: kubectl closed the terminal
            return False
        if not chunk:
            return False
        self.output += chunk
        self.stream.feed(chunk)
        return True

    def read_until(self, needle: bytes, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        start = len(self.output)
        while needle not in self.output[start:]:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {needle!r} in kubectl's terminal output: {self.output[-500:]!r}")
            if not self.pump(0.2):
                raise AssertionError(f"terminal closed before {needle!r}: {self.output[-500:]!r}")

    def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.pump(0.1)
        while self.pump(0.05) and self.proc.poll() is not None:
            ready, _, _ = select.select([self.master], [], [], 0)
            if not ready:
                break
        return self.proc.wait(timeout=5)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        os.close(self.master)


def replay_screen(cast: bytes) -> Any:
    """A pyte screen after playing a cast: its header's size, its resizes and its output, in order."""
    import pyte

    from proxy.recording.cast import read_cast

    header, events = read_cast(cast)
    screen = pyte.Screen(header["width"], header["height"])
    stream = pyte.Stream(screen)
    for _, code, data in events:
        if code == "o":
            stream.feed(data)
        elif code == "r":
            cols, rows = (int(x) for x in data.split("x"))
            screen.resize(rows, cols)
    return screen


ROOT = Path(__file__).resolve().parents[2]


def kubegate_cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "kubegate", *args], cwd=cwd, env=env, capture_output=True,
                          timeout=timeout)


class KubegateProcess:
    """``kubegate start -c kubegate.yaml`` as its own process in front of a sandbox cluster (context
    ``sandbox``), with the session test roles; ``extra`` is appended to the config's ``proxy:`` section."""

    def __init__(self, workdir: Path, sb: Any, extra_proxy: str = "") -> None:
        import sys

        import yaml

        from kubegate.demo import free_port

        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        upstream = yaml.safe_load(Path(sb.admin_kubeconfig).read_text())
        base = Path(sb.admin_kubeconfig).parent
        for section, key in (("clusters", "cluster"), ("users", "user")):
            for entry in upstream[section]:
                for name in ("certificate-authority", "client-certificate", "client-key"):
                    if name in entry[key] and not os.path.isabs(entry[key][name]):
                        entry[key][name] = str(base / entry[key][name])
        upstream["contexts"][0]["name"] = "sandbox"
        upstream["current-context"] = "sandbox"
        (workdir / "clusters.kubeconfig").write_text(yaml.safe_dump(upstream))
        write_roles(workdir / "roles")
        self.port, self.metrics_port = free_port(), free_port()
        (workdir / "kubegate.yaml").write_text(f"""
version: v1
state_dir: ./state
proxy:
  listen: 127.0.0.1:{self.port}
  public_addr: 127.0.0.1:{self.port}
  limits: {{shutdown_grace: 2s}}
{extra_proxy}
metrics: {{listen: 127.0.0.1:{self.metrics_port}}}
auth: {{roles_dir: ./roles}}
kubernetes_service:
  kubeconfig_files: [./clusters.kubeconfig]
""")
        init = kubegate_cli("ca", "init", "-c", "kubegate.yaml", cwd=workdir)
        assert init.returncode == 0, init.stderr
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "kubegate", "start", "-c", "kubegate.yaml"], cwd=workdir,
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._ready()

    def _ready(self, timeout: float = 60.0) -> None:
        import urllib.request

        from kubegate.listeners import held_by

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=2) as response:
                    if response.status == 200 and held_by(self.proc.pid, "127.0.0.1", self.metrics_port,
                                                          self.port):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("kubegate did not become ready")

    def kubeconfig(self, user: str, roles: str) -> Path:
        out = self.workdir / f"{user}.kubeconfig"
        made = kubegate_cli("kubeconfig", "-c", "kubegate.yaml", "--user", user, "--roles", roles, "--out", str(out),
                            cwd=self.workdir)
        assert made.returncode == 0, made.stderr
        return out

    def cli(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return kubegate_cli(*args, "-c", "kubegate.yaml", cwd=self.workdir)

    @property
    def sessions_dir(self) -> Path:
        return self.workdir / "state" / "sessions"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
