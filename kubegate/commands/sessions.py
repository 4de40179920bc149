"""``kubegate sessions``: list, play, export and join (live, read-only) recorded exec/attach sessions.

``ls``, ``play`` and ``export`` read the session index and the recording store that the config names
(``<state_dir>/sessions`` or ``proxy.recording.dir``; S3 when ``proxy.recording.s3.bucket`` is set).
``join`` connects to the proxy as the user of a kubeconfig that kubegate wrote (its client certificate)
and streams ``/kubegate/sessions/<id>/stream``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import urlsplit

from kubegate.config import Config, load_config_or_report


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sessions", help="list, replay, export and watch recorded exec/attach sessions")
    sub = parser.add_subparsers(dest="sessions_command", metavar="SUBCOMMAND")
    sub.required = True

    ls = sub.add_parser("ls", help="list sessions (oldest first)")
    ls.add_argument("--user", help="only this user's sessions")
    ls.add_argument("--cluster", help="only sessions on this cluster")
    ls.add_argument("--since", metavar="WHEN", help="only sessions started since: a duration ago (30m, 2h, 7d) or an ISO time")
    ls.add_argument("--json", action="store_true", help="one JSON record per line")
    ls.set_defaults(func=run_ls)

    play = sub.add_parser("play", help="replay a recorded session in this terminal at its recorded speed")
    play.add_argument("session_id", metavar="ID")
    play.add_argument("--speed", type=float, default=1.0, help="playback speed factor (default 1; 2 = twice as fast)")
    play.add_argument("--raw", action="store_true", help="dump the terminal output at once, without timing")
    play.set_defaults(func=run_play)

    export = sub.add_parser("export", help="write a session's recording (asciicast v2, for asciinema)")
    export.add_argument("session_id", metavar="ID")
    export.add_argument("-o", "--output", metavar="FILE", help="default: stdout")
    export.set_defaults(func=run_export)

    join = sub.add_parser("join", help="watch a live session read-only (needs join_sessions in your roles)")
    join.add_argument("session_id", metavar="ID")
    join.add_argument("--kubeconfig", metavar="FILE", help="a kubeconfig written by kubegate (default: $KUBECONFIG or ~/.kube/config)")
    join.add_argument("--context", help="the kubeconfig context to use (default: its current context)")
    join.add_argument("--raw", action="store_true", help="print the asciicast lines instead of the terminal output")
    join.set_defaults(func=run_join)

    for p in (ls, play, export):
        p.add_argument("-c", "--config", metavar="FILE", help="kubegate.yaml (default: built-in defaults)")


# ------------------------------------------------------------------------------------------- ls


def parse_since(text: str, now: float) -> float:
    from rbac.roles import duration_seconds

    seconds = duration_seconds(text)
    if seconds is not None:
        return now - seconds
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r} is neither a duration (30m, 2h, 7d) nor an ISO time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _iso(ts: Any) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def session_state(record: dict[str, Any], origin: str,
                  present: Callable[[str, int], bool] | None = None) -> str:
    """``live`` / ``ended``, or ``interrupted`` for a live record whose proxy process is gone (killed before
    it could write the end). A record of this replica (its ``proxy_addr`` is ``origin``, this config's
    peer address, or it has none): its process is looked for here. Another replica's: ``present(address,
    pid)`` says whether its process holds its key in the shared backend (``backend.presence``); without
    it (no shared backend) a PID of another host says nothing here, and the record's state stands."""
    from proxy.recording.index import held_elsewhere
    from proxy.recording.tail import process_alive

    state = str(record.get("state") or "")
    pid = record.get("proxy_pid")
    if state != "live" or not isinstance(pid, int) or pid <= 0:
        return state
    held_by = held_elsewhere(record, origin)
    if not held_by:
        return "interrupted" if not process_alive(pid) else state
    if present is not None and not present(held_by, pid):
        return "interrupted"
    return state


def run_ls(args: argparse.Namespace) -> int:
    from kubegate.app import session_index

    cfg = load_config_or_report(args.config)
    if cfg is None:
        return 1
    try:
        since = parse_since(args.since, time.time()) if args.since else None
    except ValueError as exc:
        print(f"kubegate sessions ls: {exc}", file=sys.stderr)
        return 2
    from kubegate.shared import open_backend

    backend = open_backend(cfg)
    records = session_index(cfg, backend).list(user=args.user, cluster=args.cluster, since=since)
    present = None
    if backend is not None:
        import functools

        from backend.presence import is_present

        present = functools.partial(is_present, backend)
    if args.json:
        for record in records:
            print(json.dumps(record, separators=(",", ":"), default=str))
        return 0
    rows = [("ID", "STARTED", "USER", "CLUSTER", "KIND", "POD", "TTY", "STATE", "EXIT", "DURATION", "COMMAND")]
    for r in records:
        duration = r.get("duration_s")
        rows.append((
            r.get("session_id", ""), _iso(r.get("start_time")), r.get("user", ""), r.get("cluster", ""),
            r.get("kind", ""), f"{r.get('namespace', '')}/{r.get('pod', '')}", "yes" if r.get("tty") else "no",
            session_state(r, cfg.proxy.peer_address, present), "-" if r.get("exit_code") is None else str(r["exit_code"]),
            "-" if duration is None else f"{float(duration):.1f}s", " ".join(r.get("command") or []),
        ))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=False)) + "  " + str(row[-1]))
    return 0


# ------------------------------------------------------------------------------- play / export


def _recording(cfg: Config, session_id: str) -> tuple[dict[str, Any], bytes] | str:
    """(index record, cast bytes), or an error message."""
    from kubegate.app import recording_store, session_index
    from proxy.recording.stores import FileStore, RecordingStoreError

    record = session_index(cfg).get(session_id)
    if record is None:
        return f"no session {session_id!r} in {cfg.sessions_dir}"
    location = record.get("recording")
    if not location:
        return f"session {session_id} was not recorded (only audited)"
    store = recording_store(cfg) if str(location).startswith("s3://") else FileStore(cfg.sessions_dir)
    try:
        return record, store.read(location)
    except RecordingStoreError as exc:
        from proxy.recording.index import held_elsewhere

        held_by = held_elsewhere(record, cfg.proxy.peer_address)
        if held_by and not str(location).startswith("s3://"):
            return (f"session {session_id} was recorded to a file on the replica at {held_by}, not here: read it "
                    "there, or record to S3 (proxy.recording.s3) so that every replica can")
        return str(exc)


def _cast_or_report(args: argparse.Namespace, command: str) -> bytes | None:
    """The cast of ``args.session_id`` under ``args.config``; None once the problem is on stderr."""
    cfg = load_config_or_report(args.config)
    if cfg is None:
        return None
    found = _recording(cfg, args.session_id)
    if isinstance(found, str):
        print(f"kubegate sessions {command}: {found}", file=sys.stderr)
        return None
    return found[1]


def run_export(args: argparse.Namespace) -> int:
    cast = _cast_or_report(args, "export")
    if cast is None:
        return 1
    if args.output:
        with open(args.output, "wb") as f:
            f.write(cast)
    else:
        sys.stdout.buffer.write(cast)
        sys.stdout.flush()
    return 0


def play_events(events: list[tuple[float, str, str]], out: TextIO, speed: float = 1.0, raw: bool = False,
                sleep: Any = time.sleep) -> None:
    """Write the output events to ``out``, waiting between them as recorded (divided by ``speed``)."""
    last = 0.0
    for when, code, data in events:
        if code != "o":
            continue
        if not raw and when > last:
            sleep((when - last) / speed)
        last = max(last, when)
        out.write(data)
        out.flush()


def run_play(args: argparse.Namespace) -> int:
    from proxy.recording.cast import read_cast

    if args.speed <= 0:
        print("kubegate sessions play: --speed must be positive", file=sys.stderr)
        return 2
    cast = _cast_or_report(args, "play")
    if cast is None:
        return 1
    try:
        _, events = read_cast(cast)
    except ValueError as exc:
        print(f"kubegate sessions play: {exc}", file=sys.stderr)
        return 1
    try:
        play_events(events, sys.stdout, args.speed, args.raw)
    except KeyboardInterrupt:
        return 130
    return 0


# ------------------------------------------------------------------------------------------ join


def _kubeconfig_target(path: str, context: str | None) -> tuple[str, int, ssl.SSLContext]:
    """(host, port, TLS context with the user's client certificate) from a kubeconfig kubegate wrote."""
    import base64

    import yaml

    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    name = context or doc.get("current-context")
    ctx = next((c.get("context") or {} for c in doc.get("contexts") or [] if c.get("name") == name), None)
    if ctx is None:
        raise ValueError(f"{path}: no context {name!r}")
    cluster = next((c.get("cluster") or {} for c in doc.get("clusters") or [] if c.get("name") == ctx.get("cluster")), {})
    user = next((u.get("user") or {} for u in doc.get("users") or [] if u.get("name") == ctx.get("user")), {})
    url = urlsplit(cluster.get("server") or "")
    if url.scheme != "https" or not url.hostname:
        raise ValueError(f"{path}: context {name!r} has no https server")

    def material(data_key: str, file_key: str, source: dict[str, Any]) -> bytes:
        if source.get(data_key):
            return base64.b64decode(source[data_key])
        if source.get(file_key):
            with open(source[file_key], "rb") as fh:
                return fh.read()
        raise ValueError(f"{path}: context {name!r} has no {data_key} / {file_key}")

    tls = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    tls.load_verify_locations(cadata=material("certificate-authority-data", "certificate-authority", cluster).decode())
    with tempfile.TemporaryDirectory(prefix="kubegate-join-") as tmp:
        cert_file, key_file = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        for file, key in ((cert_file, ("client-certificate-data", "client-certificate")), (key_file, ("client-key-data", "client-key"))):
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(material(*key, user))
        tls.load_cert_chain(cert_file, key_file)
    tls.set_alpn_protocols(["http/1.1"])
    return url.hostname, url.port or 443, tls


def run_join(args: argparse.Namespace) -> int:
    path = args.kubeconfig or (os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0] or os.path.expanduser("~/.kube/config")
    try:
        host, port, tls = _kubeconfig_target(path, args.context)
    except (OSError, ValueError, ssl.SSLError) as exc:
        print(f"kubegate sessions join: {exc}", file=sys.stderr)
        return 1
    return join_session(host, port, tls, args.session_id, sys.stdout, sys.stderr, raw=args.raw)


def join_session(host: str, port: int, tls: ssl.SSLContext, session_id: str, out: TextIO, err: TextIO,
                 raw: bool = False) -> int:
    conn = http.client.HTTPSConnection(host, port, context=tls, timeout=None)
    try:
        conn.request("GET", f"/kubegate/sessions/{session_id}/stream", headers={"Accept": "application/x-asciicast"})
        response = conn.getresponse()
        if response.status != 200:
            body = response.read()
            try:
                message = json.loads(body).get("message") or body.decode()
            except ValueError:
                message = body.decode("utf-8", "replace")
            print(f"kubegate sessions join: {response.status}: {message}", file=err)
            return 1
        first = True
        while line := response.readline():
            if raw:
                out.write(line.decode("utf-8", "replace"))
                out.flush()
                continue
            item = json.loads(line)
            if first and isinstance(item, dict):
                meta = item.get("kubegate") or {}
                print(f"[kubegate] watching session {session_id} of {meta.get('user')} "
                      f"({meta.get('namespace')}/{meta.get('pod')}), read-only; Ctrl-C leaves", file=err)
            elif isinstance(item, list) and len(item) == 3 and item[1] == "o":
                out.write(item[2])
                out.flush()
            first = False
        print("\r\n[kubegate] the session ended", file=err)
        return 0
    except KeyboardInterrupt:
        return 130
    except (OSError, http.client.HTTPException) as exc:
        print(f"kubegate sessions join: {exc}", file=err)
        return 1
    finally:
        conn.close()
