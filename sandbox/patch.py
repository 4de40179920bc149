"""Patch algorithms: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch (the
subset kubectl sends: keyed list merging, ``$patch`` and ``$setElementOrder``/``$retainKeys``/
``$deleteFromPrimitiveList`` directives), and the field sets (``fieldsV1``) of server-side apply.

Pure functions on JSON values; they never mutate their inputs. Bad documents raise ``PatchError``
(the API answers 422/400 with its message).
"""

from __future__ import annotations

import copy
import json
from typing import Any


class PatchError(ValueError):
    pass


class PatchTestFailed(PatchError):
    pass


# ----------------------------------------------------------------------------------------------------
# JSON merge patch


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ----------------------------------------------------------------------------------------------------
# JSON patch


def _unescape_token(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str):
        raise PatchError(f"invalid JSON pointer {path!r}")
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f'invalid JSON pointer "{path}": must start with "/"')
    return [_unescape_token(t) for t in path[1:].split("/")]


def _index(container: list[Any], token: str, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PatchError(f'invalid array index "{token}"')
    idx = int(token)
    limit = len(container) + (1 if allow_end else 0)
    if idx >= limit:
        raise PatchError(f"array index {idx} out of bounds")
    return idx


def _walk(doc: Any, tokens: list[str], path: str) -> Any:
    """The value ``tokens`` (of the JSON pointer ``path``) lead to in ``doc``."""
    cur = doc
    for token in tokens:
        if isinstance(cur, dict):
            if token not in cur:
                raise PatchError(f'doc is missing path: "{path}"')
            cur = cur[token]
        elif isinstance(cur, list):
            cur = cur[_index(cur, token, False)]
        else:
            raise PatchError(f'doc is missing path: "{path}"')
    return cur


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    return _walk(doc, tokens[:-1], path)


def _get(doc: Any, path: str) -> Any:
    return _walk(doc, _pointer(path), path)


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, True), value)
    else:
        raise PatchError(f'doc is missing path: "{path}"')
    return doc


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise PatchError("cannot remove the document root")
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f'unable to remove nonexistent key: {last}: missing value')
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, False)]
    else:
        raise PatchError(f'doc is missing path: "{path}"')
    return doc


def json_patch(doc: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise PatchError("json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op:
            raise PatchError(f"invalid operation {op!r}: missing op")
        kind = op["op"]
        if "path" not in op:
            raise PatchError(f'operation "{kind}": missing path')
        path = op["path"]
        if kind == "add":
            if "value" not in op:
                raise PatchError('operation "add": missing value')
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            if "value" not in op:
                raise PatchError('operation "replace": missing value')
            _get(doc, path)
            tokens = _pointer(path)
            if not tokens:
                doc = copy.deepcopy(op["value"])
            else:
                parent = _parent(doc, tokens, path)
                if isinstance(parent, list):
                    parent[_index(parent, tokens[-1], False)] = copy.deepcopy(op["value"])
                else:
                    parent[tokens[-1]] = copy.deepcopy(op["value"])
        elif kind in ("move", "copy"):
            if "from" not in op:
                raise PatchError(f'operation "{kind}": missing from')
            value = copy.deepcopy(_get(doc, op["from"]))
            if kind == "move":
                if path.startswith(op["from"] + "/"):
                    raise PatchError("cannot move a value into one of its children")
                doc = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "test":
            if "value" not in op:
                raise PatchError('operation "test": missing value')
            if _get(doc, path) != op["value"]:
                raise PatchTestFailed(f'testing value {path} failed: test failed')
        else:
            raise PatchError(f'Unexpected kind: {kind}')
    return doc


# ----------------------------------------------------------------------------------------------------
# strategic merge patch

# list field name -> merge key, for the built-in types the sandbox serves
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
    "ownerReferences": "uid",
    "secrets": "name",
    "addresses": "type",
    "taints": "key",
    "readinessGates": "conditionType",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}
# "ports" merges on containerPort inside containers and on port inside a service spec
PORT_KEYS = ("containerPort", "port")


def _merge_key(field_name: str, items: list[Any]) -> str | None:
    if field_name == "ports":
        for item in items:
            if isinstance(item, dict):
                for key in PORT_KEYS:
                    if key in item:
                        return key
        return None
    return MERGE_KEYS.get(field_name)


def strategic_merge_patch(original: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be a JSON object")
    return _smp_map(original if isinstance(original, dict) else {}, patch)


def _smp_map(original: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return {}
    if directive is not None:
        raise PatchError(f"Unknown patch type: {directive} in map: {patch}")
    result = dict(original)
    retain = patch.get("$retainKeys")
    if retain is not None:
        if not isinstance(retain, list):
            raise PatchError("$retainKeys must be a list")
        result = {k: v for k, v in result.items() if k in retain}
    for key, value in patch.items():
        if key in ("$retainKeys", "$patch") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if isinstance(value, list) and isinstance(result.get(name), list):
                result[name] = [v for v in result[name] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
            continue
        current = result.get(key)
        if isinstance(value, dict):
            result[key] = _smp_map(current if isinstance(current, dict) else {}, value)
        elif isinstance(value, list):
            result[key] = _smp_list(key, current if isinstance(current, list) else [], value)
        else:
            result[key] = value
    return result


def _smp_list(field_name: str, original: list[Any], patch: list[Any]) -> list[Any]:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [copy.deepcopy(p) for p in patch if not (isinstance(p, dict) and p.get("$patch") == "replace")]
    key = _merge_key(field_name, patch or original)
    if key is None or not all(isinstance(p, dict) for p in patch):
        return copy.deepcopy(patch)
    result = list(original)
    positions = {item.get(key): i for i, item in enumerate(result) if isinstance(item, dict)}
    deleted: set[Any] = set()
    for item in patch:
        if key not in item:
            raise PatchError(f"map: {item} does not contain declared merge key: {key}")
        ident = item[key]
        if item.get("$patch") == "delete":
            deleted.add(ident)
            continue
        if ident in positions:
            idx = positions[ident]
            result[idx] = _smp_map(result[idx], item)
        else:
            positions[ident] = len(result)
            result.append(_smp_map({}, item))
    if deleted:
        result = [r for r in result if not (isinstance(r, dict) and r.get(key) in deleted)]
    return result


# ----------------------------------------------------------------------------------------------------
# server-side apply: merge semantics and fieldsV1 sets

def _list_key(field_name: str, items: list[Any]) -> str | None:
    key = _merge_key(field_name, items)
    if key and all(isinstance(i, dict) and key in i for i in items):
        return key
    if items and all(isinstance(i, dict) and "name" in i for i in items):
        return "name"
    return None


def fields_v1(obj: Any, skip_meta: bool = True) -> dict[str, Any]:
    """The fieldsV1 set of an applied configuration (``{"f:spec": {"f:replicas": {}}}``)."""
    out: dict[str, Any] = {}
    if not isinstance(obj, dict):
        return out
    for key, value in obj.items():
        if key.startswith("$") or (skip_meta and key in ("apiVersion", "kind")):
            continue
        if skip_meta and key == "metadata" and isinstance(value, dict):
            meta: dict[str, Any] = {}
            for mk in ("labels", "annotations"):
                if isinstance(value.get(mk), dict):
                    meta[f"f:{mk}"] = {f"f:{k}": {} for k in value[mk]}
            if meta:
                out["f:metadata"] = meta
            continue
        out[f"f:{key}"] = _fields_of(key, value)
    return out


def _fields_of(name: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        sub = fields_v1(value, skip_meta=False)
        if sub:
            sub["."] = {}
        return sub
    if isinstance(value, list):
        key = _list_key(name, value)
        if key is None:
            return {}
        sub: dict[str, Any] = {}
        for item in value:
            entry = fields_v1(item, skip_meta=False)
            entry["."] = {}
            sub[f"k:{json.dumps({key: item[key]}, separators=(',', ':'))}"] = entry
        return sub
    return {}


def apply_merge(live: Any, applied: Any, previous_fields: dict[str, Any] | None, field_name: str = "") -> Any:
    """Merge an applied configuration into the live object.

    Fields the same manager applied before (``previous_fields``) and no longer applies are removed;
    maps merge; lists of keyed maps merge per key; other lists and scalars are replaced.
    """
    if isinstance(applied, dict):
        base = dict(live) if isinstance(live, dict) else {}
        prev = previous_fields or {}
        for fkey in prev:
            if fkey.startswith("f:"):
                name = fkey[2:]
                if name not in applied:
                    base.pop(name, None)
        for key, value in applied.items():
            sub_prev = prev.get(f"f:{key}") if isinstance(prev.get(f"f:{key}"), dict) else None
            if value is None:
                base.pop(key, None)
            else:
                base[key] = apply_merge(base.get(key), value, sub_prev, key)
        return base
    if isinstance(applied, list):
        key = _list_key(field_name, applied)
        if key is None or not isinstance(live, list):
            return copy.deepcopy(applied)
        prev = previous_fields or {}
        applied_ids = {json.dumps({key: i[key]}, separators=(",", ":")) for i in applied}
        result: list[Any] = []
        by_id: dict[str, int] = {}
        for item in live:
            if isinstance(item, dict) and key in item:
                ident = json.dumps({key: item[key]}, separators=(",", ":"))
                if f"k:{ident}" in prev and ident not in applied_ids:
                    continue
                by_id[ident] = len(result)
            result.append(item)
        for item in applied:
            ident = json.dumps({key: item[key]}, separators=(",", ":"))
            sub_prev = prev.get(f"k:{ident}")
            if ident in by_id:
                result[by_id[ident]] = apply_merge(result[by_id[ident]], item, sub_prev)
            else:
                result.append(apply_merge({}, item, None))
        return result
    return copy.deepcopy(applied)


# ----------------------------------------------------------------------------------------------------
# server-side apply: ownership conflicts

FieldPath = tuple[str, ...]


def leaf_paths(fields: dict[str, Any], prefix: FieldPath = ()) -> list[FieldPath]:
    """The leaf paths of a fieldsV1 set (``("f:data", "f:a")``), ``"."`` markers excluded."""
    out: list[FieldPath] = []
    for key, sub in fields.items():
        if key == ".":
            continue
        path = (*prefix, key)
        children = {k: v for k, v in sub.items() if k != "."} if isinstance(sub, dict) else {}
        if children:
            out.extend(leaf_paths(children, path))
        else:
            out.append(path)
    return out


_MISSING = object()


def value_at(obj: Any, path: FieldPath) -> Any:
    cur = obj
    for step in path:
        if step.startswith("f:") and isinstance(cur, dict):
            cur = cur.get(step[2:], _MISSING)
        elif step.startswith("k:") and isinstance(cur, list):
            try:
                key = json.loads(step[2:])
            except ValueError:
                return _MISSING
            cur = next((item for item in cur if isinstance(item, dict)
                        and all(item.get(k) == v for k, v in key.items())), _MISSING)
        else:
            return _MISSING
        if cur is _MISSING:
            return _MISSING
    return cur


def format_path(path: FieldPath) -> str:
    text = ""
    for step in path:
        if step.startswith("f:"):
            text += "." + step[2:]
        elif step.startswith("k:"):
            try:
                key = json.loads(step[2:])
                text += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in key.items()) + "]"
            except ValueError:
                text += f"[{step[2:]}]"
    return text


def remove_path(fields: dict[str, Any], path: FieldPath) -> None:
    """Drop one leaf from a fieldsV1 set (ownership moves to another manager), pruning empty parents."""
    if not path or not isinstance(fields, dict):
        return
    head, rest = path[0], path[1:]
    if not rest:
        fields.pop(head, None)
        return
    child = fields.get(head)
    if isinstance(child, dict):
        remove_path(child, rest)
        if not [k for k in child if k != "."]:
            fields.pop(head, None)


def apply_conflicts(live: Any, applied: Any, applied_fields: dict[str, Any],
                    other_managers: list[dict[str, Any]]) -> list[tuple[str, FieldPath]]:
    """(manager, path) for every field the applier sets to a new value while another manager owns it."""
    conflicts: list[tuple[str, FieldPath]] = []
    mine = leaf_paths(applied_fields)
    for entry in other_managers:
        owned = set(leaf_paths(entry.get("fieldsV1") or {}))
        for path in mine:
            if path in owned and value_at(live, path) != value_at(applied, path):
                conflicts.append((str(entry.get("manager", "")), path))
    return conflicts


def changed_paths(old: Any, new: Any) -> list[FieldPath]:
    """Leaf paths of ``new`` (as fieldsV1 would name them) whose values differ from ``old``. Walks both
    objects together and skips equal subtrees at once (writes usually change little)."""
    out: list[FieldPath] = []
    if not isinstance(new, dict):
        return out
    old_map = old if isinstance(old, dict) else {}
    for key, value in new.items():
        if key.startswith("$") or key in ("apiVersion", "kind"):
            continue
        if key == "metadata" and isinstance(value, dict):
            old_meta = old_map.get("metadata") if isinstance(old_map.get("metadata"), dict) else {}
            for mk in ("labels", "annotations"):
                if isinstance(value.get(mk), dict):
                    _diff(old_meta.get(mk), value[mk], ("f:metadata", f"f:{mk}"), mk, out)
            continue
        _diff(old_map.get(key, _MISSING), value, (f"f:{key}",), key, out)
    return out


def _diff(old: Any, new: Any, path: FieldPath, name: str, out: list[FieldPath]) -> None:
    if old is not _MISSING and old == new:
        return
    if isinstance(new, dict) and new:
        old_map = old if isinstance(old, dict) else {}
        for key, value in new.items():
            if key.startswith("$"):
                continue
            _diff(old_map.get(key, _MISSING), value, (*path, f"f:{key}"), key, out)
        return
    if isinstance(new, list) and new:
        key = _list_key(name, new)
        if key is not None:
            old_items = old if isinstance(old, list) else []
            for item in new:
                ident = {key: item[key]}
                before = next((o for o in old_items if isinstance(o, dict) and o.get(key) == item[key]), _MISSING)
                step = f"k:{json.dumps(ident, separators=(',', ':'))}"
                _diff(before, item, (*path, step), "", out)
            return
    out.append(path)


def paths_to_fields(paths: list[FieldPath], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A fieldsV1 set holding ``paths`` (added to a copy of ``base``)."""
    out: dict[str, Any] = copy.deepcopy(base) if base else {}
    for path in paths:
        node = out
        for step in path:
            node = node.setdefault(step, {})
    return out
