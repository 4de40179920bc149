"""The HTTP/2 and HTTP/1.1 server codecs, the live relay, the upstream HTTP/2 client, the metrics tallies,
the stream relay and its session taps (upgrade, channels, spdy) and the HTTP/1.1 fast path's modules
(fastpath, connection, upstream http1 and pool) are compiled (setup.py: Cython, from the same ``.py`` files, typed
by the ``.pxd`` beside each), the suite runs against that build, and the pure-Python modules — what runs
where nothing could be compiled, or with ``KUBEGATE_PURE_PYTHON=1`` — pass the same codec and fast-path
tests."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = ROOT / "proxy" / "protocol"
# setup.py compiles each module with a .pxd in these packages
PACKAGES = ("proxy", "proxy.protocol", "proxy.relay", "proxy.upstream")
COMPILED = sorted(f"{package}.{pxd.stem}" for package in PACKAGES for pxd in ROOT.joinpath(*package.split(".")).glob("*.pxd"))
PURE = os.environ.get("KUBEGATE_PURE_PYTHON") == "1"


def _can_compile() -> bool:
    """A C compiler and Python's headers: what the build needs besides Cython."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(compiler) is not None and Path(sysconfig.get_paths()["include"], "Python.h").is_file()


def test_the_codec_modules_are_the_compiled_ones_unless_pure_python_is_asked_for():
    assert COMPILED == [
        "proxy.connection", "proxy.fastpath", "proxy.protocol.audit_line", "proxy.protocol.channels",
        "proxy.protocol.h2fields", "proxy.protocol.h2wire", "proxy.protocol.http1", "proxy.protocol.http2",
        "proxy.protocol.relayed_head", "proxy.protocol.spdy", "proxy.relay.live", "proxy.tally", "proxy.upgrade", "proxy.upstream.http1",
        "proxy.upstream.http2", "proxy.upstream.pool",
    ]  # fmt: skip
    for name in COMPILED:
        module = importlib.import_module(name)
        path = Path(module.__file__)
        source = ROOT.joinpath(*name.split(".")).with_suffix(".py")
        if PURE:
            assert path == source
            continue
        if not _can_compile():
            pytest.skip("no C compiler or Python headers here: the pure-Python modules are what runs")
        assert path.name == source.stem + importlib.machinery.EXTENSION_SUFFIXES[0], (
            f"{path}: the compiled {name} is not in use: scripts/setup.sh builds it (scripts/build_compiled.py says why not)"
        )
        built = path.stat().st_mtime
        for given in (source, source.with_suffix(".pxd")):
            assert built >= given.stat().st_mtime, f"{path.name} is older than {given.name}"


def test_the_fast_path_classes_are_extension_types_that_take_no_other_attribute():
    """Compiled, the per-request objects of the HTTP/1.1 fast path hold only the attributes their ``.pxd``
    declares (an attribute added to the ``.py`` alone fails there, at its first assignment), keep the
    names callers read, and take weak references where the ``.py`` did."""
    import weakref

    from proxy.connection import ClientConnection
    from proxy.fastpath import CodecFastExchange, FastExchange, Plan
    from proxy.upstream.http1 import Http1Upstream
    from proxy.upstream.pool import ClusterPool

    if PURE or not Path(sys.modules[FastExchange.__module__].__file__).name.endswith(".so"):
        pytest.skip("the pure-Python modules are in use")
    for cls in (ClientConnection, FastExchange, CodecFastExchange, Plan, Http1Upstream, ClusterPool):
        assert "__dict__" not in dir(cls), cls
    upstream = Http1Upstream("c1", 1024)
    assert not upstream.closed and upstream.exchange is None and upstream.reading_paused is False
    with pytest.raises(AttributeError):
        upstream.unknown = 1  # type: ignore[attr-defined]
    weakref.ref(upstream)
    assert (FastExchange.kind, FastExchange.stream, FastExchange._ended) == (None, None, True)


def test_the_compiled_codec_classes_are_extension_types_with_the_python_interface():
    if PURE:
        pytest.skip("the pure-Python modules are in use")
    from proxy.protocol.h2fields import FieldDecoder
    from proxy.protocol.http2 import Http2ServerConnection

    if not Path(sys.modules[Http2ServerConnection.__module__].__file__).name.endswith(".so"):
        pytest.skip("not compiled here")
    assert "__dict__" not in dir(Http2ServerConnection)  # an extension type: attributes declared in the .pxd
    codec = Http2ServerConnection()
    assert codec.http_version == "2" and not codec.must_close and codec.held_bytes == 0
    decoder = FieldDecoder(100)
    assert decoder.max_header_list_size == 100 and decoder.max_allowed_table_size == 4096


def test_the_compiled_http1_codec_keeps_its_python_interface():
    """httptools calls the parser callbacks by name, callers read properties and pass ``end_stream`` by
    keyword: all of it works on the extension type as on the ``.py`` class."""
    from proxy.protocol.events import RequestEnd, RequestHead, ResponseHead
    from proxy.protocol.http1 import Http1ServerConnection

    if not PURE and Path(sys.modules[Http1ServerConnection.__module__].__file__).name.endswith(".so"):
        assert "__dict__" not in dir(Http1ServerConnection)  # an extension type: attributes in the .pxd
    codec = Http1ServerConnection()
    assert codec.http_version == "1.1" and codec.idle and not codec.must_close and not codec.upgraded
    events = codec.receive_data(b"GET /a HTTP/1.1\r\nHost: k\r\n\r\nGET /b HTTP/1.1\r\nHost: k\r\n\r\n")
    assert [(type(e), e.stream_id) for e in events] == [(RequestHead, 1), (RequestEnd, 1), (RequestHead, 3), (RequestEnd, 3)]
    assert events[0].target == "/a" and events[0].authority == "k" and not codec.idle
    codec.send_response_head(ResponseHead(3, 200, [(b"x", b"1")]), end_stream=True)  # held: /a is unanswered
    assert codec.held_bytes > 0 and codec.data_to_send() == b""
    assert codec.takes_relayed_head(1)
    codec.send_relayed_head(1, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", 2)
    codec.send_body(1, b"ok", end_stream=True)
    assert codec.data_to_send() == (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                                    b"HTTP/1.1 200 OK\r\nx: 1\r\ncontent-length: 0\r\n\r\n")
    assert codec.idle and codec.held_bytes == 0 and not codec.must_close


@pytest.mark.skipif(PURE, reason="this run already uses the pure-Python modules")
def test_the_codec_tests_pass_on_the_pure_python_modules():
    """The codec's own tests (frames, hostile input, HPACK against hpack's decoder, response blocks)
    the relayed-head rules and HTTP/2 blocks, the audit log's fast-path line, the upstream HTTP/1.1 and HTTP/2 connections',
    the metrics tallies' and the client connection's units, the WebSocket and SPDY session taps' and the
    SPDY codec's, the stream relay's read buffer and the relay with hostile upgraded bytes, and the
    HTTP/1.1 and HTTP/2 fast path end to end once more, in a process that imports the ``.py`` files."""
    env = {**os.environ, "KUBEGATE_PURE_PYTHON": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_XDIST_TESTRUNUID", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", "-p", "no:randomly",
         str(Path(__file__).parent), str(ROOT / "tests" / "proxy" / "test_proxy_relayable_heads.py"),
         str(ROOT / "tests" / "proxy" / "test_proxy_relayed_block.py"),
         str(ROOT / "tests" / "proxy" / "test_audit_log.py"), str(ROOT / "tests" / "proxy" / "test_proxy_upstream_units.py"),
         str(ROOT / "tests" / "proxy" / "test_proxy_upstream_h2_units.py"),
         str(ROOT / "tests" / "proxy" / "test_proxy_metrics_tally.py"),
         str(ROOT / "tests" / "proxy" / "test_connection_timers.py"), str(ROOT / "tests" / "proxy" / "test_proxy_fast_path.py"),
         str(ROOT / "tests" / "protocol_spdy" / "test_channels_codec.py"),
         str(ROOT / "tests" / "protocol_spdy" / "test_tap_hostile.py"),
         str(ROOT / "tests" / "protocol_spdy" / "test_spdy_codec.py"),
         str(ROOT / "tests" / "proxy" / "test_proxy_session_tap_hostile.py"),
         str(ROOT / "tests" / "proxy" / "test_relay_read_buffer.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout
