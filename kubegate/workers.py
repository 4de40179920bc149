"""Processes: one proxy in-process, or a supervisor with N worker processes sharing the port.

``kubegate start --workers N``:

- N == 1: the proxy and the metrics listener run on one uvloop event loop in this process
  (``run_single``). SIGTERM/SIGINT: stop accepting, let in-flight work finish within
  ``proxy.limits.shutdown_grace``, exit 0.
- N > 1: this process becomes the supervisor (``Supervisor``). It sets ``PROMETHEUS_MULTIPROC_DIR``
  to a fresh directory, reserves the listen port (a bound, non-listening ``SO_REUSEPORT`` socket, so
  ``:0`` resolves once to a concrete port that every worker then shares), starts N workers
  (``python -m kubegate.workers …``), each a full proxy with its own ``SO_REUSEPORT`` listening
  socket on that port (the kernel spreads connections over them), and serves ``/metrics`` (summed over
  the workers), ``/healthz`` and ``/readyz`` itself. A worker that dies is restarted with backoff
  (1 s doubling to 30 s, reset after a minute of good health). SIGTERM/SIGINT are forwarded to the
  workers, which shut down gracefully; stragglers get SIGKILL after the grace period plus 5 s.

Workers report readiness to the supervisor on a pipe: ``R`` ready, ``N`` not ready; EOF means gone.
A worker dies with its supervisor (``PR_SET_PDEATHSIG``), so nothing is left behind.

The thing each process runs is a ``Service`` (``kubegate.app.ProxyService`` in production), built by
a factory ``(config, host, port, worker_index) -> Service``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kubegate.config import Config, load_config
from kubegate.metrics_server import MULTIPROC_ENV, FunctionCollector, MetricsServer
from proxy.memory import tune_allocator

log = logging.getLogger("kubegate.workers")

RESTART_BACKOFF_MIN = 1.0
RESTART_BACKOFF_MAX = 30.0
HEALTHY_RESET_AFTER = 60.0


class Service(Protocol):
    """One full proxy in one process."""

    port: int

    async def start(self) -> None:
        """Bind (SO_REUSEPORT) and begin serving; ``port`` is then the bound port."""

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason when not)."""

    async def stop(self, grace: float) -> None:
        """Stop accepting; let in-flight requests finish within ``grace`` seconds; close the rest."""


ServiceFactory = Callable[[Config, str, int, int], Service]


def reuseport_socket(host: str, port: int, *, listen: bool, backlog: int = 4096) -> socket.socket:
    """A TCP socket bound with SO_REUSEPORT (and SO_REUSEADDR); listening when ``listen``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        if listen:
            sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise OSError(exc.errno, f"cannot listen on {where}: {exc.strerror or exc}") from None
    return sock


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _shutdown_signals(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


# ------------------------------------------------------------------------------------------ single

async def serve_single(cfg: Config, factory: ServiceFactory, stop: asyncio.Event,
                       on_ready: Callable[[Service, MetricsServer | None], None] | None = None,
                       collectors: Sequence[Any] = ()) -> None:
    """Run one service plus the metrics listener in this event loop until ``stop`` is set."""
    service = factory(cfg, cfg.proxy.listen.host, cfg.proxy.listen.port, 0)
    stopping = False

    def readiness() -> tuple[bool, str]:
        if stopping:
            return False, "shutting down"
        return service.readiness()

    metrics: MetricsServer | None = None
    await service.start()
    try:
        if cfg.metrics.enabled:
            metrics = MetricsServer(cfg.metrics.listen.host, cfg.metrics.listen.port, readiness,
                                    collectors=[*collectors, FunctionCollector(lambda: _worker_families(
                                        1, 0 if stopping else int(service.readiness()[0]), 0))])
            await metrics.start()
        log.info("kubegate serving", extra={"listen": f"{cfg.proxy.listen.host}:{service.port}",
                                            "workers": 1, "metrics_port": metrics.port if metrics else None})
        if on_ready is not None:
            on_ready(service, metrics)
        await stop.wait()
        stopping = True
        log.info("shutting down", extra={"grace_seconds": cfg.proxy.limits.shutdown_grace})
    finally:
        stopping = True
        await service.stop(cfg.proxy.limits.shutdown_grace)
        if metrics is not None:
            await metrics.close()
    log.info("stopped")


def _worker_families(configured: int, ready: int, restarts: int) -> list[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    workers = GaugeMetricFamily("kubegate_workers", "Proxy worker processes, by state.", labels=["state"])
    workers.add_metric(["configured"], configured)
    workers.add_metric(["ready"], ready)
    return [workers, CounterMetricFamily("kubegate_worker_restarts", "Worker processes restarted after exiting.",
                                         value=restarts)]


# Summed over the processes; the other process_* samples (start time, fd limit) are the first pid's.
_SUMMED_PROCESS_SAMPLES = frozenset({"process_cpu_seconds_total", "process_resident_memory_bytes",
                                     "process_virtual_memory_bytes", "process_open_fds"})


def process_families(pids: Sequence[int]) -> list[Any]:
    """The standard ``process_*`` metrics for a group of processes (the supervisor first, then its
    workers), read from ``/proc`` by prometheus-client's own ``ProcessCollector``: CPU seconds, memory
    and open descriptors summed, start time and descriptor limit of the first. Multiprocess mode has no
    ``process_*`` metrics of its own, so with several workers the supervisor exports these."""
    from prometheus_client import ProcessCollector

    families: dict[str, Any] = {}
    for pid in pids:
        try:
            collected = list(ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect())
        except OSError:  # the process exited meanwhile
            continue
        for family in collected:
            if family.name not in families:
                families[family.name] = family
                continue
            mine = families[family.name]
            for i, sample in enumerate(family.samples):
                if sample.name in _SUMMED_PROCESS_SAMPLES and i < len(mine.samples):
                    mine.samples[i] = mine.samples[i]._replace(value=mine.samples[i].value + sample.value)
    return list(families.values())


def run_single(cfg: Config, factory: ServiceFactory, collectors: Sequence[Any] = ()) -> int:
    install_uvloop()
    tune_allocator()

    async def main() -> None:
        stop = asyncio.Event()
        _shutdown_signals(asyncio.get_running_loop(), stop)
        await serve_single(cfg, factory, stop, collectors=collectors)

    asyncio.run(main())
    return 0


# -------------------------------------------------------------------------------------- supervisor

@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    ready: bool = False
    started_at: float = 0.0
    backoff: float = RESTART_BACKOFF_MIN
    restarts: int = 0
    reader: asyncio.Task[None] | None = None


class Supervisor:
    """Runs ``workers`` worker processes on one port; see the module docstring."""

    def __init__(self, cfg: Config, config_path: str | None, workers: int,
                 worker_argv: Callable[[str | None, str, int, int, int], list[str]] | None = None,
                 collectors: Sequence[Any] = ()) -> None:
        self.cfg = cfg
        self.collectors = [*collectors, FunctionCollector(lambda: _worker_families(
            self.n, sum(1 for w in self.workers if w.ready), sum(w.restarts for w in self.workers))),
            FunctionCollector(lambda: process_families([os.getpid(), *self._worker_pids()]))]
        self.config_path = config_path
        self.n = workers
        self.worker_argv = worker_argv or default_worker_argv
        self.workers = [_Worker(i) for i in range(workers)]
        self.port = cfg.proxy.listen.port
        self.metrics: MetricsServer | None = None
        self.stopping = False
        self._reservation: socket.socket | None = None
        self._own_multiproc_dir: str | None = None

    def _worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers if w.proc is not None and w.proc.poll() is None]

    # readiness -------------------------------------------------------------------------------
    def readiness(self) -> tuple[bool, str]:
        if self.stopping:
            return False, "shutting down"
        waiting = [w.index for w in self.workers if not w.ready]
        if waiting:
            return False, f"workers not ready: {waiting}"
        return True, ""

    # lifecycle -------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event,
                  on_ready: Callable[[Supervisor], None] | None = None) -> None:
        if not os.environ.get(MULTIPROC_ENV):
            self._own_multiproc_dir = tempfile.mkdtemp(prefix="kubegate-metrics-")
            os.environ[MULTIPROC_ENV] = self._own_multiproc_dir
        host = self.cfg.proxy.listen.host
        self._reservation = reuseport_socket(host, self.cfg.proxy.listen.port, listen=False)
        self.port = self._reservation.getsockname()[1]
        try:
            if self.cfg.metrics.enabled:
                self.metrics = MetricsServer(self.cfg.metrics.listen.host, self.cfg.metrics.listen.port,
                                             self.readiness, collectors=self.collectors)
                await self.metrics.start()
            for worker in self.workers:
                self._spawn(worker)
            watchers = [asyncio.create_task(self._watch(w, stop)) for w in self.workers]
            log.info("supervisor started", extra={"listen": f"{host}:{self.port}", "workers": self.n,
                                                  "metrics_port": self.metrics.port if self.metrics else None})
            if on_ready is not None:
                on_ready(self)
            await stop.wait()
            self.stopping = True
            await self._stop_all()
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        finally:
            self.stopping = True
            await self._stop_all()
            if self.metrics is not None:
                await self.metrics.close()
            self._reservation.close()
            if self._own_multiproc_dir:
                shutil.rmtree(self._own_multiproc_dir, ignore_errors=True)
                os.environ.pop(MULTIPROC_ENV, None)
        log.info("supervisor stopped")

    def _spawn(self, worker: _Worker) -> None:
        read_fd, write_fd = os.pipe()
        argv = self.worker_argv(self.config_path, self.cfg.proxy.listen.host, self.port, worker.index,
                                write_fd)
        try:
            worker.proc = subprocess.Popen(argv, pass_fds=(write_fd,), env=dict(os.environ))
        finally:
            os.close(write_fd)
        worker.ready = False
        worker.started_at = time.monotonic()
        worker.reader = asyncio.create_task(self._read_status(worker, read_fd))
        log.info("worker started", extra={"worker": worker.index, "worker_pid": worker.proc.pid})

    async def _read_status(self, worker: _Worker, fd: int) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        pipe = os.fdopen(fd, "rb", buffering=0)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        try:
            while True:
                byte = await reader.read(1)
                if not byte:
                    break
                worker.ready = byte == b"R"
        finally:
            worker.ready = False
            transport.close()

    async def _watch(self, worker: _Worker, stop: asyncio.Event) -> None:
        while not stop.is_set():
            proc = worker.proc
            assert proc is not None
            if worker.reader is not None:
                await worker.reader  # the status pipe reaches EOF when the worker exits
            code = await asyncio.to_thread(proc.wait)
            _mark_dead(proc.pid)
            if stop.is_set() or self.stopping:
                return
            healthy_for = time.monotonic() - worker.started_at
            if healthy_for > HEALTHY_RESET_AFTER:
                worker.backoff = RESTART_BACKOFF_MIN
            log.error("worker exited; restarting", extra={
                "worker": worker.index, "worker_pid": proc.pid, "exit_code": code,
                "restart_in_seconds": worker.backoff})
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), worker.backoff)
            if stop.is_set():
                return
            worker.backoff = min(worker.backoff * 2, RESTART_BACKOFF_MAX)
            worker.restarts += 1
            self._spawn(worker)

    async def _stop_all(self) -> None:
        alive = [w for w in self.workers if w.proc is not None and w.proc.poll() is None]
        for worker in alive:
            assert worker.proc is not None
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.cfg.proxy.limits.shutdown_grace + 5.0
        for worker in alive:
            assert worker.proc is not None and worker.reader is not None
            try:
                await asyncio.wait_for(asyncio.shield(worker.reader), max(0.0, deadline - time.monotonic()))
                await asyncio.wait_for(asyncio.to_thread(worker.proc.wait), 5.0)
            except TimeoutError:
                log.warning("worker did not stop in time; killing", extra={"worker_pid": worker.proc.pid})
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
                await asyncio.to_thread(worker.proc.wait)
            _mark_dead(worker.proc.pid)


def _mark_dead(pid: int) -> None:
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        with contextlib.suppress(Exception):
            multiprocess.mark_process_dead(pid)


READINESS_INTERVAL = 0.5  # seconds between a worker's readiness checks after start


def default_worker_argv(config_path: str | None, host: str, port: int, index: int, ready_fd: int) -> list[str]:
    argv = [sys.executable, "-m", "kubegate.workers", "--host", host, "--port", str(port),
            "--index", str(index), "--ready-fd", str(ready_fd)]
    if config_path:
        argv += ["--config", config_path]
    return argv


def run_supervisor(cfg: Config, config_path: str | None, workers: int, collectors: Sequence[Any] = ()) -> int:
    install_uvloop()

    async def main() -> None:
        stop = asyncio.Event()
        _shutdown_signals(asyncio.get_running_loop(), stop)
        await Supervisor(cfg, config_path, workers, collectors=collectors).run(stop)

    asyncio.run(main())
    return 0


# ------------------------------------------------------------------------------------------ worker

def _die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent (the supervisor) dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def worker_main(argv: list[str] | None = None, factory: ServiceFactory | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubegate.workers",
                                     description="one kubegate worker process (started by the supervisor)")
    parser.add_argument("--config")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_parent()
    if os.getppid() == 1:  # the supervisor is already gone
        return 1
    cfg = load_config(args.config)
    from kubegate import logging as kglog

    kglog.configure(cfg.log.level, cfg.log.format)
    if factory is None:
        from kubegate.app import ProxyService

        factory = ProxyService.factory
    ready = os.fdopen(args.ready_fd, "wb", buffering=0)
    install_uvloop()
    tune_allocator()

    async def main() -> None:
        stop = asyncio.Event()
        _shutdown_signals(asyncio.get_running_loop(), stop)
        service = factory(cfg, args.host, args.port, args.index)
        await service.start()
        ready.write(b"R")
        reported = True
        try:
            while not stop.is_set():  # readiness can change later (the shared backend unreachable)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), READINESS_INTERVAL)
                now_ready = service.readiness()[0]
                if now_ready != reported and not stop.is_set():
                    reported = now_ready
                    ready.write(b"R" if now_ready else b"N")
        finally:
            with contextlib.suppress(OSError):
                ready.write(b"N")
            await service.stop(cfg.proxy.limits.shutdown_grace)

    try:
        asyncio.run(main())
    finally:
        with contextlib.suppress(OSError):
            ready.close()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
