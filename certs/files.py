"""Small file helpers shared by the CA, the kubeconfig writer, the lock list and the bot.

Every file kubegate writes for a reader that may be running at the same time (a proxy re-reading the lock
list, kubectl reading a bot's certificate) is written *atomically*: the bytes go to a temporary file in
the same directory, created with the final mode, flushed and fsynced, then ``os.replace``d over the
target. A reader sees the old content or the new content, never a mixture, and a secret is never
readable by others, not even for an instant.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic", "ensure_private_dir"]


def ensure_private_dir(path: str | os.PathLike[str], mode: int = 0o700) -> Path:
    """Create ``path`` (and parents) if missing; a directory created here gets ``mode``."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True, mode=mode)
    return directory


def write_atomic(path: str | os.PathLike[str], data: bytes | str, mode: int = 0o600) -> Path:
    """Replace ``path`` with ``data`` atomically; the file has permission bits ``mode`` from its creation."""
    target = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, mode)  # mkstemp creates 0600; set the final mode before any byte is written
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(target.parent)
    return target


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
