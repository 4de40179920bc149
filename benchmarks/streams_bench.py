"""Exec stdout throughput of the sandbox's stream server (sandbox.streams), one run.

    python -m benchmarks.streams_bench [--mb 256] [--json out.json]

Starts the sandbox in its own process (benchmarks.sandbox_proc, TLS), then execs
``head -c N /dev/zero`` in a pod and reads stdout to the end with:

* ``ws-raw``      a Python WebSocket v5 client (wsproto; fragments of a message are joined)
* ``spdy-raw``    a Python SPDY/3.1 client (proxy.protocol.spdy)
* ``kubectl-1.37`` (WebSocket v5) and ``kubectl-1.20`` (SPDY), stdout to /dev/null

and, the other way, pipes N bytes into ``wc -c`` with ``kubectl exec -i`` (``… stdin`` rows); it
reports MB/s (wall time from the upgrade to the end; kubectl rows: the whole command) and the sandbox process's CPU seconds per GB
(utime+stime from /proc, children excluded: the ``head`` process is not counted). The clients run on
the same machine, so MB/s is bounded by the slower side; CPU per GB is the sandbox's own cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.load import Endpoint, exec_stdout_spdy
from proxy.protocol import channels

ROOT = Path(__file__).resolve().parent.parent
POD_PATH = "/api/v1/namespaces/bench/pods/pod-0"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


async def ws_exec_stdout(ep: Endpoint, total_bytes: int) -> tuple[int, float]:
    import wsproto
    import wsproto.events as wse

    query = f"command=head&command=-c&command={total_bytes}&command=/dev/zero&stdout=true&stderr=true"
    reader, writer = await asyncio.open_connection(ep.host, ep.port, ssl=ep.ssl_context("http/1.1"),
                                                   server_hostname=ep.host, limit=1 << 20)
    handshake = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    writer.write(handshake.send(wse.Request(host=ep.authority, target=f"{POD_PATH}/exec?{query}",
                                            subprotocols=["v5.channel.k8s.io"])))
    head = b""
    while b"\r\n\r\n" not in head:
        head += await reader.read(65536)
    head, _, rest = head.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(f"exec refused: {head[:100]!r}")
    t0 = time.perf_counter()
    ws = channels.WebSocketClient(rest)
    received = 0
    try:
        messages = ws.receive_data(b"")
        while True:
            for message in messages:
                if message is None:
                    return received, time.perf_counter() - t0
                if isinstance(message, bytes) and message[:1] == b"\x01":
                    received += len(message) - 1
            data = await asyncio.wait_for(reader.read(1 << 20), 120)
            if not data:
                return received, time.perf_counter() - t0
            messages = ws.receive_data(data)
    finally:
        writer.close()


async def spdy_exec_stdout(ep: Endpoint, total_bytes: int) -> tuple[int, float]:
    return await exec_stdout_spdy(ep, POD_PATH, total_bytes)


def kubectl_exec(kubectl: str, kubeconfig: str, total_bytes: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        subprocess.run([kubectl, "--kubeconfig", kubeconfig, "exec", "-n", "bench", "pod-0", "--",
                        "head", "-c", str(total_bytes), "/dev/zero"], stdout=sink, check=True, timeout=600)
    return total_bytes, time.perf_counter() - t0


def kubectl_stdin(kubectl: str, kubeconfig: str, source: Path, total_bytes: int) -> tuple[int, float]:
    """Pipe ``total_bytes`` into ``wc -c`` in the pod (client -> process direction, as ``kubectl cp`` to a pod)."""
    t0 = time.perf_counter()
    with source.open("rb") as stdin:
        out = subprocess.run([kubectl, "--kubeconfig", kubeconfig, "exec", "-i", "-n", "bench", "pod-0", "--",
                              "wc", "-c"], stdin=stdin, capture_output=True, check=True, timeout=600).stdout
    return int(out.split()[0]), time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=256, help="MiB of stdout per run")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    total = args.mb * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="streams-bench-") as tmp:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.sandbox_proc", tmp, "--pods", "1"],
                                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            info = json.loads(proc.stdout.readline())
            ep = Endpoint("127.0.0.1", info["port"], info["ca_file"], info["cert_file"], info["key_file"])
            runs = {
                "ws-raw": lambda: asyncio.run(ws_exec_stdout(ep, total)),
                "spdy-raw": lambda: asyncio.run(spdy_exec_stdout(ep, total)),
                "kubectl-1.37": lambda: kubectl_exec(str(ROOT / ".tools/bin/kubectl-1.37"),
                                                     info["admin_kubeconfig"], total),
                "kubectl-1.20": lambda: kubectl_exec(str(ROOT / ".tools/bin/kubectl-1.20"),
                                                     info["admin_kubeconfig"], total),
            }
            source = Path(tmp) / "stdin.bin"
            with source.open("wb") as f:
                block = os.urandom(1 << 20)
                for _ in range(args.mb):
                    f.write(block)
            runs["kubectl-1.37 stdin"] = lambda: kubectl_stdin(str(ROOT / ".tools/bin/kubectl-1.37"),
                                                                info["admin_kubeconfig"], source, total)
            runs["kubectl-1.20 stdin"] = lambda: kubectl_stdin(str(ROOT / ".tools/bin/kubectl-1.20"),
                                                                info["admin_kubeconfig"], source, total)
            results = {}
            print(f"{'client':<19} {'MiB':>6} {'seconds':>8} {'MB/s':>8} {'sandbox CPU s/GB':>17}")
            for name, run in runs.items():
                before = cpu_seconds(info["pid"])
                received, seconds = run()
                cpu = cpu_seconds(info["pid"]) - before
                if received != total:
                    raise RuntimeError(f"{name}: received {received} of {total} bytes")
                mbps = received / seconds / 1e6
                cpu_per_gb = cpu / (received / 1e9)
                results[name] = {"bytes": received, "seconds": round(seconds, 3), "MB_per_s": round(mbps, 1),
                                 "sandbox_cpu_s_per_GB": round(cpu_per_gb, 2)}
                print(f"{name:<19} {args.mb:>6} {seconds:>8.2f} {mbps:>8.1f} {cpu_per_gb:>17.2f}")
        finally:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=30)
    print(json.dumps(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
