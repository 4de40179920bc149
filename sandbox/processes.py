"""Local processes behind the sandbox's pods: exec'd commands and per-pod attach consoles.

* ``pods/exec`` runs the command as a real local process (``asyncio.create_subprocess_exec``, never a
  shell), in the pod's working directory ``<pod_root>/<namespace>/<pod>`` (created on demand;
  ``pod_root`` is the sandbox's ``<state>/pods`` (:func:`use_pod_root`), else
  ``$TMPDIR/kubegate-sandbox-pods``, see :func:`configure`). With a tty the
  process gets a pty (``pty.openpty``) as stdin/stdout/stderr and as its controlling terminal.
  It runs in its own session/process group; killing it kills the group.
* ``pods/attach`` attaches to the pod's console: one long-running process per (namespace, pod,
  container), started on first attach and kept until the sandbox stops (:func:`stop_consoles`). The
  console runs the pod annotation ``sandbox.kubegate.dev/console`` (a JSON list or a plain string
  split on spaces) or, by default, ``sh`` reading commands from stdin, under a pty when the container
  spec has ``tty: true`` (as a container runtime would), else on pipes. Its output is broadcast to every
  attached client; what attached clients type goes to its stdin. A client's stdin EOF (or going away)
  detaches that client only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import pty
import shlex
import signal
import struct
import tempfile
import termios
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("sandbox.processes")

CONSOLE_ANNOTATION = "sandbox.kubegate.dev/console"
READ_CHUNK = 64 * 1024

_pod_root: Path = Path(tempfile.gettempdir()) / "kubegate-sandbox-pods"


_loop_roots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Path] = weakref.WeakKeyDictionary()


def configure(pod_root: str | os.PathLike[str]) -> Path:
    """Set the directory under which each pod gets its working directory; returns the previous one."""
    global _pod_root
    previous, _pod_root = _pod_root, Path(pod_root)
    return previous


def use_pod_root(pod_root: str | os.PathLike[str]) -> None:
    """Give the pods of the running event loop's sandbox their working directories under ``pod_root``
    (``build_sandbox`` uses ``<state>/pods``, so a sandbox keeps them inside its own state directory and
    several sandboxes in one process keep theirs apart)."""
    _loop_roots[asyncio.get_running_loop()] = Path(pod_root)


def pod_workdir(namespace: str, pod: str) -> Path:
    safe = [p.replace("/", "_").replace("..", "_") or "_" for p in (namespace, pod)]
    try:
        root = _loop_roots.get(asyncio.get_running_loop(), _pod_root)
    except RuntimeError:  # not called from a sandbox's loop
        root = _pod_root
    path = root / safe[0] / safe[1]
    path.mkdir(parents=True, exist_ok=True)
    return path


def pod_env(namespace: str, pod: str, workdir: Path, tty: bool) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(workdir),
        "HOSTNAME": pod,
        "POD_NAME": pod,
        "POD_NAMESPACE": namespace,
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }
    if tty:
        env["TERM"] = "xterm"
    return env


def _controlling_tty(slave_path: str) -> Callable[[], None]:
    """A ``preexec_fn`` making the pty at ``slave_path`` the child's controlling terminal: a new session
    (so a shell gets job control instead of "sh: 0: can't access tty"), then the slave opened by its
    path and claimed with TIOCSCTTY. It does not rely on the stdio descriptors being in place yet
    (uvloop runs ``preexec_fn`` before it sets them up)."""

    def claim() -> None:
        with contextlib.suppress(OSError):
            os.setsid()
        fd = os.open(slave_path, os.O_RDWR)
        try:
            fcntl.ioctl(fd, termios.TIOCSCTTY, 0)
        finally:
            os.close(fd)

    return claim


def set_window_size(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


Sink = Callable[[bytes], Awaitable[None]]


class LocalProcess:
    """One running command with its stdio wired for streaming."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int | None) -> None:
        self.proc = proc
        self.master = master  # pty master fd (tty mode) or None
        self._stdin_closed = False

    @classmethod
    async def start(cls, argv: list[str], cwd: Path, env: dict[str, str], *, tty: bool,
                    stdin: bool, stderr: bool, size: tuple[int, int] | None = None) -> LocalProcess:
        """Spawn; ``size`` (width, height) is the terminal size set before the process starts."""
        if tty:
            master, slave = pty.openpty()
            if size and size[0] > 0 and size[1] > 0:
                set_window_size(slave, *size)
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                    preexec_fn=_controlling_tty(os.ttyname(slave)),
                )
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
            os.set_blocking(master, False)
            return cls(proc, master)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE if stderr else asyncio.subprocess.STDOUT,
            cwd=cwd, env=env, start_new_session=True,
        )
        return cls(proc, None)

    async def pump_stdout(self, sink: Sink) -> None:
        if self.master is not None:
            await self._pump_fd(self.master, sink)
        elif self.proc.stdout is not None:
            await _pump_reader(self.proc.stdout, sink)

    async def pump_stderr(self, sink: Sink) -> None:
        if self.master is None and self.proc.stderr is not None:
            await _pump_reader(self.proc.stderr, sink)

    async def _pump_fd(self, fd: int, sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_reader(fd, ready.set_result, None)
                try:
                    await ready
                finally:
                    loop.remove_reader(fd)
                continue
            except OSError as exc:  # EIO: every slave end closed (the process exited)
                if exc.errno == errno.EIO:
                    return
                raise
            if not data:
                return
            await sink(data)

    async def write_stdin(self, data: bytes) -> None:
        if self._stdin_closed or not data:
            return
        if self.master is not None:
            await _write_fd(self.master, data)
            return
        stdin = self.proc.stdin
        if stdin is None:
            return
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            self._stdin_closed = True

    async def close_stdin(self) -> None:
        if self._stdin_closed:
            return
        self._stdin_closed = True
        if self.master is not None:
            # EOF for a terminal reader is the EOF character at the start of a line.
            with contextlib.suppress(OSError):
                await _write_fd(self.master, b"\x04")
            return
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def resize(self, width: int, height: int) -> None:
        if self.master is not None and width > 0 and height > 0:
            with contextlib.suppress(OSError):
                set_window_size(self.master, width, height)

    async def wait(self) -> int:
        code = await self.proc.wait()
        return code if code >= 0 else 128 - code  # killed by signal N -> 128+N, like a shell

    def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    def close(self) -> None:
        """Release the pipes/pty (call after the process ended)."""
        # Close the subprocess transport now, inside its loop: left to the garbage collector it may
        # be finalized after the loop closed.
        transport = getattr(self.proc, "_transport", None)
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.close()
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.close(self.master)
            self.master = None


async def _pump_reader(reader: asyncio.StreamReader, sink: Sink) -> None:
    while True:
        data = await reader.read(READ_CHUNK)
        if not data:
            return
        await sink(data)


async def _write_fd(fd: int, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
            view = view[n:]
        except BlockingIOError:
            ready = loop.create_future()
            loop.add_writer(fd, ready.set_result, None)
            try:
                await ready
            finally:
                loop.remove_writer(fd)


# ------------------------------------------------------------------------------------- consoles


def console_command(pod: dict[str, Any]) -> list[str]:
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(CONSOLE_ANNOTATION)
    if isinstance(raw, str) and raw.strip():
        try:
            parsed = json.loads(raw)
            if isinstance(parsed, list) and parsed and all(isinstance(p, str) for p in parsed):
                return parsed
        except ValueError:
            pass
        return shlex.split(raw)
    return ["sh"]


class Console:
    """A pod's long-running console process; output fans out to attached clients."""

    def __init__(self, key: tuple[str, str, str], process: LocalProcess) -> None:
        self.key = key
        self.process = process
        self.subscribers: set[asyncio.Queue[bytes | None]] = set()
        self.done = asyncio.Event()
        self.exit_code: int | None = None
        self.loop = asyncio.get_running_loop()
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        async def fan_out(data: bytes) -> None:
            for queue in list(self.subscribers):
                queue.put_nowait(data)

        try:
            await asyncio.gather(self.process.pump_stdout(fan_out), self.process.pump_stderr(fan_out))
            self.exit_code = await self.process.wait()
        finally:
            self.process.close()
            self.done.set()
            for queue in list(self.subscribers):
                queue.put_nowait(None)
            _consoles.pop(self.key, None)

    def subscribe(self) -> asyncio.Queue[bytes | None]:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.subscribers.add(queue)
        if self.done.is_set():
            queue.put_nowait(None)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[bytes | None]) -> None:
        self.subscribers.discard(queue)

    async def stop(self) -> None:
        self.process.kill()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


_consoles: dict[tuple[str, str, str], Console] = {}
_console_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


async def get_console(namespace: str, pod: dict[str, Any], container: str, tty: bool) -> Console:
    """The pod's console, started on first use."""
    loop = asyncio.get_running_loop()
    lock = _console_locks.get(loop)
    if lock is None:
        lock = _console_locks[loop] = asyncio.Lock()
    name = (pod.get("metadata") or {}).get("name", "")
    key = (namespace, name, container)
    async with lock:
        console = _consoles.get(key)
        if console is not None and console.loop is not loop:
            # Left over from another event loop (an earlier server in this process): unusable here.
            console.process.kill()
            console = None
        if console is not None and not console.done.is_set():
            return console
        workdir = pod_workdir(namespace, name)
        process = await LocalProcess.start(console_command(pod), workdir, pod_env(namespace, name, workdir, tty),
                                           tty=tty, stdin=True, stderr=True)
        console = Console(key, process)
        _consoles[key] = console
        log.info("started console %s for pods/%s/%s container %s", process.proc.pid, namespace, name, container)
        return console


async def stop_consoles() -> None:
    """Kill the consoles of the running event loop (a server calls this when it stops)."""
    loop = asyncio.get_running_loop()
    for key, console in list(_consoles.items()):
        if console.loop is loop:
            await console.stop()
            _consoles.pop(key, None)
