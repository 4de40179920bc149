"""Recording sessions as they are relayed, without blocking the event loop.

``Recordings`` is the proxy's recording service (one per process): a store, a session index, the mode
(``best_effort`` | ``strict``), and ONE writer thread that does every blocking call (opening, writing,
fsync, uploads, index updates) in submission order. ``SessionRecorder`` is one session: the taps hand it
terminal bytes (``content(stream, data)``: one list append on the hot path); every ``flush_interval`` the
pending pieces become asciicast lines (:class:`proxy.recording.cast.CastEncoder`) that go to the live
watchers (``kubegate sessions join``) and, on the writer thread, to the store. A recording whose writes
fail, or whose unwritten backlog passes ``max_buffered``, is marked failed: the session goes on
(best_effort) or is stopped (strict).

Live sessions (recorded and in progress) are kept by id in ``Recordings.live`` with a bounded backlog
of their latest cast lines, so that someone joining sees the recent screen before the live output.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from proxy import metrics
from proxy.recording.cast import CastEncoder
from proxy.recording.index import SessionIndex
from proxy.recording.stores import RecordingStore, RecordingStoreError, Sink
from proxy.recording.tail import JoinNotices, joined_notice, process_alive

if TYPE_CHECKING:
    from proxy.recording.peer import PeerSessions

log = logging.getLogger("kubegate.proxy.recording")

BACKLOG_BYTES = 256 * 1024
FLUSH_BYTES = 1024 * 1024  # pending terminal bytes that trigger a batch before the flush interval
JOINS_CHECK_INTERVAL = 0.5  # seconds between looks for joins made through another worker process
_TERMINAL = frozenset(("stdout", "stderr", "resize"))  # cast lines kept in memory per live session for someone joining


class Recordings:
    def __init__(
        self,
        store: RecordingStore,
        index: SessionIndex,
        *,
        mode: str = "best_effort",
        flush_interval: float = 0.2,
        max_buffered: int = 64 * 1024 * 1024,
        origin: str = "",
        peer: PeerSessions | None = None,
        present: Callable[[str, int], bool] | None = None,
    ) -> None:
        self.store = store
        self.index = index
        # This replica's address (proxy.peer_addr), written into each session's index record as
        # ``proxy_addr``: a join reaching another replica asks this one, through ``peer`` there.
        self.origin = origin
        self.peer = peer
        # present(address, pid): whether that replica's process holds its presence key (backend.presence;
        # blocking): a join of a session whose holder is gone is answered at once, not after a timeout.
        self.present = present
        self.strict = mode == "strict"
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self.live: dict[str, SessionRecorder] = {}
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="kubegate-recording")

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the writer thread (in order with everything submitted before); after
        ``close`` (a session outliving the shutdown) it runs at once, in the caller's thread."""
        try:
            self._executor.submit(_logged, fn, *args)
        except RuntimeError:  # the executor is shut down
            _logged(fn, *args)

    def sweep_interrupted(self) -> list[str]:
        """Mark ``interrupted`` the index records this replica left ``live`` when a process of it was killed
        before it could write their end (their ``proxy_addr`` is this replica's, their process is gone);
        at start, so that every replica's ``sessions ls`` shows them so, not only this host's. Records of
        other replicas are theirs to sweep. Returns the session ids marked. Blocking: run it off the loop."""
        if not self.origin:
            return []
        marked = []
        for record in self.index.list():
            pid = record.get("proxy_pid")
            if record.get("state") != "live" or record.get("proxy_addr") != self.origin \
                    or not isinstance(pid, int) or pid <= 0 or pid == os.getpid() or process_alive(pid):
                continue
            self.index.put({**record, "state": "interrupted", "end_time": time.time()})
            marked.append(str(record.get("session_id")))
        if marked:
            log.warning("sessions left live by a process of this replica that is gone: marked interrupted",
                        extra={"sessions": marked})
        return marked

    def put_index(self, record: dict[str, Any]) -> None:
        self.submit(self.index.put, dict(record))

    async def open(self, session_id: str, meta: dict[str, Any], *, record_input: bool, strict: bool,
                   on_failure: Callable[[str], None]) -> SessionRecorder:
        """Open the session's recording (on the writer thread); raises ``RecordingStoreError``."""
        loop = asyncio.get_running_loop()
        try:
            sink = await loop.run_in_executor(self._executor, self.store.open, session_id)
        except RecordingStoreError:
            metrics.SESSION_RECORDINGS.labels("open_failed").inc()
            raise
        metrics.SESSION_RECORDINGS.labels("started").inc()
        started = float(meta.get("start_time") or time.time())
        recorder = SessionRecorder(self, session_id, sink, CastEncoder(meta, started, record_input=record_input),
                                   loop, strict=strict, on_failure=on_failure)
        self.live[session_id] = recorder
        return recorder

    def close(self) -> None:
        """Finish every queued write (at shutdown)."""
        self._executor.shutdown(wait=True)


def _logged(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("recording write failed")


class SessionRecorder:
    def __init__(self, recordings: Recordings, session_id: str, sink: Sink, encoder: CastEncoder,
                 loop: asyncio.AbstractEventLoop, *, strict: bool, on_failure: Callable[[str], None]) -> None:
        self.recordings = recordings
        self.session_id = session_id
        self.sink = sink
        self.location = sink.location
        self.encoder = encoder
        self.loop = loop
        self.strict = strict
        self.on_failure = on_failure
        self.failed = ""
        self.closed = False
        self.bytes_written = 0
        self.watchers: list[Callable[[bytes], None]] = []
        self.backlog: deque[bytes] = deque()
        self.header = b""
        self.notify_owner: Callable[[str], None] | None = None  # set by the relay: a line to the owner's terminal
        self._backlog_size = 0
        self._pending: list[tuple[float, str, bytes]] = []
        self._pending_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._queued = 0  # bytes handed to the writer thread and not written yet
        # Joins through another worker process arrive as names in <cast>.joins (file store only).
        self._joins = JoinNotices(self.location) if self.location.startswith("/") else None
        self._joins_timer: asyncio.TimerHandle | None = None
        if self._joins is not None:
            self._joins_timer = loop.call_later(JOINS_CHECK_INTERVAL, self._check_joins)

    # --- hot path: called by the taps for every piece of every stream
    def on_data(self, side: str, stream_type: str, chunk: memoryview) -> None:
        """The taps' content hook (``proxy.protocol.spdy.DataObserver``): keep the terminal streams."""
        if stream_type in _TERMINAL or (stream_type == "stdin" and self.encoder.record_input):
            # A read-only view is of an immutable bytes object (what the transport handed the relay): keep
            # the view, which keeps that object alive, instead of copying; a view of a buffer that may
            # change is copied.
            self.content(stream_type, chunk if chunk.readonly else bytes(chunk))  # type: ignore[arg-type]

    def content(self, stream: str, data: bytes) -> None:
        self._pending.append((time.time(), stream, data))
        self._pending_bytes += len(data)
        if self._pending_bytes >= FLUSH_BYTES:
            self.flush()  # a busy session is written in small batches, not one big one per interval
        elif self._timer is None and not self.closed:
            self._timer = self.loop.call_later(self.recordings.flush_interval, self.flush)

    # --- batches
    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending_bytes = 0
        if not self._pending or self.failed:
            self._pending.clear()
            return
        batch, self._pending = self._pending, []
        self._emit(self.encoder.encode_lines(batch))

    def _emit(self, lines: list[bytes]) -> None:
        if not lines:
            return
        if not self.header:
            self.header = lines[0]
            lines = lines[1:]
            self.recordings.submit(self._write, [self.header])
            if not lines:
                return
        self._remember(lines)
        for watcher in list(self.watchers):
            watcher(b"".join(lines))
        size = sum(map(len, lines))
        if self._queued + size > self.recordings.max_buffered:
            self._fail(f"the recording store is not keeping up ({self._queued} bytes waiting)")
            return
        self._queued += size
        self.recordings.submit(self._write, lines)

    def _remember(self, lines: list[bytes]) -> None:
        self.backlog.extend(lines)
        self._backlog_size += sum(map(len, lines))
        while self._backlog_size > BACKLOG_BYTES and len(self.backlog) > 1:
            self._backlog_size -= len(self.backlog.popleft())

    def _write(self, lines: list[bytes]) -> None:  # writer thread
        size = sum(map(len, lines))
        try:
            if not self.failed:
                self.sink.write_lines(lines)
                self.bytes_written += size
        except RecordingStoreError as exc:
            self.loop.call_soon_threadsafe(self._fail, str(exc))
        finally:
            self._queued -= size

    def fail(self, reason: str) -> None:
        """The recording cannot go on (e.g. the tap could not follow the stream)."""
        self._fail(reason)

    def _fail(self, reason: str) -> None:
        if self.failed or self.closed:
            return
        self.failed = reason
        metrics.SESSION_RECORDINGS.labels("write_failed").inc()
        log.warning("session recording failed", extra={"session_id": self.session_id, "problem": reason,
                                                        "strict": self.strict})
        if self.strict:
            self.on_failure(f"session recording failed: {reason}")

    # --- join
    def _check_joins(self) -> None:
        self._joins_timer = None
        if self.closed or self._joins is None:
            return
        self.recordings.submit(self._read_joins)
        self._joins_timer = self.loop.call_later(JOINS_CHECK_INTERVAL, self._check_joins)

    def _read_joins(self) -> None:  # writer thread
        if self._joins is None:
            return
        names = self._joins.new_joiners()
        if names:
            self.loop.call_soon_threadsafe(self._show_joins, names)

    def _show_joins(self, names: list[str]) -> None:
        if self.notify_owner is not None and not self.closed:
            for name in names:
                self.notify_owner(joined_notice(name))

    def watch(self, watcher: Callable[[bytes], None]) -> bytes:
        """Add a live watcher; returns what it should show first (the header and the recent lines)."""
        self.watchers.append(watcher)
        return self.header + b"".join(self.backlog)

    def unwatch(self, watcher: Callable[[bytes], None]) -> None:
        if watcher in self.watchers:
            self.watchers.remove(watcher)

    # --- end
    def close(self, record: dict[str, Any]) -> None:
        """The session ended: write what is pending and the rest, close (fsync / complete the upload), and
        update the index with ``record`` (after the recording is complete)."""
        if self.closed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stop_joins()
        if not self.failed:
            batch, self._pending = self._pending, []
            lines = self.encoder.encode_lines(batch)
            tail = self.encoder.finish(time.time())
            self._emit(lines + [tail] if tail else lines)
        self.closed = True
        self.recordings.live.pop(self.session_id, None)
        if not self.failed:
            metrics.SESSION_RECORDINGS.labels("completed").inc()
        for watcher in list(self.watchers):
            watcher(b"")  # end of stream
        self.watchers.clear()
        self.recordings.submit(self._finish, dict(record))

    def abort(self) -> None:
        """The session never started (the upstream refused the upgrade): drop the recording."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        self._stop_joins()
        self.recordings.live.pop(self.session_id, None)
        self.recordings.submit(self._abort_sink)

    def _stop_joins(self) -> None:
        if self._joins_timer is not None:
            self._joins_timer.cancel()
            self._joins_timer = None
        if self._joins is not None:
            self.recordings.submit(self._joins.remove)

    def _abort_sink(self) -> None:  # writer thread
        try:
            self.sink.abort()
        except RecordingStoreError as exc:
            log.warning("dropping a recording failed", extra={"session_id": self.session_id, "problem": str(exc)})

    def _finish(self, record: dict[str, Any]) -> None:  # writer thread
        try:
            self.sink.close()
        except RecordingStoreError as exc:
            self.failed = self.failed or str(exc)
        if self.failed:
            record["recording_error"] = self.failed
        record["recording_bytes"] = self.bytes_written
        self.recordings.index.put(record)
