"""Object store of the Kubernetes API emulator: resourceVersions, selectors, paging, events.

One lock guards everything; a condition wakes watchers when an event is
recorded. Objects are plain JSON dicts exactly as they go over the wire.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

JsonObj = dict[str, Any]

#: resource plural -> (apiVersion, kind, namespaced)
KINDS: dict[str, tuple[str, str, bool]] = {
    "namespaces": ("v1", "Namespace", False),
    "configmaps": ("v1", "ConfigMap", True),
    "services": ("v1", "Service", True),
    "pods": ("v1", "Pod", True),
    "deployments": ("apps/v1", "Deployment", True),
}
GROUPS: dict[str, str] = {"deployments": "apps"}

EVENT_HISTORY = 20_000
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """Becomes a ``Status`` response body with this HTTP code."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: JsonObj | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}
        self.headers = headers or {}

    def body(self) -> JsonObj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def qualified(resource: str) -> str:
    group = GROUPS.get(resource)
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{qualified(resource)} "{name}" not found',
        {"name": name, "group": GROUPS.get(resource, ""), "kind": resource},
    )


# -- selectors ------------------------------------------------------------------------------

_SET_TERM = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s*\(([^)]*)\)\s*$")


def _split_terms(selector: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current)
    return [t.strip() for t in terms if t.strip()]


@dataclass(frozen=True)
class _Requirement:
    key: str
    op: str
    values: frozenset[str]

    def __call__(self, labels: dict[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op in ("in", "="):
            return value in self.values
        if self.op in ("notin", "!="):
            return value not in self.values
        if self.op == "exists":
            return self.key in labels
        return self.key not in labels


def parse_label_selector(selector: str) -> Callable[[dict[str, str]], bool]:
    """The label selector grammar: =, ==, !=, in, notin, exists, !exists."""
    checks: list[_Requirement] = []
    for term in _split_terms(selector or ""):
        set_match = _SET_TERM.match(term)
        if set_match:
            key, op, raw = set_match.groups()
            values = frozenset(v.strip() for v in raw.split(",") if v.strip())
            checks.append(_Requirement(key, op, values))
        elif "!=" in term:
            key, value = (p.strip() for p in term.split("!=", 1))
            checks.append(_Requirement(key, "!=", frozenset([value])))
        elif "=" in term:
            key, value = (p.strip() for p in term.replace("==", "=").split("=", 1))
            checks.append(_Requirement(key, "=", frozenset([value])))
        elif term.startswith("!"):
            checks.append(_Requirement(term[1:].strip(), "!exists", frozenset()))
        elif re.match(r"^[A-Za-z0-9./_-]+$", term):
            checks.append(_Requirement(term, "exists", frozenset()))
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
    return lambda labels: all(check(labels) for check in checks)


def parse_field_selector(selector: str) -> Callable[[JsonObj], bool]:
    checks: list[tuple[str, str, bool]] = []
    for term in _split_terms(selector or ""):
        negate = "!=" in term
        key, value = (p.strip() for p in re.split(r"!=|==|=", term, maxsplit=1))
        if key not in ("metadata.name", "metadata.namespace"):
            raise ApiError(400, "BadRequest", f'field label not supported: "{key}"')
        checks.append((key.split(".", 1)[1], value, negate))
    return lambda obj: all(
        (obj["metadata"].get(field) == value) != negate for field, value, negate in checks
    )


def _sort_key(obj: JsonObj) -> tuple[str, str]:
    return (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


# -- store ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    rv: int
    resource: str
    namespace: str
    type: str
    obj: JsonObj


class Store:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._rv = 1000
        self.objects: dict[str, dict[tuple[str, str], JsonObj]] = {r: {} for r in KINDS}
        self.events: deque[Event] = deque(maxlen=EVENT_HISTORY)
        #: (resource, namespace, name, fieldManager) -> last applied configuration.
        self.applied: dict[tuple[str, str, str, str], JsonObj] = {}
        for name in ("default", "kube-system"):
            self.create("namespaces", "", {"metadata": {"name": name}})

    # -- helpers ------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def _bump(self) -> int:
        self._rv += 1
        return self._rv

    def _record(self, resource: str, namespace: str, kind: str, obj: JsonObj) -> None:
        self.events.append(Event(self._rv, resource, namespace, kind, copy.deepcopy(obj)))
        self.changed.notify_all()

    def namespace_exists(self, namespace: str) -> bool:
        return ("", namespace) in self.objects["namespaces"]

    def require_namespace(self, namespace: str) -> None:
        if not self.namespace_exists(namespace):
            raise ApiError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )

    # -- reads --------------------------------------------------------------------------------

    def get(self, resource: str, namespace: str, name: str) -> JsonObj:
        with self.lock:
            obj = self.objects[resource].get((namespace, name))
            if obj is None:
                raise not_found(resource, name)
            return copy.deepcopy(obj)

    def find(self, resource: str, namespace: str, name: str) -> JsonObj | None:
        with self.lock:
            return self.objects[resource].get((namespace, name))

    def matching(
        self,
        resource: str,
        namespace: str | None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> list[JsonObj]:
        labels_ok = parse_label_selector(label_selector)
        fields_ok = parse_field_selector(field_selector)
        with self.lock:
            items = [
                obj
                for (ns, _), obj in self.objects[resource].items()
                if (namespace is None or ns == namespace)
                and labels_ok(obj["metadata"].get("labels") or {})
                and fields_ok(obj)
            ]
        return sorted(items, key=_sort_key)

    def list_page(
        self,
        resource: str,
        namespace: str | None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str = "",
    ) -> JsonObj:
        with self.lock:
            items = self.matching(resource, namespace, label_selector, field_selector)
            list_rv = self._rv
            start_after: list[str] | None = None
            if continue_token:
                try:
                    state = json.loads(base64.urlsafe_b64decode(continue_token.encode()))
                    start_after, list_rv = list(state["after"]), int(state["rv"])
                except (ValueError, KeyError, TypeError) as exc:
                    raise ApiError(400, "BadRequest", "invalid continue token") from exc
            if start_after is not None:
                after = tuple(start_after)
                items = [
                    o
                    for o in items
                    if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > after
                ]
            metadata: JsonObj = {"resourceVersion": str(list_rv)}
            if limit and len(items) > limit:
                last = items[limit - 1]["metadata"]
                token = {"after": [last.get("namespace", ""), last["name"]], "rv": list_rv}
                metadata["continue"] = base64.urlsafe_b64encode(json.dumps(token).encode()).decode()
                metadata["remainingItemCount"] = len(items) - limit
                items = items[:limit]
            api_version, kind, _ = KINDS[resource]
            return {
                "apiVersion": api_version,
                "kind": f"{kind}List",
                "metadata": metadata,
                "items": [copy.deepcopy(o) for o in items],
            }

    def events_after(self, rv: int) -> list[Event] | None:
        """Events newer than ``rv``; None when ``rv`` is older than the kept history."""
        with self.lock:
            if self.events and rv < self.events[0].rv - 1 and rv < self._rv:
                return None
            return [e for e in self.events if e.rv > rv]

    # -- writes -------------------------------------------------------------------------------

    def create(self, resource: str, namespace: str, obj: JsonObj) -> JsonObj:
        api_version, kind, namespaced = KINDS[resource]
        name = (obj.get("metadata") or {}).get("name", "")
        if not name or len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
            raise ApiError(
                422,
                "Invalid",
                f'{kind} "{name}" is invalid: metadata.name: Invalid value: "{name}": '
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                "characters, '-' or '.'",
                {"name": name, "kind": resource, "causes": [{"field": "metadata.name"}]},
            )
        with self.lock:
            if namespaced:
                self.require_namespace(namespace)
            if (namespace, name) in self.objects[resource]:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{qualified(resource)} "{name}" already exists',
                    {"name": name, "group": GROUPS.get(resource, ""), "kind": resource},
                )
            stored = copy.deepcopy(obj)
            stored["apiVersion"], stored["kind"] = api_version, kind
            meta = stored.setdefault("metadata", {})
            if namespaced:
                meta["namespace"] = namespace
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_iso()
            if resource == "deployments":
                meta["generation"] = 1
                validate_deployment(stored)
                stored.setdefault("spec", {}).setdefault("replicas", 1)
                stored["status"] = {}
            if resource == "namespaces":
                stored["status"] = {"phase": "Active"}
            meta["resourceVersion"] = str(self._bump())
            self.objects[resource][(namespace, name)] = stored
            self._record(resource, namespace, "ADDED", stored)
            return copy.deepcopy(stored)

    def update(
        self,
        resource: str,
        namespace: str,
        name: str,
        mutate: Callable[[JsonObj], JsonObj],
        *,
        expected_rv: str | None = None,
        status_only: bool = False,
    ) -> JsonObj:
        """Replace an object by ``mutate(copy)``; a no-op change keeps its resourceVersion."""
        with self.lock:
            current = self.objects[resource].get((namespace, name))
            if current is None:
                raise not_found(resource, name)
            meta = current["metadata"]
            if expected_rv and expected_rv != meta["resourceVersion"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {qualified(resource)} "{name}": the '
                    "object has been modified; please apply your changes to the latest "
                    "version and try again",
                    {"name": name, "group": GROUPS.get(resource, ""), "kind": resource},
                )
            candidate = mutate(copy.deepcopy(current))
            # Identity and server-owned metadata cannot be changed by a client.
            new_meta = candidate.setdefault("metadata", {})
            for key in ("name", "namespace", "uid", "creationTimestamp", "generation"):
                if key in meta:
                    new_meta[key] = meta[key]
                else:
                    new_meta.pop(key, None)
            new_meta["resourceVersion"] = meta["resourceVersion"]
            candidate["apiVersion"], candidate["kind"] = current["apiVersion"], current["kind"]
            if resource == "deployments":
                if status_only:
                    candidate["spec"] = current["spec"]
                else:
                    candidate["status"] = current.get("status", {})
                    validate_deployment(candidate)
                    if candidate.get("spec") != current.get("spec"):
                        new_meta["generation"] = meta["generation"] + 1
            if candidate == current:
                return copy.deepcopy(current)
            new_meta["resourceVersion"] = str(self._bump())
            self.objects[resource][(namespace, name)] = candidate
            self._record(resource, namespace, "MODIFIED", candidate)
            return copy.deepcopy(candidate)

    def delete(self, resource: str, namespace: str, name: str) -> JsonObj:
        with self.lock:
            obj = self.objects[resource].pop((namespace, name), None)
            if obj is None:
                raise not_found(resource, name)
            obj["metadata"]["resourceVersion"] = str(self._bump())
            self._record(resource, namespace, "DELETED", obj)
            for key in [k for k in self.applied if k[:3] == (resource, namespace, name)]:
                del self.applied[key]
            return copy.deepcopy(obj)

    def create_many(self, resource: str, namespace: str, objs: Iterable[JsonObj]) -> None:
        for obj in objs:
            self.create(resource, namespace, obj)


def validate_deployment(obj: JsonObj) -> None:
    """What the real API server rejects with 422 and a client could plausibly send."""
    name = obj["metadata"]["name"]
    spec = obj.get("spec") or {}
    causes: list[str] = []
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    template = spec.get("template") or {}
    template_labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector:
        causes.append("spec.selector: Required value")
    elif any(template_labels.get(k) != v for k, v in selector.items()):
        causes.append(
            "spec.template.metadata.labels: Invalid value: `selector` does not match "
            "template `labels`"
        )
    containers = (template.get("spec") or {}).get("containers") or []
    if not containers:
        causes.append("spec.template.spec.containers: Required value")
    for index, container in enumerate(containers):
        if not container.get("name"):
            causes.append(f"spec.template.spec.containers[{index}].name: Required value")
        if not container.get("image"):
            causes.append(f"spec.template.spec.containers[{index}].image: Required value")
    replicas = spec.get("replicas", 1)
    if not isinstance(replicas, int) or replicas < 0:
        causes.append("spec.replicas: Invalid value: must be greater than or equal to 0")
    if causes:
        raise ApiError(
            422,
            "Invalid",
            f'Deployment.apps "{name}" is invalid: ' + ", ".join(causes),
            {"name": name, "group": "apps", "kind": "Deployment"},
        )
