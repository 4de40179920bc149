"""``kubegate.listeners``: who holds a listening port, read from ``/proc`` — what ``kubegate start``
names when its address is taken, and what the tests check before trusting a ``/readyz`` answer on a
port they picked free a moment ago."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from kubegate.listeners import held_by, socket_owner

LISTENER = """
import os, socket, sys, time
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(); socks.append(s)
ports = " ".join(str(s.getsockname()[1]) for s in socks)
parent = os.getpid()
if sys.argv[2] == "fork" and os.fork() == 0:  # the child holds them too (until the parent is gone)
    while os.getppid() == parent:
        time.sleep(0.05)
    sys.exit()
if sys.argv[2] == "fork":  # the parent closes its copies
    for s in socks: s.close()
print(ports, flush=True)
time.sleep(60)
"""


def listening(count: int, how: str) -> tuple[subprocess.Popen[str], list[int]]:
    proc = subprocess.Popen([sys.executable, "-c", LISTENER, str(count), how], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ports = [int(p) for p in proc.stdout.readline().split()]
    return proc, ports


@pytest.fixture
def procs():
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait(5)


def test_the_process_holding_a_listener_is_named_with_its_command_line(procs):
    proc, [port] = listening(1, "plain")
    procs.append(proc)
    owner = socket_owner("127.0.0.1", port)
    assert owner is not None and owner[0] == proc.pid and "socket.socket()" in owner[1]


def test_held_by_needs_every_port_held_by_that_process(procs):
    mine, [first, second] = listening(2, "plain")
    other, [foreign] = listening(1, "plain")
    procs.extend([mine, other])
    assert held_by(mine.pid, "127.0.0.1", first, second)
    assert not held_by(mine.pid, "127.0.0.1", first, foreign)  # the other process's port
    assert not held_by(other.pid, "127.0.0.1", first)


def test_held_by_counts_the_children_of_the_process(procs):
    """``kubegate start --workers N``: the workers, children of the supervisor, hold the proxy port."""
    parent, [port] = listening(1, "fork")
    procs.append(parent)
    deadline = time.monotonic() + 5
    while socket_owner("127.0.0.1", port) is None or socket_owner("127.0.0.1", port)[0] == parent.pid:
        assert time.monotonic() < deadline, "the parent kept its copy of the listener"
        time.sleep(0.02)
    assert held_by(parent.pid, "127.0.0.1", port)


def test_a_port_nobody_holds_is_held_by_nobody():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert socket_owner("127.0.0.1", port) is None
    assert not held_by(1, "127.0.0.1", port)


def test_free_ports_are_drawn_below_the_ephemeral_range_and_never_twice():
    """``kubegate.demo.free_port``, which the tests and the demo use to name ports in configs before the
    process that binds them starts: below ``ip_local_port_range`` no outgoing connection or ``bind(0)``
    of another process takes the port meanwhile, and this process never gets the same one twice."""
    import socket
    from pathlib import Path

    from kubegate.demo import free_port

    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(port < low for port in ports)
    for port in ports[:20]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free indeed


def test_a_port_in_use_is_not_handed_out(monkeypatch):
    import random
    import socket

    from kubegate.demo import free_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        draws = iter([busy, busy])
        monkeypatch.setattr(random, "randrange", lambda a, b: next(draws, random.Random().randrange(a, b)))
        assert free_port() != busy
