"""Dynamic labels: ``spec.dynamic_labels: {key: {command: [...], period: 1h}}``.

Each command runs every ``period`` (first run at once) WITHOUT a shell (argv list), stdin closed, in its
own process group, with a timeout (default 10 s, never more than the period). Its stdout, trimmed, becomes
the label value.

Failure (documented error value, Teleport's convention from ``lib/labels``): when the command cannot be
started, exits non-zero or times out, the label value becomes ``"<error> output: <stdout>"`` — e.g.
``"exit status 1 output: "`` or ``"timed out after 10s output: "`` — and the failure is logged with the
cluster and the command. Such a value never equals a real value, so a selector or role that wants the real
value stops matching (fail closed). A hanging command is killed (its whole process group) at the timeout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from discovery.errors import DiscoveryError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
MIN_PERIOD = 1.0
MAX_VALUE_BYTES = 4096

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object, where: str = "") -> float:
    """A Go duration (``1h``, ``90s``, ``1m30s``) or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise DiscoveryError(f"{where}: bad duration {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or not value:
        raise DiscoveryError(f"{where}: bad duration {value!r}")
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(value):
        raise DiscoveryError(f"{where}: bad duration {value!r} (use e.g. 30s, 5m, 1h)")
    return total


@dataclass(frozen=True, slots=True)
class DynamicLabelSpec:
    key: str
    command: tuple[str, ...]
    period: float

    @classmethod
    def parse_map(cls, value: object, where: str) -> tuple[DynamicLabelSpec, ...]:
        if value is None:
            return ()
        if not isinstance(value, dict):
            raise DiscoveryError(f"{where}: dynamic_labels must be a map of label → {{command, period}}")
        specs = []
        for key, body in value.items():
            w = f"{where}: dynamic label {key!r}"
            if not isinstance(key, str) or not key or not isinstance(body, dict):
                raise DiscoveryError(f"{w}: needs a name and a mapping with command and period")
            command = body.get("command")
            if (
                not isinstance(command, list)
                or not command
                or not all(isinstance(part, str) for part in command)
            ):
                raise DiscoveryError(f"{w}: command must be a non-empty list of strings (no shell)")
            period = parse_duration(body.get("period", "1h"), w)
            if period < MIN_PERIOD:
                raise DiscoveryError(f"{w}: period must be at least {MIN_PERIOD:g}s")
            specs.append(cls(key=key, command=tuple(command), period=period))
        return tuple(sorted(specs, key=lambda s: s.key))

    def to_json(self) -> dict[str, object]:
        return {"command": list(self.command), "period": f"{self.period:g}s"}


def error_value(error: str, stdout: str) -> str:
    return f"{error} output: {stdout}"


async def run_label_command(command: tuple[str, ...], timeout: float) -> tuple[str, str | None]:
    """Run once; returns ``(value, None)`` on success or ``(error value, error)`` on failure."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        error = f"cannot start {command[0]!r}: {exc.strerror or exc}"
        return error_value(error, ""), error
    try:
        stdout, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        _kill_group(proc.pid)
        await proc.wait()
        error = f"timed out after {timeout:g}s"
        return error_value(error, ""), error
    except asyncio.CancelledError:
        _kill_group(proc.pid)
        raise
    text = stdout[:MAX_VALUE_BYTES].decode(errors="replace").strip()
    if proc.returncode != 0:
        error = f"exit status {proc.returncode}"
        return error_value(error, text), error
    return text, None


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


LabelsCallback = Callable[[str, dict[str, str]], None]


class DynamicLabelRunner:
    """Keeps the dynamic labels of many clusters up to date on the running event loop.

    ``set(cluster, specs)`` (re)starts the loops of a cluster (no-op when the specs are unchanged);
    ``on_update(cluster, labels)`` receives the full dynamic label map of the cluster after each run.
    """

    def __init__(self, on_update: LabelsCallback, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._on_update = on_update
        self._timeout = timeout
        self._specs: dict[str, tuple[DynamicLabelSpec, ...]] = {}
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}
        self._values: dict[str, dict[str, str]] = {}
        self.errors: dict[tuple[str, str], str] = {}

    def set(self, cluster: str, specs: tuple[DynamicLabelSpec, ...]) -> None:
        if self._specs.get(cluster) == specs:
            return
        self.stop(cluster)
        if not specs:
            return
        self._specs[cluster] = specs
        self._values[cluster] = {}
        self._tasks[cluster] = [
            asyncio.get_running_loop().create_task(self._loop(cluster, spec), name=f"dynlabel:{cluster}:{spec.key}")
            for spec in specs
        ]

    def sync(self, wanted: Mapping[str, tuple[DynamicLabelSpec, ...]]) -> None:
        for cluster in list(self._specs):
            if cluster not in wanted:
                self.stop(cluster)
        for cluster, specs in wanted.items():
            self.set(cluster, specs)

    def stop(self, cluster: str) -> None:
        self._specs.pop(cluster, None)
        self._values.pop(cluster, None)
        for task in self._tasks.pop(cluster, []):
            task.cancel()
        for key in [k for k in self.errors if k[0] == cluster]:
            del self.errors[key]

    def stop_all(self) -> None:
        for cluster in list(self._tasks):
            self.stop(cluster)

    async def _loop(self, cluster: str, spec: DynamicLabelSpec) -> None:
        timeout = min(self._timeout, spec.period)
        while True:
            value, error = await run_label_command(spec.command, timeout)
            if error is not None:
                log.error(
                    "cluster %r: dynamic label %r: command %r failed: %s", cluster, spec.key, list(spec.command), error
                )
                self.errors[(cluster, spec.key)] = error
            else:
                self.errors.pop((cluster, spec.key), None)
            values = self._values.get(cluster)
            if values is None:  # stopped meanwhile
                return
            values[spec.key] = value
            try:
                self._on_update(cluster, dict(values))
            except Exception:
                log.exception("cluster %r: applying dynamic labels failed", cluster)
            await asyncio.sleep(spec.period)
