"""``relayed_head.relayed_block``: an upstream's HTTP/1.1 answer head that the fast path relays to an
HTTP/2 client, encoded as an HPACK block in one pass. It must be byte for byte what the two steps it
replaces give (``relayed_fields``, then the codec's ``encode_response_block``), and decode (with the
``hpack`` library, as a client would) to the fields the parsed path would have sent."""

from __future__ import annotations

import random

import pytest
from hpack import Decoder

from proxy.protocol.h2wire import encode_response_block
from proxy.protocol.relayed_head import relayed_block, relayed_fields
from tests.proxy.test_proxy_relayable_heads import _LINES, APISERVER, NGINX


def reference(data: bytes, request_id: bytes) -> tuple[bytes, int, int, bytes] | None:
    taken = relayed_fields(data, request_id)
    if taken is None:
        return None
    fields, status, length, body = taken
    return encode_response_block(status, fields, length), status, length, body


@pytest.mark.parametrize("head", [APISERVER, NGINX], ids=["api server", "nginx"])
def test_a_real_head_is_the_block_the_two_steps_give_and_decodes_to_its_fields(head):
    body = b'{"kind":"Pod"}'
    got = relayed_block(head + body, b"7f3a")
    assert got == reference(head + body, b"7f3a")
    block, status, length, rest = got
    assert (status, rest) == (200, body[: len(rest)])
    fields, *_ = relayed_fields(head + body, b"7f3a")
    decoded = Decoder().decode(block, raw=True)
    assert decoded == [(b":status", b"200"), *fields]
    assert (b"content-length", str(length).encode()) in decoded


def test_every_head_of_the_corpus_gives_the_same_block_or_the_same_refusal():
    """Random heads from the relayable-head tests' lines, with values of every length class (HPACK's
    string length takes one byte below 127, more from 127 on, and a name outside the static table is
    written out), statuses indexed in the static table and not."""
    rng = random.Random(23)
    long_values = [b"X-Long: " + b"v" * n for n in (126, 127, 128, 254, 255, 300, 16_500)]
    names = [b"X-Custom-%d: y" % n for n in range(5)] + [b"X-" + b"n" * 130 + b": long name"]
    statuses = [b"200 OK", b"201 Created", b"404 Not Found", b"418 Teapot", b"500 X", b"599 Y"]
    same = refused = 0
    for _ in range(3000):
        lines = rng.sample(_LINES + long_values + names, rng.randint(0, 9))
        if rng.random() < 0.8:
            lines.insert(rng.randint(0, len(lines)), b"Content-Length: 14")
        head = b"HTTP/1.1 " + rng.choice(statuses) + b"".join(b"\r\n" + line for line in lines) + b"\r\n\r\n"
        data = head + b'{"kind":"Pod"}'[: rng.randint(0, 14)]
        request_id = b"%x" % rng.getrandbits(40)
        expected = reference(data, request_id)
        assert relayed_block(data, request_id) == expected, data
        same += expected is not None
        refused += expected is None
        if expected is not None:
            assert Decoder().decode(expected[0], raw=True)[-1][0] in (b"x-kubegate-request-id", b"content-length")
    assert same > 300 and refused > 300  # the corpus reaches both answers


@pytest.mark.parametrize("line", [b" folded: x", b"NoColon", b":empty-name"])
def test_a_head_with_a_line_that_is_not_a_field_is_left_to_the_parsed_path(line):
    assert relayed_block(APISERVER.replace(b"Cache-Control: no-cache, private", line), b"r-1") is None
