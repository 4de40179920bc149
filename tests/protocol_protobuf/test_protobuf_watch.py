"""The protobuf watch framing: kubegate's ERROR event reads back as client-go reads it, and the frame
tracker knows where an event may go, however the stream is cut into chunks."""

from __future__ import annotations

from proxy.protocol.protobuf_watch import FrameBoundary, error_event, events
from proxy.protocol.protobuf_wire import fields, length_delimited, unwrap


def test_the_error_event_carries_a_protobuf_status_in_its_envelope() -> None:
    frame = error_event(403, "Forbidden", "kubegate ended this stream: locked")
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    ((kind, raw),) = events(frame)
    status = unwrap(raw)
    assert kind == "ERROR" and (status.api_version, status.kind) == ("v1", "Status")
    values = dict(fields(status.raw))
    assert values[2] == b"Failure" and values[3] == b"kubegate ended this stream: locked"
    assert values[4] == b"Forbidden" and values[6] == 403


def test_the_frame_boundary_is_found_whatever_the_chunking() -> None:
    one = length_delimited(1, "ADDED") + length_delimited(2, length_delimited(1, b"x" * 300))
    stream = (len(one).to_bytes(4, "big") + one) * 2 + error_event(503, "ServiceUnavailable", "bye")
    boundaries = {0, 4 + len(one), 8 + 2 * len(one), len(stream)}
    for size in (1, 2, 3, 5, 7, 64, len(stream)):
        frames = FrameBoundary()
        fed = 0
        for pos in range(0, len(stream), size):
            frames.feed(stream[pos : pos + size])
            fed = min(pos + size, len(stream))
            assert frames.at_boundary == (fed in boundaries), (size, fed)
    assert [kind for kind, _ in events(stream)] == ["ADDED", "ADDED", "ERROR"]
    assert events(stream[:-1])[-1][0] == "ADDED"  # a partial last frame is left out
