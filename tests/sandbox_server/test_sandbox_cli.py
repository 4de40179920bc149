"""`kubegate sandbox`: starts, writes an admin kubeconfig that kubectl uses, loads seed files, stops on SIGTERM."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_kubegate_sandbox_serves_until_sigterm(tmp_path: Path, kubectl_new: str) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: from-seed}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: seeded, namespace: from-seed}\ndata: {k: v}\n"
    )
    state = tmp_path / "state"
    tokens = tmp_path / "tokens.csv"
    tokens.write_text('cli-token,tok-user,uid-1,"system:masters"\n')
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kubegate",
            "sandbox",
            "--state",
            str(state),
            "--seed",
            str(seed),
            "--token-auth-file",
            str(tokens),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        assert lines[0].startswith("sandbox cluster listening on https://127.0.0.1:")
        kubeconfig = lines[1].removeprefix("admin kubeconfig: ").strip()
        assert Path(kubeconfig) == state / "admin.kubeconfig"
        out = subprocess.run(
            [
                kubectl_new,
                "--kubeconfig",
                kubeconfig,
                "get",
                "configmap",
                "seeded",
                "-n",
                "from-seed",
                "-o",
                "jsonpath={.data.k}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert (out.returncode, out.stdout) == (0, "v"), out.stderr
        server = lines[0].removeprefix("sandbox cluster listening on ").strip()
        by_token = subprocess.run(
            [
                kubectl_new,
                "--server",
                server,
                "--certificate-authority",
                str(state / "pki" / "ca.crt"),
                "--token",
                "cli-token",
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert (by_token.returncode, by_token.stdout) == (0, "tok-user"), by_token.stderr
        for key in (state / "pki" / "ca.key", state / "pki" / "server.key", Path(kubeconfig)):
            assert stat.S_IMODE(key.stat().st_mode) == 0o600
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_kubegate_sandbox_refuses_a_bad_seed_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    out = subprocess.run(
        [sys.executable, "-m", "kubegate", "sandbox", "--state", str(tmp_path / "s"), "--seed", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert str(bad) in out.stderr
