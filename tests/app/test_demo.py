"""`kubegate demo`: the printed kubectl line works through the proxy; Ctrl-C stops and cleans up."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _start_demo(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], list[str], threading.Event]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "kubegate", "demo", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    lines: list[str] = []
    ready = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "get pods -A" in line:
                ready.set()
        ready.set()

    threading.Thread(target=reader, daemon=True).start()
    return proc, lines, ready


def _stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@pytest.mark.e2e
def test_demo_prints_a_kubectl_line_that_works_and_cleans_up_on_ctrl_c(tmp_path, kubectl_new):
    proc, lines, ready = _start_demo(tmp_path)
    try:
        assert ready.wait(60), "".join(lines)
        assert proc.poll() is None, "".join(lines)
        assert any("get pods -A" in line for line in lines), "".join(lines)
        command_line = next(line for line in lines if "get pods -A" in line)
        argv = shlex.split(command_line)
        assert argv[0].endswith("kubectl") and argv[1] == "--kubeconfig" and argv[3:] == ["get", "pods", "-A"]
        state_dir = Path(re.search(r"state in (\S+) \(temporary\)", "".join(lines)).group(1))
        assert state_dir.is_dir()
        result = subprocess.run([kubectl_new, *argv[1:]], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
        assert len(result.stdout.splitlines()) > 1
        assert "default" in result.stdout
        # exec runs a real local process: the demo says so next to its kubectl line, and the process runs
        # in the pod's own directory inside the demo's state, not in a shared /tmp directory
        deadline = time.monotonic() + 30
        while "Press Ctrl-C" not in "".join(lines) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "run the command as a real process\n  on THIS machine" in "".join(lines)
        pwd = subprocess.run([kubectl_new, *argv[1:3], "exec", "-n", "default", "hello", "--", "pwd"],
                             capture_output=True, text=True, timeout=60)
        assert pwd.returncode == 0, pwd.stderr
        assert pwd.stdout.strip() == str(state_dir / "sandbox" / "pods" / "default" / "hello")
    finally:
        code = _stop(proc)
    assert code == 0, "".join(lines)
    assert "stopped" in "".join(lines)
    assert not state_dir.exists()  # temporary state removed
    assert not (tmp_path / "kubegate-sandbox-pods").exists()  # nothing left in the demo's TMPDIR


@pytest.mark.e2e
def test_demo_with_state_keeps_it_and_audits_requests(tmp_path, kubectl_new):
    state_dir = tmp_path / "kept"
    proc, lines, ready = _start_demo(tmp_path, "--state", str(state_dir), "--role", "viewer")
    try:
        assert ready.wait(60), "".join(lines)
        kubeconfig = state_dir / "demo.kubeconfig"
        pods = subprocess.run([kubectl_new, "--kubeconfig", str(kubeconfig), "get", "pods", "-n", "default"],
                              capture_output=True, text=True, timeout=60)
        assert pods.returncode == 0, pods.stderr
        secrets = subprocess.run([kubectl_new, "--kubeconfig", str(kubeconfig), "get", "secrets", "-n",
                                  "default"], capture_output=True, text=True, timeout=60)
        assert secrets.returncode != 0
        assert "forbidden" in secrets.stderr.lower()
    finally:
        code = _stop(proc)
    assert code == 0, "".join(lines)
    assert (state_dir / "ca" / "ca.pem").exists() and (state_dir / "roles" / "viewer.yaml").exists()
    audit = (state_dir / "audit.log").read_text()
    assert '"demo"' in audit


def test_demo_on_a_busy_port_fails_cleanly(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc, lines, ready = _start_demo(tmp_path, "--port", str(port))
        code = proc.wait(60)
        ready.wait(5)
    assert code == 1
    assert "kubegate demo: cannot start:" in "".join(lines) and "Address already in use" in "".join(lines)
    assert not list(tmp_path.glob("kubegate-demo-*"))  # the temporary state is gone


def test_demo_takes_settings_from_a_config_file_but_keeps_its_own_addresses(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("proxy: {listen: '0.0.0.0:1', limits: {header_timeout: 3s}}\nlog: {level: debug}\n")
    state_dir = tmp_path / "kept"
    proc, lines, ready = _start_demo(tmp_path, "-c", str(config), "--state", str(state_dir))
    try:
        assert ready.wait(60), "".join(lines)
        effective = yaml.safe_load((state_dir / "kubegate.yaml").read_text())
    finally:
        assert _stop(proc) == 0, "".join(lines)
    assert effective["proxy"]["limits"]["header_timeout"] == "3s"
    assert effective["proxy"]["limits"]["shutdown_grace"] == "5s"  # the demo's own value stays
    assert effective["proxy"]["listen"].startswith("127.0.0.1:")  # the demo owns its addresses
    assert effective["log"]["level"] == "debug"


def test_demo_with_a_bad_config_file_names_the_problem(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("log: {level: chatty}\n")
    proc, lines, ready = _start_demo(tmp_path, "-c", str(config))
    assert proc.wait(60) == 1
    ready.wait(5)
    assert f'{config}: log.level: "chatty" is not one of' in "".join(lines)
