"""The README's "Real use" section, run verbatim, top to bottom, against the sandbox.

The two `sh` code blocks of the section are extracted from README.md and run by bash as written. What
the README assumes of the reader's machine is set up around them, and nothing else:

- the working directory is "the clone": `.venv` and `examples` of this checkout (symlinks);
- `~/.kube/config` (a fresh HOME) holds the cluster as kubeadm writes it: context
  `kubernetes-admin@kubernetes`, cluster `kubernetes`, user `kubernetes-admin` — here the sandbox API
  server with its admin (system:masters) credentials, the operator's own;
- `kubectl` on PATH: kubectl 1.37 for the first run of the second block, kubectl 1.20 for a second run.

The first block ends in `kubegate start` (it runs until stopped): it runs in the background, in its own
process group, and the test waits for `/readyz` on the README's metrics address, then runs the second
block (in a shell where the README's `. .venv/bin/activate` took effect: `.venv/bin` first on PATH).
Later blocks of the section are references with placeholders (`ID`): their lines without a placeholder
run verbatim too (e.g. `kubegate sessions ls`). The README's fixed ports (3026, 3081) must be free on this
machine; the test waits for that.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PORTS = (3026, 3081)  # the README's proxy and metrics ports


def real_use_blocks() -> list[str]:
    """The ```sh blocks of README.md's "## Real use" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Real use\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


def kubeadm_kubeconfig(source: Path) -> dict:
    """The sandbox admin kubeconfig reshaped as kubeadm writes admin.conf (names), paths made absolute."""
    doc = yaml.safe_load(source.read_text())
    [cluster], [user] = doc["clusters"], doc["users"]
    for entry in (cluster["cluster"], user["user"]):
        for field in ("certificate-authority", "client-certificate", "client-key"):
            if field in entry and not os.path.isabs(entry[field]):
                entry[field] = str(source.parent / entry[field])
    cluster["name"], user["name"] = "kubernetes", "kubernetes-admin"
    doc["contexts"] = [{"name": "kubernetes-admin@kubernetes",
                        "context": {"cluster": "kubernetes", "user": "kubernetes-admin"}}]
    doc["current-context"] = "kubernetes-admin@kubernetes"
    return doc


def wait_for_free_ports(timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        busy = []
        for port in PORTS:
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("0.0.0.0", port))
                except OSError:
                    busy.append(port)
        if not busy:
            return
        assert time.monotonic() < deadline, f"the README's ports {busy} are in use on this machine"
        time.sleep(1)


def wait_ready(proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the first block stopped (exit {proc.returncode}):\n{log.read_text()}"
        try:
            with urllib.request.urlopen("http://127.0.0.1:3081/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"kubegate did not become ready:\n{log.read_text()}")


@pytest.mark.e2e
@pytest.mark.timeout(300)  # may first wait for the README's fixed ports
def test_the_readme_real_use_section_works_as_written(tmp_path, sandbox_cluster, kubectl_new, kubectl_old):
    first, second, *reference = real_use_blocks()
    assert first.rstrip().splitlines()[-1].startswith("kubegate start -c kubegate.yaml")

    clone = tmp_path / "clone"
    clone.mkdir()
    for name in (".venv", "examples"):
        (clone / name).symlink_to(ROOT / name)
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text(yaml.safe_dump(kubeadm_kubeconfig(Path(sandbox_cluster.admin_kubeconfig))))
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "kubectl").symlink_to(kubectl_new)
    env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "KUBECONFIG", "VIRTUAL_ENV")}
    env.update(HOME=str(home), PATH=f"{tools}:{os.environ['PATH']}")

    wait_for_free_ports()
    log = tmp_path / "first-block.log"
    with open(log, "wb") as out:
        first_block = subprocess.Popen(["bash", "-e", "-c", first], cwd=clone, env=env, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(first_block, log)
        printed = log.read_text()
        assert "kubegate.dev/context=kubernetes-admin@kubernetes" in printed  # clusters ls
        assert "clusterrolebinding.rbac.authorization.k8s.io/kubegate-impersonator created" in printed  # setup

        activated = {**env, "PATH": f"{clone / '.venv' / 'bin'}:{env['PATH']}"}
        for kubectl in (kubectl_new, kubectl_old):
            (tools / "kubectl").unlink()
            (tools / "kubectl").symlink_to(kubectl)
            done = subprocess.run(["bash", "-e", "-c", second], cwd=clone, env=activated, capture_output=True,
                                  text=True, timeout=180)
            assert done.returncode == 0, f"{kubectl}:\n{done.stdout}\n{done.stderr}"
            lines = done.stdout.splitlines()
            assert "contexts: kubernetes;" in done.stdout  # kubegate kubeconfig's summary line
            table = lines[lines.index(next(line for line in lines if line.startswith("NAME "))):]
            assert {line.split()[0] for line in table[1:]} >= {"web-1", "web-2", "db-0"}, done.stdout

        for block in reference:
            for line in block.splitlines():
                command = line.split("#", 1)[0].strip()
                if not command or re.search(r"\bID\b", command):
                    continue
                done = subprocess.run(["bash", "-e", "-c", command], cwd=clone, env=activated,
                                      capture_output=True, text=True, timeout=120)
                assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"

        # dev-access never reads secrets: kubegate refuses before the cluster is asked
        secrets = subprocess.run([kubectl_new, "--kubeconfig", "alice.kubeconfig", "get", "secrets", "-n", "dev"],
                                 cwd=clone, capture_output=True, text=True, timeout=60)
        assert secrets.returncode != 0 and "forbidden" in secrets.stderr.lower()
        # Workers fold their request tallies into the shared metrics once a second (proxy/metrics.py): a
        # scrape sees them at most one sweep late.
        deadline = time.monotonic() + 10
        while True:
            with urllib.request.urlopen("http://127.0.0.1:3081/metrics", timeout=5) as response:
                metrics = response.read().decode()
            if 'kubegate_requests_total{cluster="kubernetes"' in metrics or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert 'kubegate_requests_total{cluster="kubernetes"' in metrics
        assert 'kubegate_workers{state="ready"} 2.0' in metrics
    finally:
        os.killpg(first_block.pid, signal.SIGTERM)  # bash and the kubegate it started: its own group
        code = first_block.wait(60)
    assert code == 0, log.read_text()
    audit = (clone / "state" / "audit.log").read_text()
    assert '"alice"' in audit and '"kubernetes"' in audit
