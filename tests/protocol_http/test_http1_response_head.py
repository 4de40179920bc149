"""The HTTP/1.1 codec's response head: exact bytes, and no header can smuggle a line break."""

from __future__ import annotations

import pytest

from proxy.protocol.events import ResponseHead, ServerLimits
from proxy.protocol.http1 import Http1ServerConnection

GET = b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n"


def test_head_bytes_with_the_codec_owning_framing_headers() -> None:
    codec = Http1ServerConnection(ServerLimits())
    codec.receive_data(GET)
    codec.send_response_head(ResponseHead(1, 200, [(b"content-type", b"application/json"), (b"connection", b"x"),
                                                   (b"audit-id", b"a")], content_length=2))
    codec.send_body(1, b"{}", end_stream=True)
    assert codec.data_to_send() == (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\naudit-id: a\r\n"
                                    b"content-length: 2\r\n\r\n{}")


@pytest.mark.parametrize("field", [(b"x-a", b"v\r\nset-cookie: s=1"), (b"x-a", b"v\nx: y"), (b"x-a", b"v\r"),
                                   (b"x-a\r\nx-b", b"v")])
def test_a_line_break_in_a_response_header_is_refused(field: tuple[bytes, bytes]) -> None:
    codec = Http1ServerConnection(ServerLimits())
    codec.receive_data(GET)
    with pytest.raises(ValueError, match="line break"):
        codec.send_response_head(ResponseHead(1, 200, [(b"content-type", b"text/plain"), field]))
