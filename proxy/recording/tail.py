"""Following a live session recorded by ANOTHER process (``proxy.workers`` > 1 share one state directory):
blocking file reads, run off the event loop by the caller.

* a joiner's process follows the session's cast file (``FileStore``: written as the session goes) from
  its recent lines, polling for growth, until the session's index record says it ended or the process
  that recorded it is gone;
* it tells the owner's process that someone joined by appending the joiner's name to
  ``<cast>.joins``; the owner's recorder checks that file now and then (:class:`JoinNotices`) and shows
  the line on the owner's terminal.
"""

from __future__ import annotations

import os

RECENT_BYTES = 256 * 1024  # how much of the cast a joiner gets before the live lines


def joined_notice(joiner: str) -> bytes:
    """The line shown on the session owner's terminal when someone joins."""
    return f"\r\n[kubegate] {joiner} joined this session (observer, read-only)\r\n".encode()


def joins_path(cast_path: str) -> str:
    return cast_path + ".joins"


def recent_lines(path: str) -> tuple[bytes, int]:
    """(the header line + the last whole lines within ``RECENT_BYTES``, the file offset after them)."""
    with open(path, "rb") as f:
        header = f.readline()
        if not header.endswith(b"\n"):
            return b"", 0  # no header yet: start from the beginning later
        size = os.fstat(f.fileno()).st_size
        start = max(len(header), size - RECENT_BYTES)
        f.seek(start)
        body = f.read(size - start)
    if start > len(header):  # the window starts inside a line: from the next line on
        cut = body.find(b"\n") + 1
        if cut == 0:
            return header, size
        body, start = body[cut:], start + cut
    end = body.rfind(b"\n") + 1
    return header + body[:end], start + end


def read_from(path: str, offset: int, limit: int = 4 * 1024 * 1024) -> tuple[bytes, int]:
    """The whole lines written after ``offset`` (at most about ``limit`` bytes), and the new offset."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(limit)
    end = data.rfind(b"\n") + 1
    return data[:end], offset + end


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def announce_join(cast_path: str, user: str) -> None:
    """Ask the owner's process to show that ``user`` joined (one line appended to ``<cast>.joins``)."""
    fd = os.open(joins_path(cast_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, user.replace("\n", " ").encode()[:256] + b"\n")
    finally:
        os.close(fd)


class JoinNotices:
    """The owner's side: names appended to ``<cast>.joins`` since the last check."""

    def __init__(self, cast_path: str) -> None:
        self.path = joins_path(cast_path)
        self.offset = 0

    def new_joiners(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read(64 * 1024)
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self.offset += end
        return [line.decode("utf-8", "replace") for line in data[:end].splitlines() if line]

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
