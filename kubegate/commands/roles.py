"""``kubegate roles apply -f FILE / ls / rm NAME``: the roles every replica decides with.

With ``backend.type: etcd`` roles live in the shared backend (``roles/<name>``, one YAML role each) and
reach every replica by watch. With ``local`` they are files in ``auth.roles_dir`` (``<name>.yaml``,
written atomically), which the proxy already reloads: a roles directory stays possible for one host.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from certs.files import write_atomic
from kubegate.commands.ca import CommandError, add_config_argument, load_cfg, report_errors
from kubegate.shared import open_backend
from rbac.roles import RoleError, load_roles_dir, parse_roles_yaml

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    roles = subparsers.add_parser("roles", help="store, list and remove kubegate roles")
    sub = roles.add_subparsers(dest="roles_command", metavar="SUBCOMMAND")
    sub.required = True
    apply = sub.add_parser("apply", help="create or replace the roles of a YAML file (validated first)")
    apply.add_argument("-f", "--file", required=True, metavar="FILE", help="YAML with one or more roles ('-': stdin)")
    apply.set_defaults(func=report_errors(run_apply))
    ls = sub.add_parser("ls", help="list the stored roles")
    ls.set_defaults(func=report_errors(run_ls))
    rm = sub.add_parser("rm", help="remove a stored role")
    rm.add_argument("name")
    rm.set_defaults(func=report_errors(run_rm))
    for p in (apply, ls, rm):
        add_config_argument(p)


def _role_file(roles_dir: str, name: str) -> Path:
    if not name or "/" in name or name.startswith(".") or os.sep in name:
        raise CommandError(f"role name {name!r} cannot be a file name in auth.roles_dir")
    return Path(roles_dir) / f"{name}.yaml"


def _split_documents(text: str, where: str) -> list[tuple[str, str]]:
    """(name, YAML of that one role) per role in the text, every role validated."""
    import yaml

    try:
        docs = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise CommandError(f"{where}: invalid YAML: {exc}") from None
    out = []
    for doc in docs:
        one = yaml.safe_dump(doc, sort_keys=False)
        try:
            (role,) = parse_roles_yaml(one, where)
        except RoleError as exc:
            raise CommandError(str(exc)) from None
        out.append((role.name, one))
    if not out:
        raise CommandError(f"{where}: no roles in the file")
    return out


def run_apply(args: argparse.Namespace) -> int:
    cfg = load_cfg(args)
    where = "<stdin>" if args.file == "-" else args.file
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"cannot read {where}: {exc}") from None
    roles = _split_documents(text, where)
    backend = open_backend(cfg)
    for name, body in roles:
        if backend is None:
            path = _role_file(cfg.auth.roles_dir, name)
            existed = path.exists()
            write_atomic(path, body, 0o644)
        else:
            from kubegate.shared_roles import PREFIX

            existed = backend.get(PREFIX + name) is not None
            backend.put(PREFIX + name, body.encode())
        print(f"role {name} {'updated' if existed else 'created'}")
    return 0


def run_ls(args: argparse.Namespace) -> int:
    cfg = load_cfg(args)
    backend = open_backend(cfg)
    if backend is None:
        try:
            names = load_roles_dir(cfg.auth.roles_dir).names()
        except RoleError as exc:
            raise CommandError(f"cannot load roles (auth.roles_dir): {exc}") from None
    else:
        from kubegate.shared_roles import SharedRoles

        source = SharedRoles(backend, watch=False)
        names = source.names()
        for error in source.errors:
            print(f"kubegate: warning: {error}", file=sys.stderr)
    if not names:
        print("no roles")
    for name in names:
        print(name)
    return 0


def run_rm(args: argparse.Namespace) -> int:
    cfg = load_cfg(args)
    backend = open_backend(cfg)
    if backend is None:
        path = _role_file(cfg.auth.roles_dir, args.name)
        if not path.exists():
            raise CommandError(f"no role file {path} (a role defined in another file is removed there)")
        path.unlink()
    else:
        from kubegate.shared_roles import PREFIX

        if not backend.delete(PREFIX + args.name):
            raise CommandError(f"no stored role named {args.name!r}")
    print(f"role {args.name} removed")
    return 0
