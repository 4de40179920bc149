"""Pure parts of session recording: the asciicast encoder and reader, resize parsing, role options
(record_session, join_sessions, options kubegate refuses), the recording decision, playback timing and
the file index."""

from __future__ import annotations

import io
import json

import pytest

from kubegate.commands.sessions import parse_since, play_events
from proxy.recording.cast import CastEncoder, output_text, parse_resize, read_cast
from proxy.recording.index import FileSessionIndex
from rbac import RoleError
from rbac.roles import parse_roles_yaml
from rbac.sessions import JoinRule, RecordSession, may_join, recording_decision


def test_output_is_decoded_across_chunks_and_resizes_set_the_header():
    enc = CastEncoder({"user": "alice", "command": ["sh"], "title": "t"}, started=1000.0, record_input=True)
    cast = enc.encode([
        (1000.5, "resize", b'{"Width":120,'), (1000.5, "resize", b'"Height":40}\n'),
        (1001.0, "stdout", b"caf\xc3"), (1001.001, "stdout", b"\xa9 "),  # one event, the character whole
        (1001.2, "stderr", b"oops\n"), (1001.3, "stdin", b"ls\r"),
    ]) + enc.finish(1002.0)
    header, events = read_cast(cast)
    assert (header["width"], header["height"], header["timestamp"]) == (120, 40, 1000)
    assert header["kubegate"] == {"user": "alice", "command": ["sh"]} and header["command"] == "sh"
    assert events == [(0.5, "r", "120x40"), (1.0, "o", "café "), (1.2, "o", "oops\n"), (1.3, "i", "ls\r")]


def test_input_is_left_out_unless_asked_and_invalid_utf8_is_replaced():
    enc = CastEncoder({}, started=0.0)
    _, events = read_cast(enc.encode([(1.0, "stdin", b"secret\r"), (2.0, "stdout", b"\xff ok\xe2")]) + enc.finish(3.0))
    assert output_text(events) == "\ufffd ok\ufffd" and not [e for e in events if e[1] == "i"]


def test_a_cast_cut_mid_line_reads_up_to_the_last_whole_line():
    enc = CastEncoder({}, started=0.0)
    whole = enc.encode([(0.1, "stdout", b"one\n"), (0.5, "stdout", b"two\n")])
    _, events = read_cast(whole[:-7])
    assert output_text(events) == "one\n"
    with pytest.raises(ValueError, match="asciicast"):
        read_cast(b'{"version": 1}\n')


def test_resize_objects_are_parsed_from_a_byte_stream():
    buf = bytearray(b'{"Width":80,"Height":24}{"Width":100,"Hei')
    assert parse_resize(buf) == [(80, 24)] and bytes(buf) == b'{"Width":100,"Hei'
    buf += b'ght":30}\n{"Width":0,"Height":5}'
    assert parse_resize(buf) == [(100, 30)] and not buf


ROLE = """
kind: role
version: v8
metadata: {name: r}
spec:
  options: %s
  allow:
    kubernetes_labels: {'*': '*'}
    %s
"""


def test_record_session_and_join_sessions_are_read_from_roles():
    (role,) = parse_roles_yaml(ROLE % ("{record_session: {default: strict, input: true, desktop: false}}",
                                       "join_sessions: [{name: j, roles: [prod-*], kinds: [k8s], modes: [observer]}]"))
    assert role.record_session == RecordSession("strict", "off", True)
    assert role.join_sessions == (JoinRule("j", ("prod-*",), ("k8s",), ("observer",)),)


@pytest.mark.parametrize(("options", "field"), [
    ("{require_session_mfa: true}", "spec.options.require_session_mfa"),
    ("{max_sessions: 3}", "spec.options.max_sessions"),
    ("{pin_source_ip: true}", "spec.options.pin_source_ip"),
    ("{record_session: {default: always}}", "spec.options.record_session.default"),
    ("{record_session: {k8s: strict}}", "spec.options.record_session.k8s"),
])
def test_options_kubegate_does_not_implement_fail_naming_option_and_file(options, field):
    with pytest.raises(RoleError) as err:
        parse_roles_yaml(ROLE % (options, ""), file="roles/r.yaml")
    assert err.value.field == field and "roles/r.yaml" in str(err.value) and field in str(err.value)


def test_off_values_of_unimplemented_options_and_other_products_options_load():
    (role,) = parse_roles_yaml(ROLE % ("{require_session_mfa: false, forward_agent: true, disconnect_expired_cert: true}", ""))
    assert role.record_session is None


def test_bad_join_sessions_fail():
    with pytest.raises(RoleError, match="join_sessions"):
        parse_roles_yaml(ROLE % ("{}", "join_sessions: [{roles: [a], kinds: [k8s], modes: [driver]}]"))


def test_the_strongest_recording_setting_wins_and_the_proxy_can_make_it_strict():
    assert recording_decision([None], tty=True, proxy_strict=False) == recording_decision([], True, False)
    d = recording_decision([None], tty=True, proxy_strict=False)
    assert (d.record, d.strict, d.input) == (True, False, False)
    assert not recording_decision([None], tty=False, proxy_strict=True).record  # non-TTY: off by default
    off = RecordSession("off")
    assert not recording_decision([off], tty=True, proxy_strict=True).record
    d = recording_decision([off, RecordSession("best_effort", input=True)], tty=True, proxy_strict=True)
    assert (d.record, d.strict, d.input) == (True, True, True)
    assert recording_decision([RecordSession(non_interactive="strict")], tty=False, proxy_strict=False).strict


def test_join_needs_a_rule_covering_an_owner_role():
    rule = JoinRule("", ("prod-*",), ("k8s",), ("observer",))
    assert may_join([rule], ["prod-admin"], owner="a", joiner="b")
    assert not may_join([rule], ["dev"], owner="a", joiner="b")
    assert not may_join([JoinRule("", ("*",), ("ssh",), ("observer",))], ["dev"], owner="a", joiner="b")
    assert may_join([], ["dev"], owner="a", joiner="a")  # one's own session


def test_play_waits_as_recorded_divided_by_speed():
    out, waits = io.StringIO(), []
    events = [(0.5, "o", "a"), (0.5, "r", "10x10"), (2.5, "o", "b"), (2.0, "i", "x")]
    play_events(events, out, speed=2.0, sleep=waits.append)
    assert out.getvalue() == "ab" and waits == [0.25, 1.0]
    waits.clear()
    play_events(events, io.StringIO(), raw=True, sleep=waits.append)
    assert waits == []


def test_since_takes_a_duration_or_an_iso_time():
    assert parse_since("2h", 10_000.0) == 10_000.0 - 7200
    assert parse_since("1970-01-01T01:00:00", 0) == 3600.0
    with pytest.raises(ValueError, match="neither"):
        parse_since("yesterday", 0)


def test_the_file_index_filters_and_refuses_odd_ids(tmp_path):
    index = FileSessionIndex(str(tmp_path))
    index.put({"session_id": "a" * 32, "user": "u1", "cluster": "c1", "start_time": 10})
    index.put({"session_id": "b" * 32, "user": "u2", "cluster": "c1", "start_time": 20})
    assert [r["user"] for r in index.list()] == ["u1", "u2"]
    assert [r["user"] for r in index.list(user="u2")] == ["u2"]
    assert [r["user"] for r in index.list(since=15)] == ["u2"]
    assert index.list(cluster="c2") == [] and index.get("../etc/passwd") is None
    with pytest.raises(ValueError):
        index.put({"session_id": "../x"})
    assert json.loads((tmp_path / ("a" * 32 + ".json")).read_text())["user"] == "u1"


def test_the_file_sink_writes_many_lines_in_order_and_refuses_after_close(tmp_path):
    from proxy.recording.stores import FileStore, RecordingStoreError

    sink = FileStore(str(tmp_path)).open("c" * 32)
    lines = [f"[{i}, \"o\", \"line {i}\"]\n".encode() for i in range(3000)]  # more than one writev (IOV_MAX)
    sink.write_lines(lines)
    sink.close()
    assert (tmp_path / ("c" * 32 + ".cast")).read_bytes() == b"".join(lines)
    with pytest.raises(RecordingStoreError, match="closed"):
        sink.write_lines([b"x"])
    with pytest.raises(RecordingStoreError, match="cannot create"):
        FileStore(str(tmp_path)).open("c" * 32)  # never overwrites a recording


def test_a_role_file_with_an_unimplemented_option_is_refused_naming_the_file_and_the_others_load(tmp_path):
    from rbac.roles import load_roles_dir

    (tmp_path / "mfa.yaml").write_text(ROLE.replace("name: r", "name: mfa") % ("{require_session_mfa: hardware_key}", ""))
    (tmp_path / "ok.yaml").write_text(ROLE.replace("name: r", "name: ok") % ("{record_session: {default: strict}}", ""))
    roles = load_roles_dir(tmp_path)
    assert roles.names() == ["ok"] and roles.get("ok").record_session == RecordSession("strict")
    (refusal,) = roles.refused.values()
    assert str(tmp_path / "mfa.yaml") in str(refusal) and "require_session_mfa" in str(refusal)
    assert "not implemented" in str(refusal)


def test_a_follower_gets_the_header_and_whole_recent_lines_then_what_follows(tmp_path, monkeypatch):
    from proxy.recording import tail

    path = tmp_path / "s.cast"
    header = b'{"version": 2}\n'
    lines = [f'[{i}, "o", "{"x" * 50}"]\n'.encode() for i in range(100)]
    path.write_bytes(header + b"".join(lines))
    monkeypatch.setattr(tail, "RECENT_BYTES", 1000)
    first, offset = tail.recent_lines(str(path))
    assert first.startswith(header) and first.endswith(lines[-1]) and len(first) < 1000 + len(header)
    assert all(line.endswith(b"]") for line in first.splitlines()[1:])  # whole lines only
    with path.open("ab") as f:
        f.write(lines[0] + b'[1, "o", "cut')
    more, offset2 = tail.read_from(str(path), offset)
    assert more == lines[0] and offset2 == offset + len(lines[0])
    notices = tail.JoinNotices(str(path))
    tail.announce_join(str(path), "bob")
    tail.announce_join(str(path), "carol")
    assert notices.new_joiners() == ["bob", "carol"] and notices.new_joiners() == []


@pytest.mark.parametrize("strict", [True, False])
def test_a_write_failure_mid_session_stops_a_strict_session_only(tmp_path, strict):
    """The store is a stand-in whose writes fail (a full or vanished disk cannot be made on demand here)."""
    import asyncio

    from proxy.recording.index import FileSessionIndex
    from proxy.recording.recorder import Recordings
    from proxy.recording.stores import RecordingStoreError

    class FailingSink:
        location = str(tmp_path / "x.cast")

        def write_lines(self, lines):
            raise RecordingStoreError("disk full")

        def write(self, data):
            raise RecordingStoreError("disk full")

        def close(self):
            pass

    class FailingStore:
        def open(self, session_id):
            return FailingSink()

        def read(self, location):
            return b""

    failures: list[str] = []

    async def main():
        recordings = Recordings(FailingStore(), FileSessionIndex(str(tmp_path)), flush_interval=0.01)
        recorder = await recordings.open("d" * 32, {"session_id": "d" * 32}, record_input=False, strict=strict,
                                         on_failure=failures.append)
        recorder.content("stdout", b"hello")
        for _ in range(200):
            if recorder.failed:
                break
            await asyncio.sleep(0.01)
        recorder.close({"session_id": "d" * 32})
        recordings.close()
        return recorder.failed

    from prometheus_client import REGISTRY

    before = REGISTRY.get_sample_value("kubegate_session_recordings_total", {"outcome": "write_failed"}) or 0
    assert "disk full" in asyncio.run(main())
    assert REGISTRY.get_sample_value("kubegate_session_recordings_total", {"outcome": "write_failed"}) == before + 1
    assert failures == (["session recording failed: disk full"] if strict else [])
    assert "disk full" in FileSessionIndex(str(tmp_path)).get("d" * 32)["recording_error"]


def test_an_aborted_file_recording_leaves_nothing(tmp_path):
    from proxy.recording.stores import FileStore

    sink = FileStore(str(tmp_path)).open("e" * 32)
    sink.write_lines([b"{}\n"])
    sink.abort()
    assert list(tmp_path.iterdir()) == []


def test_at_start_a_replica_marks_interrupted_the_sessions_its_gone_processes_left_live(tmp_path):
    """A process of this replica killed mid-session leaves its record ``live``; the next start marks it
    ``interrupted`` in the (shared) index, so that every replica shows it so. Records whose process is
    alive, records of other replicas, and ended ones are left as they are."""
    import subprocess
    import sys

    from kubegate.commands.sessions import session_state
    from proxy.recording.recorder import Recordings
    from proxy.recording.stores import FileStore

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        index = FileSessionIndex(str(tmp_path / "index"))
        here, there = "kg-1.internal:3026", "kg-2.internal:3026"
        records = {
            "a" * 32: {"state": "live", "proxy_addr": here, "proxy_pid": gone.pid},
            "b" * 32: {"state": "live", "proxy_addr": here, "proxy_pid": alive.pid},
            "c" * 32: {"state": "live", "proxy_addr": there, "proxy_pid": gone.pid},
            "d" * 32: {"state": "ended", "proxy_addr": here, "proxy_pid": gone.pid},
        }
        for session_id, fields in records.items():
            index.put({"session_id": session_id, "user": "alice", "start_time": 1.0, **fields})
        recordings = Recordings(FileStore(str(tmp_path / "casts")), index, origin=here)
        try:
            assert recordings.sweep_interrupted() == ["a" * 32]
        finally:
            recordings.close()
        states = {session_id: index.get(session_id)["state"] for session_id in records}
        assert states == {"a" * 32: "interrupted", "b" * 32: "live", "c" * 32: "live", "d" * 32: "ended"}
        # What kubegate sessions ls on the other replica shows: the sweep's answer, not a guess from a PID
        assert session_state(index.get("a" * 32), there) == "interrupted"
        assert session_state(index.get("c" * 32), here) == "live"
    finally:
        alive.kill()
        alive.wait()


def test_a_recording_kept_in_a_file_on_another_replica_is_named_with_that_replica(tmp_path):
    """``kubegate sessions play / export`` on one host, for a session another replica recorded to a file
    on its own host: the message says where it is and how to have every replica read recordings."""
    from kubegate.commands.sessions import _recording
    from kubegate.config import load_config

    config = tmp_path / "kubegate.yaml"
    config.write_text("version: v1\nstate_dir: ./state\nproxy: {listen: '127.0.0.1:3026'}\n")
    cfg = load_config(str(config))
    index = FileSessionIndex(cfg.sessions_dir)
    record = {"session_id": "e" * 32, "user": "alice", "start_time": 1.0, "state": "ended",
              "recording": "/var/lib/kubegate/sessions/" + "e" * 32 + ".cast"}
    index.put({**record, "proxy_addr": "kg-2.internal:3026"})
    assert _recording(cfg, "e" * 32) == (
        f"session {'e' * 32} was recorded to a file on the replica at kg-2.internal:3026, not here: read it "
        "there, or record to S3 (proxy.recording.s3) so that every replica can")
    index.put({**record, "proxy_addr": "127.0.0.1:3026"})  # this replica's own: the store's own message
    assert "kg-2" not in _recording(cfg, "e" * 32)
