"""Roles in the shared backend: ``roles/<name>`` → the YAML of one role (``kubegate roles apply -f``).

``SharedRoles`` is a role source like ``rbac.RoleWatcher`` (``current() -> RoleSet``): a watched
in-memory copy, re-parsed only when an item changed (an identity compare per call otherwise), so every
replica decides with the same roles within the watch delay. A stored role that no longer parses (a
newer kubegate wrote it) is left out and logged; the others stay in force.
"""

from __future__ import annotations

import logging
from typing import Any

from backend.base import Backend
from backend.cache import WatchedPrefix
from rbac.roles import Role, RoleError, RoleSet, parse_roles_yaml

log = logging.getLogger(__name__)

PREFIX = "roles/"


def parse_role_item(name: str, text: str, where: str) -> Role:
    roles = parse_roles_yaml(text, where)
    if len(roles) != 1 or roles[0].name != name:
        raise RoleError(f"must hold exactly the role {name!r}", file=where)
    return roles[0]


class SharedRoles:
    def __init__(self, backend: Backend, *, watch: bool = True) -> None:
        self.backend = backend
        self.errors: list[RoleError] = []
        self._items: Any = None
        self._set = RoleSet()
        self.cache: WatchedPrefix | None = None
        if watch:
            self.cache = WatchedPrefix(backend, PREFIX)
            self.cache.start()

    def stop(self) -> None:
        if self.cache is not None:
            self.cache.stop()

    def current(self) -> RoleSet:
        items = self.cache.items if self.cache is not None else None
        if items is not None and items is self._items:
            return self._set
        if items is None:
            found, _ = self.backend.get_range(PREFIX)
            items = {item.key: item for item in found}
        roles, errors, refused = [], [], {}
        for key, item in sorted(items.items()):
            where = f"{self.backend.name}:{key}"
            try:
                roles.append(parse_role_item(key[len(PREFIX):], item.value.decode(), where))
            except (RoleError, UnicodeDecodeError) as exc:
                error = exc if isinstance(exc, RoleError) else RoleError(str(exc), file=where)
                log.error("stored role left out: %s", error)
                errors.append(error)
                refused[where] = error
        self._items, self._set, self.errors = items, RoleSet(roles, refused=refused), errors
        return self._set

    def names(self) -> list[str]:
        return self.current().names()
