"""``kubegate users``: issue user certificates; lock and unlock users and certificates."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from certs.access import cap_ttl, unknown_roles
from certs.ca import CertificateAuthority, IssuedCertificate
from certs.files import write_atomic
from certs.locks import LockError, LockList, format_time, parse_time
from certs.store import FileAuthStore, IssuedRecord
from kubegate.commands.ca import (
    CommandError,
    add_config_argument,
    duration_argument,
    load_cfg,
    load_roles,
    open_ca,
    parse_traits,
    report_errors,
    roles_argument,
)
from kubegate.config import Config

__all__ = ["register", "checked_ttl", "issue_for", "DEFAULT_TTL"]

DEFAULT_TTL = timedelta(hours=8)


def add_identity_arguments(parser: argparse.ArgumentParser, *, roles_required: bool) -> None:
    """--roles / --ttl / --traits / --cluster: what goes into a new certificate (shared with kubeconfig)."""
    parser.add_argument(
        "--roles",
        type=roles_argument,
        required=roles_required,
        metavar="R1,R2",
        help="comma-separated kubegate roles (each must exist in auth.roles_dir); one certificate O per role",
    )
    parser.add_argument(
        "--ttl",
        type=duration_argument,
        default=DEFAULT_TTL,
        metavar="DURATION",
        help="certificate lifetime, e.g. 30m, 8h, 1h30m (default 8h); lowered to the smallest "
        "max_session_ttl of the roles",
    )
    parser.add_argument(
        "--traits",
        action="append",
        metavar="NAME=V1,V2",
        help="a trait for role templates, e.g. kubernetes_groups=dev,ops ({{internal.kubernetes_groups}}); "
        "repeat for several traits",
    )
    parser.add_argument(
        "--cluster",
        metavar="NAME",
        help="pin the certificate to this one cluster (it cannot reach any other)",
    )


def checked_ttl(cfg: Config, roles: list[str], ttl: timedelta) -> timedelta:
    """``ttl`` lowered to the roles' smallest max_session_ttl (saying so on stderr); ``CommandError`` when
    a role does not exist in auth.roles_dir. What a new user or bot certificate gets."""
    role_set = load_roles(cfg)
    missing = unknown_roles(roles, role_set)
    if missing:
        known = ", ".join(role_set.names()) or "none"
        in_refused = [f"{exc.role} is in refused file {file}" for file, exc in role_set.refused.items()
                      if exc.role in missing]
        hint = f"; {'; '.join(in_refused)}" if in_refused else ""
        where = "the shared backend" if cfg.backend.type == "etcd" else cfg.auth.roles_dir
        raise CommandError(f"unknown role(s): {', '.join(missing)} (roles in {where}: {known}{hint})")
    decision = cap_ttl(ttl, roles, role_set)
    if decision.capped:
        print(
            f"note: ttl lowered from {_span(decision.requested)} to {_span(decision.ttl)} "
            f"by role {decision.capped_by!r} (max_session_ttl)",
            file=sys.stderr,
        )
    return decision.ttl


def issue_for(
    cfg: Config,
    ca: CertificateAuthority,
    user: str,
    roles: list[str],
    ttl: timedelta,
    traits: dict[str, list[str]],
    cluster: str | None,
    kind: str = "user",
) -> IssuedCertificate:
    """Validate the roles against auth.roles_dir, cap the TTL, issue. Notes go to stderr."""
    capped = checked_ttl(cfg, roles, ttl)
    try:
        issued = ca.issue_user_certificate(user, roles, capped, traits=traits, cluster=cluster, kind=kind)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    # The CA's issued-serials record covers what operators issue too (the auth endpoint records its own).
    FileAuthStore.in_state_dir(cfg.state_dir).record_issued(IssuedRecord(
        serial=issued.serial, user=user, kind=kind, roles=tuple(roles), not_after=issued.not_after.timestamp(),
        issued_at=time.time(), via="operator"))
    return issued


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if v) or "0s"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "users",
        help="issue user certificates; lock and unlock users or certificates",
        description=(
            "Users are not stored anywhere: a user is whoever holds a certificate from kubegate's CA. "
            "The certificate carries the user name (CN), the roles (one O each), traits and an optional "
            "pinned cluster. Locks refuse a user, or one certificate by serial, on the next request."
        ),
    )
    sub = parser.add_subparsers(dest="users_command", metavar="SUBCOMMAND")
    sub.required = True

    issue = sub.add_parser(
        "issue",
        help="issue a client certificate for a user",
        description=(
            "Issue a client certificate (EC P-256) for --user with --roles, valid for --ttl capped by "
            "the roles' max_session_ttl. Writes <user>.crt and <user>.key (mode 0600) and ca.pem into "
            "--out, and prints the serial (for `users lock --serial`) and the expiry. For a ready-to-use "
            "kubeconfig, use `kubegate kubeconfig` instead."
        ),
    )
    add_config_argument(issue)
    issue.add_argument("--user", required=True, help="user name (certificate CN)")
    add_identity_arguments(issue, roles_required=True)
    issue.add_argument("--out", default=".", metavar="DIR", help="directory for the files (default: .)")
    issue.set_defaults(func=report_errors(run_issue))

    lock = sub.add_parser(
        "lock",
        help="refuse a user (or one certificate) from the next request on",
        description=(
            "Add a lock to <state_dir>/locks. Without --serial every certificate of USER is refused; with "
            "--serial only that certificate (USER may then be omitted). A running proxy refuses the next "
            "request and ends the locked identity's open streams. Locking again replaces the lock."
        ),
    )
    add_config_argument(lock)
    lock.add_argument("user", nargs="?", help="user (or bot-<name>) to lock")
    lock.add_argument(
        "--serial", metavar="HEX", help="lock only the certificate with this serial number (hex)"
    )
    when = lock.add_mutually_exclusive_group()
    when.add_argument(
        "--until", metavar="TIME", help="lock ends at this RFC 3339 time, e.g. 2026-12-01T00:00:00Z"
    )
    when.add_argument(
        "--for",
        dest="for_",
        type=duration_argument,
        metavar="DURATION",
        help="lock ends after this long, e.g. 1h",
    )
    lock.add_argument("--reason", default="", help="shown to the locked user and in `users locks ls`")
    lock.set_defaults(func=report_errors(run_lock))

    unlock = sub.add_parser(
        "unlock",
        help="remove a lock",
        description="Remove the lock on USER, or with --serial the lock on that certificate.",
    )
    add_config_argument(unlock)
    unlock.add_argument("user", nargs="?", help="user whose lock to remove")
    unlock.add_argument("--serial", metavar="HEX", help="remove the lock on this certificate serial instead")
    unlock.set_defaults(func=report_errors(run_unlock))

    locks = sub.add_parser("locks", help="inspect locks", description="Inspect the lock list.")
    locks_sub = locks.add_subparsers(dest="locks_command", metavar="SUBCOMMAND")
    locks_sub.required = True
    ls = locks_sub.add_parser(
        "ls",
        help="list the locks in force",
        description="List the locks in force (with --all also the expired ones not yet pruned).",
    )
    add_config_argument(ls)
    ls.add_argument("--all", action="store_true", help="include expired locks")
    ls.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")
    ls.set_defaults(func=report_errors(run_locks_ls))


def run_issue(args: argparse.Namespace) -> int:
    cfg = load_cfg(args)
    ca = open_ca(cfg)
    issued = issue_for(cfg, ca, args.user, args.roles, args.ttl, parse_traits(args.traits), args.cluster)
    out = Path(args.out)
    assert issued.key_pem is not None
    safe = args.user.replace(os.sep, "_")
    key_path = write_atomic(out / f"{safe}.key", issued.key_pem, 0o600)
    cert_path = write_atomic(out / f"{safe}.crt", issued.cert_pem, 0o644)
    ca_path = write_atomic(out / "ca.pem", ca.cert_pem, 0o644)
    print(f"certificate: {cert_path}")
    print(f"key:         {key_path}")
    print(f"CA:          {ca_path}")
    print(f"user:        {args.user}  roles: {', '.join(args.roles)}")
    print(f"serial:      {issued.serial}")
    print(f"expires:     {format_time(issued.not_after)}")
    return 0


def _lock_list(cfg: Config) -> LockList:
    """The ``locks`` file, or the shared lock list with ``backend.type: etcd`` (kubegate.shared)."""
    from kubegate.shared import lock_list

    return lock_list(cfg)


def run_lock(args: argparse.Namespace) -> int:
    cfg = load_cfg(args)
    if not args.user and not args.serial:
        raise CommandError("name a USER to lock, or --serial HEX for one certificate")
    until = None
    try:
        if args.until:
            until = parse_time(args.until)
        elif args.for_:
            until = datetime.now(tz=UTC) + args.for_
        locks = _lock_list(cfg)
        lock = (
            locks.lock_serial(args.serial, until, args.reason)
            if args.serial
            else locks.lock_user(args.user, until, args.reason)
        )
    except LockError as exc:
        raise CommandError(str(exc)) from None
    print(f"locked: {lock.describe()}")
    return 0


def run_unlock(args: argparse.Namespace) -> int:
    cfg = load_cfg(args)
    if not args.user and not args.serial:
        raise CommandError("name a USER to unlock, or --serial HEX")
    try:
        locks = _lock_list(cfg)
        removed = locks.unlock_serial(args.serial) if args.serial else locks.unlock_user(args.user)
    except LockError as exc:
        raise CommandError(str(exc)) from None
    what = f"certificate serial {args.serial}" if args.serial else f'user "{args.user}"'
    if not removed:
        raise CommandError(f"{what} is not locked")
    print(f"unlocked: {what}")
    return 0


def run_locks_ls(args: argparse.Namespace) -> int:
    cfg = load_cfg(args)
    locks = _lock_list(cfg)
    entries = locks.locks(include_expired=args.all)
    if locks.error:
        print(f"kubegate: warning: {locks.error}", file=sys.stderr)
    if args.output == "json":
        print(json.dumps([lock.to_json() for lock in entries], indent=2))
        return 0
    if not entries:
        print("no locks")
        return 0
    rows = [("KIND", "TARGET", "UNTIL", "CREATED", "REASON")]
    for lock in entries:
        rows.append(
            (
                lock.kind,
                lock.target,
                format_time(lock.until) if lock.until else "-",
                format_time(lock.created) if lock.created else "-",
                lock.reason or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])
    return 0
