"""CustomResourceDefinitions served: a stored CRD adds its kinds to the API.

``crd_resource_types(crd)`` is the ``ResourceType`` of each served version of a CRD (its group, names,
scope, ``status`` subresource); ``crd_status(crd)`` what the apiextensions controller would report
(names accepted, established). ``sandbox.api.Api`` rebuilds its catalog and discovery documents from
the built-in resources plus every stored CRD after each CRD write, so ``kubectl apply`` of a CRD
followed by one of its objects works as on a cluster; deleting a CRD deletes its objects.
"""

from __future__ import annotations

from typing import Any

from sandbox.resources import CRUD_VERBS, ResourceType

CRD_GROUP = "apiextensions.k8s.io"
CRD_PLURAL = "customresourcedefinitions"


def crd_resource_types(crd: dict[str, Any]) -> list[ResourceType]:
    """One ``ResourceType`` per served version; [] for a CRD without a group, kind or plural."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group, kind, plural = spec.get("group"), names.get("kind"), names.get("plural")
    if not (isinstance(group, str) and group and isinstance(kind, str) and kind
            and isinstance(plural, str) and plural):
        return []
    out = []
    for version in spec.get("versions") or []:
        if not isinstance(version, dict) or not version.get("name") or version.get("served") is False:
            continue
        status = isinstance(version.get("subresources"), dict) and "status" in version["subresources"]
        out.append(ResourceType(
            group, str(version["name"]), plural, kind, spec.get("scope", "Namespaced") == "Namespaced",
            CRUD_VERBS, tuple(names.get("shortNames") or ()), tuple(names.get("categories") or ()),
            singular=str(names.get("singular") or ""), builtin=False, list_kind=str(names.get("listKind") or ""),
            subresources=("status",) if status else (), tracks_generation=True,
        ))
    return out


def crd_status(crd: dict[str, Any], now: str) -> dict[str, Any]:
    """The status a cluster reports for an accepted CRD: names accepted, established, stored versions."""
    spec = crd.get("spec") or {}
    names = dict(spec.get("names") or {})
    names.setdefault("singular", str(names.get("plural", "")))
    names.setdefault("listKind", f"{names.get('kind', '')}List")
    stored = [v["name"] for v in spec.get("versions") or [] if isinstance(v, dict) and v.get("storage")]
    return {
        "acceptedNames": names,
        "storedVersions": stored,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts",
             "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted"},
        ],
    }


__all__ = ["CRD_GROUP", "CRD_PLURAL", "crd_resource_types", "crd_status"]
