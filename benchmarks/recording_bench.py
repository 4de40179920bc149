"""The cost of session recording on the exec relay: kubegate's CPU with recording on vs off, one run.

    python -m benchmarks.recording_bench [--mb 64] [--rounds 3] [--json out.json]

Starts the benchmark sandbox (``benchmarks.sandbox_proc``, own process) and ``kubegate start`` (own
process) with two roles: ``rec-off`` (``record_session: {default: off}``) and ``rec-on``
(``record_session: {non_interactive: best_effort}``: the exec's stdout becomes asciicast ``o`` events in
``<state_dir>/sessions``). A user of each execs a command writing ``--mb`` MiB of terminal-like text
(``yes`` lines) to stdout over WebSocket ``v5.channel.k8s.io``, alternately, ``--rounds`` times each.
The figure is kubegate's CPU seconds per GB relayed (utime+stime of its process from /proc, which
includes the recording writer thread), and the ratio on ÷ off of the medians: CPU time, not wall time,
because the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POD_PATH = "/api/v1/namespaces/bench/pods/pod-0"
ROLE = """kind: role
version: v8
metadata: {{name: {name}}}
spec:
  options:
    record_session: {options}
  allow:
    kubernetes_labels: {{'*': '*'}}
    kubernetes_resources: [{{kind: pods, api_group: '', namespace: '*', name: '*', verbs: ['*']}}]
    kubernetes_groups: ['system:masters']
"""


def text_command(nbytes: int) -> list[str]:
    return ["sh", "-c", f"yes 'drwxr-xr-x 2 root root 4096 Dec  6 22:50 kubegate-recording-benchmark' | head -c {nbytes}"]


def run(mb: int, rounds: int) -> dict:
    from benchmarks.harness import cpu_seconds, wait_ready
    from benchmarks.load import Endpoint, exec_stdout, install_uvloop
    from certs.ca import CertificateAuthority
    from kubegate.demo import free_port, prepare_demo_state

    install_uvloop()
    workdir = Path(tempfile.mkdtemp(prefix="kubegate-recbench-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    sandbox = subprocess.Popen([sys.executable, "-m", "benchmarks.sandbox_proc", str(workdir / "sandbox"), "--pods", "1"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    proxy = None
    try:
        assert sandbox.stdout is not None
        info = json.loads(sandbox.stdout.readline())
        proxy_port, metrics_port = free_port(), free_port()
        state = prepare_demo_state(workdir / "state", info["admin_kubeconfig"], proxy_port=proxy_port,
                                   metrics_port=metrics_port, log_level="warning")
        (state.roles_dir / "rec-off.yaml").write_text(ROLE.format(name="rec-off", options="{default: 'off'}"))
        (state.roles_dir / "rec-on.yaml").write_text(ROLE.format(name="rec-on", options="{non_interactive: best_effort}"))
        ca, _ = CertificateAuthority.load_or_create(state.state_dir / "ca")
        endpoints = {}
        for role in ("rec-off", "rec-on"):
            issued = ca.issue_user_certificate(f"user-{role}", [role], timedelta(hours=1))
            cert, key = workdir / f"{role}.pem", workdir / f"{role}-key.pem"
            cert.write_bytes(issued.cert_pem)
            key.write_bytes(issued.key_pem or b"")
            endpoints[role] = Endpoint("127.0.0.1", proxy_port, str(state.ca_file), str(cert), str(key),
                                       prefix=f"/k8s/clusters/{state.cluster_name}")
        proxy = subprocess.Popen([sys.executable, "-m", "kubegate", "start", "-c", str(state.config_path)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        wait_ready(metrics_port, proxy)
        nbytes = mb * 1024 * 1024
        samples: dict[str, list[float]] = {"rec-off": [], "rec-on": []}
        seconds: dict[str, list[float]] = {"rec-off": [], "rec-on": []}

        async def one(role: str) -> None:
            cpu0 = cpu_seconds(proxy.pid)
            received, secs = await exec_stdout(endpoints[role], POD_PATH, nbytes, text_command(nbytes))
            time.sleep(0.5)  # the recording's last batch and fsync happen after the session ends
            cpu = cpu_seconds(proxy.pid) - cpu0
            if received != nbytes:
                raise RuntimeError(f"{role}: received {received} of {nbytes} bytes")
            samples[role].append(cpu / received * 1e9)
            seconds[role].append(secs)

        async def main() -> None:
            await one("rec-off")  # warm-up (connections, imports)
            samples["rec-off"].clear()
            seconds["rec-off"].clear()
            for _ in range(rounds):
                await one("rec-off")
                await one("rec-on")

        asyncio.run(main())
        recorded = sum(p.stat().st_size for p in (state.state_dir / "sessions").glob("*.cast"))
        off, on = statistics.median(samples["rec-off"]), statistics.median(samples["rec-on"])
        return {"mb": mb, "rounds": rounds, "cpu_seconds_per_gb": {"off": round(off, 3), "on": round(on, 3)},
                "samples": {k: [round(v, 3) for v in vals] for k, vals in samples.items()},
                "wall_seconds": {k: [round(v, 3) for v in vals] for k, vals in seconds.items()},
                # CPU time is read in clock ticks (10 ms): a tiny run may measure none on either side
                "ratio_on_to_off": round(on / off, 3) if off > 0 and on > 0 else None, "recorded_bytes": recorded}
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait(30)
        if sandbox.stdin is not None:
            sandbox.stdin.close()
        sandbox.wait(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recording_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=64, help="MiB of stdout per exec (default 64)")
    parser.add_argument("--rounds", type=int, default=3, help="execs per setting (default 3)")
    parser.add_argument("--json", metavar="FILE", help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args.mb, args.rounds)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
