"""Patch semantics of the Kubernetes API emulator: JSON merge, strategic merge, apply.

Only what a client of Deployments, Services and ConfigMaps relies on: strategic
merge merges the well-known keyed lists (containers by name, env by name, ports
by port) and honours ``$patch: delete``; server-side apply removes the fields a
manager applied before and no longer applies, then merges the new ones (lists
atomic), which matches real apply for an object with a single applier.
"""

from __future__ import annotations

import copy
from typing import Any

JsonObj = dict[str, Any]

#: list field name -> the key its items merge on under strategic merge patch.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}


def json_merge(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge, ``null`` deletes, everything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: JsonObj = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge(result.get(key), value)
    return result


def _port_key(item: JsonObj) -> Any:
    return item.get("containerPort", item.get("port"))


def _merge_list(field: str, target: list[Any], patch: list[Any]) -> list[Any]:
    key = MERGE_KEYS.get(field)
    if key is None or not all(isinstance(item, dict) for item in [*target, *patch]):
        return copy.deepcopy(patch)
    keyer = _port_key if field == "ports" else (lambda item: item.get(key))
    merged = [copy.deepcopy(item) for item in target]
    for item in patch:
        if item.get("$patch") == "replace":
            return [copy.deepcopy({k: v for k, v in i.items() if k != "$patch"}) for i in patch]
        index = next((i for i, old in enumerate(merged) if keyer(old) == keyer(item)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(strategic_merge({}, item))
        else:
            merged[index] = strategic_merge(merged[index], item)
    return merged


def strategic_merge(target: Any, patch: Any) -> Any:
    """Strategic merge patch for the fields the emulated kinds have."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: JsonObj = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(key, result[key], value)
        elif isinstance(value, list):
            result[key] = _merge_list(key, [], value)
        else:
            result[key] = strategic_merge(result.get(key), value)
    return result


def _remove_dropped(current: Any, previous: Any, applied: Any) -> Any:
    """Remove from ``current`` what ``previous`` set and ``applied`` no longer sets."""
    if not (isinstance(current, dict) and isinstance(previous, dict)):
        return current
    applied = applied if isinstance(applied, dict) else {}
    result = dict(current)
    for key, old in previous.items():
        if key not in applied:
            result.pop(key, None)
        elif key in result:
            result[key] = _remove_dropped(result[key], old, applied[key])
    return result


def server_side_apply(current: JsonObj, previous: JsonObj | None, applied: JsonObj) -> JsonObj:
    """The object after ``applied`` by a manager whose last applied config was ``previous``."""
    base = _remove_dropped(copy.deepcopy(current), previous or {}, applied)
    return dict(json_merge(base, _drop_nulls(applied)))


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    return value
