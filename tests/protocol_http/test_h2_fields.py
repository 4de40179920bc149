"""The codec's HPACK block decoder (``proxy.protocol.h2fields``) gives exactly what ``hpack.Decoder``
gives: the same fields, the same dynamic table after each block, and an error wherever hpack raises
one — on blocks hpack's own encoder writes (Huffman or not, never-indexed fields, table size updates,
evictions, multi-byte integers), on the RFC 7541 examples, and on hundreds of corrupted blocks."""

from __future__ import annotations

import random

import hpack
import pytest
from hpack.exceptions import HPACKError, InvalidTableSizeError, OversizedHeaderListError
from hpack.struct import NeverIndexedHeaderTuple

from proxy.protocol.h2fields import FieldDecoder

LIMIT = 64 * 1024


def both(blocks: list[bytes], limit: int = LIMIT, table: int = 4096) -> list:
    """Decode ``blocks`` in order with both decoders (each keeps its table across blocks); each
    block's outcome must be the same: the fields, or an error from both (and then no more blocks)."""
    ours = FieldDecoder(limit, table)
    theirs = hpack.Decoder(max_header_list_size=limit)
    theirs.max_allowed_table_size = table
    outcomes = []
    for block in blocks:
        try:
            expected = [tuple(field) for field in theirs.decode(block, raw=True)]
        except HPACKError as exc:
            with pytest.raises(HPACKError):
                ours.decode(block)
            outcomes.append(type(exc))
            break
        got = ours.decode(block)
        assert got == expected, block
        assert list(ours.table.dynamic_entries) == list(theirs.header_table.dynamic_entries)
        assert ours.table.maxsize == theirs.header_table.maxsize
        outcomes.append(got)
    return outcomes


def encoded(rng: random.Random, encoder: hpack.Encoder) -> bytes:
    """One header list of kubectl-like and random fields, encoded by hpack (sometimes with Huffman,
    sensitive fields, long values, or a table size change)."""
    fields: list = [(":method", rng.choice(["GET", "POST", "PATCH"])), (":scheme", "https"),
                    (":authority", rng.choice(["k", "127.0.0.1:6443"])),
                    (":path", f"/api/v1/namespaces/n{rng.randrange(50)}/pods/p{rng.randrange(500)}")]  # fmt: skip
    for _ in range(rng.randrange(8)):
        name = rng.choice(["accept", "user-agent", "x-custom", "cookie", f"x-{rng.randrange(100)}"])
        value = "".join(rng.choice("abc/;=-~\\{}\x7f") for _ in range(rng.choice([0, 3, 40, 200, 900])))
        if rng.random() < 0.1:
            fields.append(NeverIndexedHeaderTuple(name, value))
        else:
            fields.append((name, value))
    if rng.random() < 0.05:
        encoder.header_table_size = rng.choice([0, 256, 4096])
    return encoder.encode(fields, huffman=rng.random() < 0.7)


def test_blocks_hpack_writes_decode_the_same_with_the_table_kept_in_step() -> None:
    rng = random.Random(7)
    for _ in range(10):
        encoder = hpack.Encoder()
        blocks = [encoded(rng, encoder) for _ in range(50)]
        outcomes = both(blocks)
        assert len(outcomes) == 50 and all(isinstance(o, list) for o in outcomes)


def test_rfc_7541_request_examples_with_huffman_coding() -> None:
    """RFC 7541 Appendix C.4: three requests on one connection."""
    blocks = [bytes.fromhex(h) for h in ("828684418cf1e3c2e5f23a6ba0ab90f4ff",
                                         "828684be5886a8eb10649cbf",
                                         "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf")]  # fmt: skip
    c41, c42, c43 = both(blocks)
    assert c41 == [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"www.example.com")]
    assert c42[-1] == (b"cache-control", b"no-cache")
    assert c43[-1] == (b"custom-key", b"custom-value")


def test_rfc_7541_response_examples_evict_from_a_256_byte_table() -> None:
    """RFC 7541 Appendix C.5: responses with a 256-byte table, entries evicted along the way."""
    blocks = [bytes.fromhex(h) for h in (
        "4803333032580770726976617465611d4d6f6e2c203231204f637420323031332032303a31333a323120474d54"
        "6e1768747470733a2f2f7777772e6578616d706c652e636f6d",
        "4803333037c1c0bf",
        "88c1611d4d6f6e2c203231204f637420323031332032303a31333a323220474d54c05a04677a69707738666f6f"
        "3d4153444a4b48514b425a584f5157454f50495541585157454f49553b206d61782d6167653d333630303b2076"
        "657273696f6e3d31")]  # fmt: skip
    ours = FieldDecoder(LIMIT)
    ours.table.maxsize = 256
    theirs = hpack.Decoder()
    theirs.header_table_size = 256
    for block in blocks:
        assert ours.decode(block) == [tuple(f) for f in theirs.decode(block, raw=True)]
        assert list(ours.table.dynamic_entries) == list(theirs.header_table.dynamic_entries)
    assert ours.table.dynamic_entries[0][0] == b"set-cookie"


@pytest.mark.parametrize(
    ("block", "error"),
    [
        (b"\x80", HPACKError),  # index 0
        (b"\xff\x80\x80\x80\x80\x80\x01", HPACKError),  # an integer of too many bytes
        (b"\xff", HPACKError),  # a truncated integer
        (b"\x40\x05ab", HPACKError),  # a truncated name
        (b"\x82\x3f\xe1\x1f", HPACKError),  # a table size update after a field
        (b"\x3f\xe2\x1f", InvalidTableSizeError),  # a table size update to 4097
        (b"\x00\x81\xff", HPACKError),  # a Huffman string that is only padding of the wrong kind
    ],
    ids=["index-0", "integer-too-long", "truncated-integer", "truncated-name", "size-update-late",
         "size-update-too-large", "bad-huffman"],
)  # fmt: skip
def test_malformed_blocks_are_errors_for_both(block: bytes, error: type) -> None:
    with pytest.raises(error):
        FieldDecoder(LIMIT).decode(block)
    assert both([block]) and isinstance(both([block])[0], type)


def test_the_header_list_limit_counts_each_field_as_rfc_9113_says() -> None:
    encoder = hpack.Encoder()
    block = encoder.encode([("x-a", "v" * 60)] * 10)  # 10 x (3 + 60 + 32) = 950
    assert len(FieldDecoder(950).decode(block)) == 10
    with pytest.raises(OversizedHeaderListError):
        FieldDecoder(949).decode(block)


def test_corrupted_blocks_are_decoded_or_refused_exactly_as_hpack_does() -> None:
    rng = random.Random(11)
    refused = 0
    for _ in range(500):
        encoder = hpack.Encoder()
        blocks = [encoded(rng, encoder) for _ in range(3)]
        victim = bytearray(blocks[-1])
        for _ in range(rng.randrange(1, 4)):
            cut = rng.randrange(len(victim))
            choice = rng.random()
            if choice < 0.4:
                victim[cut] = rng.randrange(256)
            elif choice < 0.7:
                del victim[cut:]
            else:
                victim[cut:cut] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
            if not victim:
                victim = bytearray(b"\xff")
        outcomes = both(blocks[:-1] + [bytes(victim)], limit=rng.choice([LIMIT, 2000]))
        refused += not isinstance(outcomes[-1], list)
    assert refused > 100  # the corruptions did reach the error paths


def test_indices_past_127_take_several_bytes() -> None:
    encoder = hpack.Encoder()
    first = encoder.encode([(f"x-{n}", "v") for n in range(80)])  # 80 entries of 36 bytes: all kept
    again = encoder.encode([("x-0", "v")])  # the oldest entry: index 61 + 80 = 141
    assert again[0] == 0xFF and len(again) == 2
    assert both([first, again])[1] == [(b"x-0", b"v")]
