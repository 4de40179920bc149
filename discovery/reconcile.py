"""Reconcile (pure): what a discovery run must create, update and delete.

A run of the discovery service for ``(origin, discovery_group)`` — e.g. ``("aws", "prod")`` — owns
exactly the current records with that origin AND that group. It

- creates the desired clusters that do not exist yet,
- updates its own clusters whose definition changed,
- deletes its own clusters that are no longer desired — but only when the fetch was complete: a failed
  list (an API error in any region/subscription) is NOT an empty list, so a partial run deletes nothing,
- never touches a cluster of another origin or another group; a desired name already taken by one is a
  conflict, reported and skipped.

Two instances of the same group fed the same cloud state compute the same desired records, so their plans
converge (the second finds nothing to do). No I/O, no clock: tables test it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from discovery.store import ClusterRecord


@dataclass(frozen=True, slots=True)
class Plan:
    create: tuple[ClusterRecord, ...] = ()
    update: tuple[ClusterRecord, ...] = ()
    delete: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    kept: tuple[str, ...] = field(default=())  # ours, not desired, kept because the fetch was partial

    @property
    def empty(self) -> bool:
        return not (self.create or self.update or self.delete)


def owned(record: ClusterRecord, origin: str, group: str) -> bool:
    return record.origin == origin and record.discovery_group == group


def reconcile(
    desired: Iterable[ClusterRecord],
    current: Mapping[str, ClusterRecord],
    *,
    origin: str,
    group: str,
    complete: bool = True,
) -> Plan:
    create: list[ClusterRecord] = []
    update: list[ClusterRecord] = []
    conflicts: list[str] = []
    wanted: set[str] = set()
    for record in sorted(desired, key=lambda r: r.name):
        if not owned(record, origin, group):
            raise ValueError(f"desired record {record.name!r} is not of origin {origin!r} group {group!r}")
        if record.name in wanted:
            conflicts.append(f"cluster {record.name!r} was discovered twice in one run; keeping the first")
            continue
        wanted.add(record.name)
        existing = current.get(record.name)
        if existing is None:
            create.append(record)
        elif not owned(existing, origin, group):
            conflicts.append(
                f"cluster {record.name!r} discovered by {origin}/{group or '-'} already exists "
                f"(origin {existing.origin}, group {existing.discovery_group or '-'}); left alone"
            )
        elif existing != record:
            update.append(record)
    ours = sorted(name for name, rec in current.items() if owned(rec, origin, group) and name not in wanted)
    if complete:
        return Plan(tuple(create), tuple(update), tuple(ours), tuple(conflicts))
    return Plan(tuple(create), tuple(update), (), tuple(conflicts), kept=tuple(ours))
