"""The HTTP/2 and HTTP/1.1 server codecs are compiled (setup.py: Cython, from the same ``.py`` files,
typed by the ``.pxd`` beside each), the suite runs against that build, and the pure-Python modules —
what runs where nothing could be compiled, or with ``KUBEGATE_PURE_PYTHON=1`` — pass the same codec
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
COMPILED = sorted(pxd.stem for pxd in PROTOCOL.glob("*.pxd"))  # setup.py compiles each of them
PURE = os.environ.get("KUBEGATE_PURE_PYTHON") == "1"


def _can_compile() -> bool:
    """A C compiler and Python's headers: what the build needs besides Cython."""
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(compiler) is not None and Path(sysconfig.get_paths()["include"], "Python.h").is_file()


def test_the_codec_modules_are_the_compiled_ones_unless_pure_python_is_asked_for():
    assert COMPILED == ["audit_line", "h2fields", "h2wire", "http1", "http2", "relayed_head"]
    for name in COMPILED:
        module = importlib.import_module(f"proxy.protocol.{name}")
        path = Path(module.__file__)
        if PURE:
            assert path == PROTOCOL / f"{name}.py"
            continue
        if not _can_compile():
            pytest.skip("no C compiler or Python headers here: the pure-Python modules are what runs")
        assert path.name == name + importlib.machinery.EXTENSION_SUFFIXES[0], (
            f"{path}: the compiled {name} is not in use: scripts/setup.sh builds it (scripts/build_compiled.py says why not)"
        )
        built = path.stat().st_mtime
        for source in (PROTOCOL / f"{name}.py", PROTOCOL / f"{name}.pxd"):
            assert built >= source.stat().st_mtime, f"{path.name} is older than {source.name}"


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
    the relayed-head rules and the audit log's fast-path line once more, in a process that imports the
    ``.py`` files."""
    env = {**os.environ, "KUBEGATE_PURE_PYTHON": "1"}
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_XDIST_TESTRUNUID", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", "-p", "no:randomly",
         str(Path(__file__).parent), str(ROOT / "tests" / "proxy" / "test_proxy_relayable_heads.py"),
         str(ROOT / "tests" / "proxy" / "test_audit_log.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout
