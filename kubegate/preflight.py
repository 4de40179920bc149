"""Checks of a loaded config against the machine, before anything is created.

    problems = preflight(cfg)          # [] when kubegate can start with cfg here

``kubegate config check`` and ``kubegate start`` run the same checks and report every problem in one
pass, each as ``<file>: <key>: <problem>`` like the config loader's own errors; ``start`` creates
nothing (state directory, CA, serving certificate) until there is none. Checked:

- every path the config names: ``auth.roles_dir`` (a directory whose role files all load),
  ``kubernetes_service.kubeconfig_files`` and ``clusters_dir``, ``proxy.tls.cert_file`` /
  ``key_file``, ``proxy.client_ca_file`` (readable), ``state_dir`` and the audit log (existing and
  writable, or creatable under a writable directory);
- every port: ``proxy.listen`` and ``metrics.listen`` can be bound now (port 0 always can). The test
  bind does not set ``SO_REUSEPORT``, so another proxy already serving the port is found too.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable, Iterable
from pathlib import Path

from kubegate.config import Address, Config

_Bad = Callable[[str, str], None]  # bad(key, message): how the checks report a problem


def preflight(cfg: Config, *, ports: bool = True) -> list[str]:
    """Every problem that would stop kubegate from starting with ``cfg`` on this machine."""
    source = cfg.source or "<defaults>"
    problems: list[str] = []

    def bad(key: str, message: str) -> None:
        problems.append(f"{source}: {key}: {message}")

    if cfg.backend.type != "etcd":  # with etcd, roles live in the shared backend
        _check_roles(cfg.auth.roles_dir, bad)
    for i, path in enumerate(kubeconfig_paths(cfg.kubernetes_service.kubeconfig_files)):
        _readable_file(f"kubernetes_service.kubeconfig_files[{i}]", path, bad)
    if cfg.kubernetes_service.clusters_dir is not None:
        _directory("kubernetes_service.clusters_dir", cfg.kubernetes_service.clusters_dir, bad)
    for key, path in (("proxy.tls.cert_file", cfg.proxy.tls.cert_file),
                      ("proxy.tls.key_file", cfg.proxy.tls.key_file),
                      ("proxy.client_ca_file", cfg.proxy.client_ca_file)):
        if path is not None:
            _readable_file(key, path, bad)
    _writable("state_dir", cfg.state_dir, bad, directory=True)
    if cfg.audit.enabled and cfg.audit_log_file != "-":
        _writable("audit.log_file", cfg.audit_log_file, bad, directory=False)
    if ports:
        _bindable("proxy.listen", cfg.proxy.listen, bad)
        if cfg.metrics.enabled:
            _bindable("metrics.listen", cfg.metrics.listen, bad)
    return problems


def kubeconfig_paths(entries: Iterable[object]) -> list[str]:
    """The file paths of ``kubernetes_service.kubeconfig_files`` entries (a path, or an entry with
    ``.path``)."""
    return [str(getattr(entry, "path", entry)) for entry in entries]


def _check_roles(roles_dir: str, bad: _Bad) -> None:
    from rbac.roles import RoleError, load_roles_dir

    if not os.path.exists(roles_dir):
        bad("auth.roles_dir", f"{roles_dir} does not exist (kubegate needs roles to decide anything; "
                              "see examples/roles/)")
        return
    if not os.path.isdir(roles_dir):
        bad("auth.roles_dir", f"{roles_dir} is not a directory")
        return
    try:
        roles = load_roles_dir(roles_dir)
    except RoleError as exc:
        bad("auth.roles_dir", str(exc))
        return
    for exc in roles.refused.values():
        bad("auth.roles_dir", f"role file refused: {exc}")


def _readable_file(key: str, path: str, bad: _Bad) -> None:
    if not os.path.exists(path):
        bad(key, f"{path} does not exist")
    elif not os.path.isfile(path):
        bad(key, f"{path} is not a file")
    elif not os.access(path, os.R_OK):
        bad(key, f"{path} is not readable")


def _directory(key: str, path: str, bad: _Bad) -> None:
    if not os.path.exists(path):
        bad(key, f"{path} does not exist")
    elif not os.path.isdir(path):
        bad(key, f"{path} is not a directory")


def _creatable_under(path: str) -> str | None:
    """Why ``path`` (which does not exist) cannot be created, or None: its nearest existing ancestor
    must be a writable directory."""
    parent = Path(path).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created: {parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} is not writable"
    return None


def _writable(key: str, path: str, bad: _Bad, *, directory: bool) -> None:
    """``path`` is a writable directory (``directory``) or file, or can be created."""
    if os.path.exists(path):
        if directory and not os.path.isdir(path):
            bad(key, f"{path} is not a directory")
        elif not directory and not os.path.isfile(path):
            bad(key, f"{path} is not a file")
        elif not os.access(path, os.W_OK | (os.X_OK if directory else 0)):
            bad(key, f"{path} is not writable")
        return
    why = _creatable_under(path)
    if why:
        bad(key, f"{path} {why}")


def _bindable(key: str, address: Address, bad: _Bad) -> None:
    if address.port == 0:
        return
    why = bind_problem(address.host, address.port)
    if why:
        bad(key, f"cannot listen on {address}: {why}")


def bind_problem(host: str, port: int) -> str | None:
    """Why a TCP listener on (host, port) cannot be opened now, or None (bound and closed again)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror}"
    family, _, _, _, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(sockaddr)
        sock.listen(1)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            from kubegate.listeners import owner_problem

            owner = owner_problem(host, port)
            if owner is not None:
                return f"the address is already in use: {owner}"
            return "the address is already in use (is another kubegate or another server running?)"
        return (exc.strerror or str(exc)).lower()
    finally:
        sock.close()
    return None
