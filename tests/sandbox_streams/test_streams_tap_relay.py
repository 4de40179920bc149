"""The audit taps on a byte relay, as the proxy uses them: kubectl ⇄ relay ⇄ stream harness. The relay
forwards bytes untouched and feeds them to SpdyTap / ChannelTap, which must report the streams, the
byte counts and the exit code for kubectl 1.37 (WebSocket) and 1.20 (SPDY)."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from pathlib import Path

import pytest

from proxy.protocol.channels import ChannelTap, SessionTap
from proxy.protocol.spdy import SpdyTap

pytestmark = pytest.mark.e2e


class TappingRelay:
    """Loopback TCP relay in its own thread; one tap per connection once the 101 is seen."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.taps: list[SpdyTap | ChannelTap] = []
        self.sessions: list[SessionTap] = []
        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        tasks = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.run_until_complete(server.wait_closed())
        self._loop.close()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        u_reader, u_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        state: dict[str, object] = {"tap": None, "head": b"", "early_client": []}

        def on_client(data: bytes) -> None:
            tap = state["tap"]
            if tap is None:
                state["early_client"].append(data)  # request head (+ maybe first frames)
            else:
                tap.feed_client(data)

        def on_server(data: bytes) -> None:
            if state["tap"] is not None:
                state["tap"].feed_server(data)
                return
            state["head"] += data
            head, sep, rest = state["head"].partition(b"\r\n\r\n")
            if not sep:
                return
            headers = {k.strip().lower(): v.strip() for k, _, v in
                       (line.decode().partition(":") for line in head.split(b"\r\n")[1:])}
            if not head.startswith(b"HTTP/1.1 101"):
                state["tap"] = False
                return
            session = SessionTap.from_response_headers([(k.encode(), v.encode()) for k, v in headers.items()])
            assert session is not None
            self.sessions.append(session)
            tap = session.tap
            self.taps.append(tap)
            state["tap"] = tap
            request = b"".join(state["early_client"])
            tap.feed_client(request.partition(b"\r\n\r\n")[2])
            tap.feed_server(rest)

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, observe) -> None:
            try:
                while data := await reader.read(65536):
                    observe(data)
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        try:
            await asyncio.gather(pump(c_reader, u_writer, on_client), pump(u_reader, c_writer, on_server))
        finally:
            for writer in (c_writer, u_writer):
                writer.close()


@pytest.fixture
def relay_kubeconfig(harness, tmp_path: Path):
    relay = TappingRelay(harness.port)
    kubeconfig = harness.kubeconfig(tmp_path / "relay.kubeconfig")
    kubeconfig.write_text(kubeconfig.read_text().replace(f":{harness.port}", f":{relay.port}"))
    yield relay, str(kubeconfig)
    relay.stop()


def test_taps_report_streams_bytes_and_exit_code(kubectl, relay_kubeconfig):
    relay, kubeconfig = relay_kubeconfig
    result = subprocess.run([kubectl, "--kubeconfig", kubeconfig, "exec", "-i", "web", "--", "sh", "-c",
                             "cat; head -c 100000 /dev/zero; exit 7"], input=b"12345", capture_output=True,
                            timeout=30)
    assert result.returncode == 7
    assert len(result.stdout) == 100_005
    (tap,) = relay.taps
    assert not tap.failed, tap.failure
    assert tap.exit_code() == 7
    if isinstance(tap, ChannelTap):
        assert 0 in tap.closed_channels  # v5 stdin close
    (session,) = relay.sessions
    summary = session.summary()
    assert summary["exit_code"] == 7
    assert summary["stream_bytes"]["stdin"]["from_client"] == 5
    assert summary["stream_bytes"]["stdout"]["from_server"] == 100_005
    assert summary["stream_protocol"] in ("v5.channel.k8s.io", "v4.channel.k8s.io")
    assert "tap_failed" not in summary


def test_taps_count_port_forward_bytes(kubectl, relay_kubeconfig):
    import re
    import socket

    relay, kubeconfig = relay_kubeconfig
    proc = subprocess.Popen([kubectl, "--kubeconfig", kubeconfig, "port-forward", "pod/web", ":8080"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        match = re.search(r"127\.0\.0\.1:(\d+) -> 8080", proc.stdout.readline().decode())
        assert match
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=10) as sock:
            sock.sendall(b"p" * 20_000)
            received = 0
            while received < 20_000:
                chunk = sock.recv(65536)
                assert chunk
                received += len(chunk)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    (session,) = relay.sessions
    summary = session.summary()
    assert "tap_failed" not in summary, summary
    assert summary["stream_bytes"]["data"] == {"from_client": 20_000, "from_server": 20_000}
    assert summary["exit_code"] is None
