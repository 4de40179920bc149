"""``FileWatch``: one file followed by Linux inotify on an asyncio event loop (``loop.add_reader``).

The watch is on the file's DIRECTORY, since the file itself is replaced by rename (``files.write_atomic``):
a watch on the file would follow the old inode. Every event naming the file (closed after writing,
renamed in or away, created, deleted, written, its attributes or link count changed) and a queue
overflow call ``on_change()`` on the loop. When the watch itself ends (the directory is removed,
renamed or unmounted, or the queue cannot be read) ``on_lost(reason)`` is called once and the inotify
file descriptor is closed: the owner goes back to looking at the file itself.

``FileWatch.open`` raises ``WatchUnavailable`` (saying why) when inotify cannot be used: not Linux, the
per-user instance or watch limit reached, the directory missing, the file a symbolic link (a link
re-pointed elsewhere, as Kubernetes does with mounted ConfigMaps, produces no event for its name).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

__all__ = ["FileWatch", "WatchUnavailable"]

# inotify(7) event bits (the kernel's ABI; inotify_simple.flags has the same values)
IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000

WATCHED = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
           | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)
_DIRECTORY_GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED


class WatchUnavailable(Exception):
    """inotify cannot follow this file here; the message says why."""


class FileWatch:
    """inotify on ``path``'s directory, read by ``loop`` (call ``open``, then ``close`` on the loop)."""

    def __init__(self, inotify: Any, path: str, loop: asyncio.AbstractEventLoop,
                 on_change: Callable[[], None], on_lost: Callable[[str], None]) -> None:
        self._inotify = inotify
        self.path = path
        self.name = os.path.basename(path)
        self.loop = loop
        self._on_change = on_change
        self._on_lost = on_lost
        self.closed = False

    @classmethod
    def open(cls, path: str, loop: asyncio.AbstractEventLoop, on_change: Callable[[], None],
             on_lost: Callable[[str], None]) -> FileWatch:
        """Start following ``path`` (from now on: a change made before this call is not reported)."""
        if os.path.islink(path):
            raise WatchUnavailable(f"{path} is a symbolic link (re-pointing it names no event for it)")
        try:
            import inotify_simple

            inotify = inotify_simple.INotify(nonblocking=True)
        except (ImportError, AttributeError, OSError) as exc:  # not Linux (no inotify_init1), EMFILE
            raise WatchUnavailable(f"inotify is not available: {exc}") from None
        try:
            inotify.add_watch(os.path.dirname(os.path.abspath(path)), WATCHED)
            watch = cls(inotify, path, loop, on_change, on_lost)
            loop.add_reader(inotify.fileno(), watch._readable)
        except (OSError, RuntimeError, NotImplementedError) as exc:  # ENOENT, ENOSPC (watch limit), ...
            inotify.close()
            raise WatchUnavailable(f"cannot watch the directory of {path}: {exc}") from None
        return watch

    def close(self) -> None:
        """Stop following (on the loop's thread); the inotify descriptor is closed."""
        if self.closed:
            return
        self.closed = True
        try:
            self.loop.remove_reader(self._inotify.fileno())
        except (RuntimeError, ValueError):  # the loop is closed already: its selector went with it
            pass
        self._inotify.close()

    def _readable(self) -> None:
        try:
            events = self._inotify.read(timeout=0)
        except OSError as exc:
            self._lose(f"reading the inotify queue failed: {exc}")
            return
        changed = lost = False
        for event in events:
            if event.mask & IN_Q_OVERFLOW or event.name == self.name:
                changed = True
            if event.mask & _DIRECTORY_GONE and not event.name:
                lost = True
        if lost:
            self._lose(f"the directory of {self.path} was removed, moved or unmounted")
        elif changed:
            self._on_change()

    def _lose(self, reason: str) -> None:
        self.close()
        self._on_lost(reason)
