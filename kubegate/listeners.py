"""Listener safety: who already serves an address, so that ``kubegate start`` can say so.

The proxy's listening sockets use ``SO_REUSEPORT`` so that its own workers share one port; the kernel
would let a second ``kubegate start`` (same user) join that group too and silently take half the
connections. ``kubegate.preflight`` binds a probe socket *without* ``SO_REUSEPORT`` before anything
starts; when that fails, ``owner_problem`` finds the owner of the listening (or reserved) socket in
``/proc/net/tcp{,6}`` and ``/proc/<pid>/fd``, and start-up stops with a message naming the address
and that PID.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

__all__ = ["held_by", "owner_problem", "socket_owner"]

_LISTEN, _CLOSE = "0A", "07"  # /proc/net/tcp states: listening, and bound but not listening


def _parse_address(text: str, v6: bool) -> tuple[str, int]:
    host_hex, port_hex = text.split(":")
    raw = bytes.fromhex(host_hex)
    if v6:
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        host = str(ipaddress.IPv6Address(raw))
    else:
        host = str(ipaddress.IPv4Address(raw[::-1]))
    return host, int(port_hex, 16)


def _listening_inodes(host: str, port: int) -> list[int]:
    wildcards = {"0.0.0.0", "::"}
    inodes = []
    for name, v6 in (("tcp", False), ("tcp6", True)):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] not in (_LISTEN, _CLOSE):
                continue
            local_host, local_port = _parse_address(fields[1], v6)
            if local_port != port:
                continue
            if local_host.startswith("::ffff:"):
                local_host = local_host[7:]
            if host in wildcards or local_host in wildcards or local_host == host:
                inode = int(fields[9])
                if inode:
                    inodes.append(inode)
    return inodes


def socket_owner(host: str, port: int) -> tuple[int, str] | None:
    """(pid, command line) of a process holding a listening or bound TCP socket on host:port."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(host, port)}
    if not wanted:
        return None
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fds = os.listdir(f"/proc/{entry.name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry.name}/fd/{fd}") in wanted:
                    cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes().replace(b"\0", b" ").strip()
                    return int(entry.name), cmdline.decode(errors="replace")
            except OSError:
                continue
    return None


def owner_problem(host: str, port: int) -> str | None:
    """Who serves host:port, as a sentence for a refusal (None when no owner can be found: only
    TIME_WAIT leftovers, or a process this user may not inspect)."""
    owner = socket_owner(host, port)
    if owner is None:
        return None
    pid, cmdline = owner
    who = "another kubegate process" if "kubegate" in cmdline else f"another process ({cmdline[:80]})"
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return (f"{address} is already served by {who} (pid {pid}); stop it or choose another address "
            "(SO_REUSEPORT is shared only between one kubegate's own workers)")


def held_by(pid: int, host: str, *ports: int) -> bool:
    """Whether process ``pid`` or one of its children (``kubegate start --workers N`` forks them) holds
    the listener on each of ``ports``. What a caller checks before trusting an answer on a port it
    picked free a moment ago: another process may have taken the port meanwhile."""
    family = {pid}
    try:
        family.update(int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    except OSError:
        pass
    for port in ports:
        owner = socket_owner(host, port)
        if owner is None or owner[0] not in family:
            return False
    return True
