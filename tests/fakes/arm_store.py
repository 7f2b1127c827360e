"""State behind the ARM emulator: container groups, their lifecycle, operations, limits.

Transitions are driven by the clock and applied lazily on each request (no
background thread), so a test sees the progression Azure shows. Provisioning
takes time by default (``provision_delay``, configurable, never zero unless a
test says so): a PUT leaves the group ``Pending`` until it is provisioned, its
containers run ``run_delay`` later; ACI's start operation takes
``start_delay``; a DELETE leaves the group ``Deleting`` until its operation
completes. While a group is changing (provisioning, starting, being deleted)
ACI refuses stop, start, tag updates and a new PUT of the same name with 409
Conflict (the issue that made this emulator strict, #17; a PUT over a group being
deleted: hashicorp/terraform-provider-azurerm#23451). A DELETE is accepted in any
state (a second one while the first runs starts another operation on it): no
public source shows ACI refusing it, so the emulator does not invent a 409 there
(tests inject one through ``Faults``).

A running container writes its log from the moment it runs; stopping it (or a PUT
that replaces the group) ends that container instance and its log (``arm_logs``).

Limits from "Resource availability & quota limits for ACI" (learn.microsoft.com/
azure/container-instances/container-instances-resource-and-quota-limits): 100
standard container groups per region and subscription, and at most 100 container
group creates and 100 deletes per 5 minutes (300 per hour); past a rate limit ARM
answers 429 with Retry-After (learn.microsoft.com/azure/azure-resource-manager/
management/request-limits-and-throttling).
"""

from __future__ import annotations

import collections
import copy
import math
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import arm_logs
from .arm_rules import ArmError, validate_group

MAX_GROUPS = 100
RATE_WINDOW = 300.0
MAX_CREATES_PER_WINDOW = 100
MAX_DELETES_PER_WINDOW = 100


@dataclass
class Group:
    body: dict[str, Any]
    provisioned_at: float
    """When provisioning ends (``Pending`` until then)."""
    running_at: float | None
    """When the containers run; None while the group is stopped."""
    busy_until: float = 0.0
    """Until when ACI's start operation is in progress."""
    deleting_since: float | None = None


@dataclass
class Operation:
    kind: str
    key: str
    done_after: float


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _pull_failed(image: str) -> list[dict[str, Any]]:
    """The events of a container whose image cannot be pulled, as `az container show`
    prints them in "Troubleshoot common issues in Azure Container Instances"
    (learn.microsoft.com/azure/container-instances/container-instances-troubleshooting,
    "Unable to pull image"): Pulling, then Failed (Warning), then BackOff."""
    now = _iso(time.time())
    return [
        {
            "count": 3,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "type": "Normal",
            "name": "Pulling",
            "message": f'pulling image "{image}"',
        },
        {
            "count": 3,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "type": "Warning",
            "name": "Failed",
            "message": f'Failed to pull image "{image}": rpc error: code 2 desc Error: '
            "image not found",
        },
        {
            "count": 3,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "type": "Normal",
            "name": "BackOff",
            "message": f'Back-off pulling image "{image}"',
        },
    ]


def _crashing(since: float, interval: float) -> dict[str, Any]:
    """The instance view of a container that exits with code 1 at once and is restarted
    (restart policy Always): ``restartCount`` grows, the state between two starts is
    ``Terminated`` with the exit code (same page, "Container continually exits and
    restarts", and the ContainerState definition of the containerinstance spec:
    state, startTime, exitCode, finishTime, detailStatus)."""
    restarts = int(since / interval)
    now = _iso(time.time())
    terminated = {
        "state": "Terminated",
        "startTime": now,
        "exitCode": 1,
        "finishTime": now,
        "detailStatus": "Error",
    }
    return {
        "restartCount": restarts,
        "currentState": terminated,
        "previousState": terminated,
        "events": [
            {
                "count": restarts + 1,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "type": "Normal",
                "name": "Started",
                "message": "Started container",
            }
        ],
    }


def _conflict(name: str, what: str) -> ArmError:
    return ArmError(
        409,
        "Conflict",
        f"The container group '{name}' is {what}; the operation cannot be performed now. "
        "Please retry later.",
    )


class RateLimit:
    """At most ``limit`` events per ``window`` seconds; the Retry-After of a refusal."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._events: collections.deque[float] = collections.deque()

    def take(self, now: float) -> None:
        while self._events and self._events[0] <= now - self.window:
            self._events.popleft()
        if len(self._events) >= self.limit:
            wait = math.ceil(self._events[0] + self.window - now)
            raise ArmError(
                429,
                "TooManyRequests",
                f"The request is being throttled: at most {self.limit} per "
                f"{self.window:g} seconds. Retry after {wait} seconds.",
                {"Retry-After": str(max(wait, 1))},
            )
        self._events.append(now)


class ArmStore:
    def __init__(
        self,
        subscription_id: str,
        resource_group: str,
        location: str,
        *,
        provision_delay: float = 0.4,
        run_delay: float = 0.2,
        start_delay: float = 0.2,
        delete_delay: float = 0.2,
    ) -> None:
        self.subscription_id = subscription_id
        self.resource_groups = {resource_group}
        self.location = location
        self.provision_delay = provision_delay
        self.run_delay = run_delay
        self.start_delay = start_delay
        self.delete_delay = delete_delay
        self.lock = threading.RLock()
        self.groups: dict[str, Group] = {}
        self.operations: dict[str, Operation] = {}
        self.clusters: dict[str, str] = {}
        """AKS cluster name -> user kubeconfig (YAML)."""
        self.failing_images: set[str] = set()
        """Images whose groups end provisioning ``Failed`` (as an image ACI cannot pull)."""
        self.crashing_images: set[str] = set()
        """Images whose containers exit with code 1 as soon as they start (restarted)."""
        self.crash_interval = 0.3
        """Seconds between two restarts of a crashing container."""
        self.metric_values: dict[str, tuple[float, float]] = {}
        """Group name -> (CpuUsage millicores, MemoryUsage bytes); default from requests."""
        self.max_groups = MAX_GROUPS
        self.creates = RateLimit(MAX_CREATES_PER_WINDOW, RATE_WINDOW)
        self.deletes = RateLimit(MAX_DELETES_PER_WINDOW, RATE_WINDOW)
        self._epoch_offset = time.time() - time.monotonic()
        """Adds to a monotonic instant to give its wall-clock time (log timestamps)."""

    # -- clock ---------------------------------------------------------------------------------

    def advance(self) -> None:
        """Finish the deletes whose operation is done."""
        now = time.monotonic()
        with self.lock:
            for op in self.operations.values():
                group = self.groups.get(op.key)
                done = op.kind == "delete" and now >= op.done_after
                if done and group is not None and group.deleting_since is not None:
                    self.groups.pop(op.key)

    def check_resource_group(self, resource_group: str) -> None:
        if resource_group.lower() not in {g.lower() for g in self.resource_groups}:
            raise ArmError(
                404,
                "ResourceGroupNotFound",
                f"Resource group '{resource_group}' could not be found.",
            )

    def _transition(self, group: Group, name: str, now: float) -> None:
        """409 while the group is changing: ACI refuses operations on it until it settles."""
        if group.deleting_since is not None:
            raise _conflict(name, "being deleted")
        if now < group.provisioned_at:
            raise _conflict(name, "still being provisioned")
        if now < group.busy_until:
            raise _conflict(name, "still starting")

    # -- container groups ----------------------------------------------------------------------

    def group_id(self, resource_group: str, name: str) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{resource_group}"
            f"/providers/Microsoft.ContainerInstance/containerGroups/{name}"
        )

    def put_group(self, resource_group: str, name: str, body: Any) -> tuple[int, str]:
        validate_group(name, body)
        now = time.monotonic()
        with self.lock:
            existing = self.groups.get(name)
            if existing is not None:
                self._transition(existing, name, now)
            else:
                live = sum(1 for g in self.groups.values() if g.deleting_since is None)
                if live >= self.max_groups:
                    raise ArmError(
                        409,
                        "ContainerGroupQuotaReached",
                        f"Resource type 'Microsoft.ContainerInstance/containerGroups' has "
                        f"reached the quota of {self.max_groups} container groups in region "
                        f"'{self.location}'.",
                    )
                self.creates.take(now)
            stored = copy.deepcopy(body)
            stored["id"] = self.group_id(resource_group, name)
            stored["name"] = name
            stored["type"] = "Microsoft.ContainerInstance/containerGroups"
            provisioned = now + self.provision_delay
            self.groups[name] = Group(stored, provisioned, provisioned + self.run_delay)
            op_id = uuid.uuid4().hex
            self.operations[op_id] = Operation("put", name, provisioned)
        return (200 if existing else 201), op_id

    def delete_group(self, name: str) -> str | None:
        now = time.monotonic()
        with self.lock:
            group = self.groups.get(name)
            if group is None:
                return None
            if group.deleting_since is None:
                self.deletes.take(now)
                group.deleting_since = now
            op_id = uuid.uuid4().hex
            self.operations[op_id] = Operation("delete", name, now + self.delete_delay)
            return op_id

    def settle(self, name: str) -> None:
        """Ends ``name``'s provisioning and runs its containers now. A test holds a group in
        an early state with delays longer than any call takes, looks, then lets it go:
        a short delay instead would be outrun on a loaded machine."""
        now = time.monotonic()
        with self.lock:
            group = self._require(name)
            group.provisioned_at = min(group.provisioned_at, now)
            if group.running_at is not None:
                group.running_at = min(group.running_at, now)
            for op in self.operations.values():
                if op.key == name and op.kind == "put":
                    op.done_after = min(op.done_after, now)

    def stop_group(self, name: str) -> None:
        now = time.monotonic()
        with self.lock:
            group = self._require(name)
            self._transition(group, name, now)
            group.running_at = None

    def start_group(self, name: str) -> str:
        now = time.monotonic()
        with self.lock:
            group = self._require(name)
            self._transition(group, name, now)
            op_id = uuid.uuid4().hex
            if group.running_at is None:
                group.busy_until = now + self.start_delay
                group.running_at = group.busy_until
            self.operations[op_id] = Operation("start", name, max(now, group.busy_until))
            return op_id

    def patch_tags(self, name: str, tags: Any) -> None:
        now = time.monotonic()
        with self.lock:
            group = self._require(name)
            self._transition(group, name, now)
            body = {**group.body, "tags": tags}
            validate_group(name, body)
            group.body["tags"] = dict(tags)

    def _require(self, name: str) -> Group:
        group = self.groups.get(name)
        if group is None or group.deleting_since is not None:
            raise ArmError(
                404,
                "ResourceNotFound",
                "The Resource 'Microsoft.ContainerInstance/containerGroups/"
                f"{name}' under resource group was not found.",
            )
        return group

    def render(self, name: str, *, instance_view: bool) -> dict[str, Any]:
        """A group as ARM returns it; secure values are never echoed back (a variable with
        a secureValue comes back as its name only: Azure/azure-libraries-for-java#856)."""
        now = time.monotonic()
        with self.lock:
            group = self._require_any(name)
            body = copy.deepcopy(group.body)
            props = body.setdefault("properties", {})
            if group.deleting_since is not None:
                provisioning = "Deleting"
            elif now < group.provisioned_at:
                provisioning = "Pending"
            elif self._pull_fails(body):
                provisioning = "Failed"
            else:
                provisioning = "Succeeded"
            props["provisioningState"] = provisioning
            stopped = group.running_at is None
            running = (
                provisioning == "Succeeded"
                and group.running_at is not None
                and now >= group.running_at
            )
            for container in props.get("containers", []):
                cprops = container.setdefault("properties", {})
                cprops["environmentVariables"] = [
                    {"name": v["name"]} if "secureValue" in v else v
                    for v in cprops.get("environmentVariables", [])
                ]
                if instance_view:
                    state = "Running" if running else ("Terminated" if stopped else "Waiting")
                    cprops["instanceView"] = {
                        "restartCount": 0,
                        "currentState": {"state": state, "startTime": _iso(time.time())},
                        "events": [],
                    }
                    if running and cprops.get("image") in self.crashing_images:
                        since = now - (group.running_at or now)
                        cprops["instanceView"] = _crashing(since, self.crash_interval)
            if instance_view:
                state = "Stopped" if stopped else ("Running" if running else "Pending")
                if provisioning == "Failed":
                    state = "Failed"
                    for container in props.get("containers", []):
                        view = container["properties"]["instanceView"]
                        view["currentState"].update(state="Waiting", detailStatus="ErrImagePull")
                        view["events"] = _pull_failed(container["properties"].get("image", ""))
                props["instanceView"] = {"state": state, "events": []}
            return body

    def _pull_fails(self, body: dict[str, Any]) -> bool:
        containers = body.get("properties", {}).get("containers", [])
        return any(c.get("properties", {}).get("image") in self.failing_images for c in containers)

    def _require_any(self, name: str) -> Group:
        group = self.groups.get(name)
        if group is None:
            raise ArmError(404, "ResourceNotFound", f"Container group '{name}' was not found.")
        return group

    def names(self) -> list[str]:
        with self.lock:
            return sorted(self.groups)

    def held(self) -> dict[str, dict[str, str]]:
        """Every group the store still holds (being deleted too), name -> tags, as a GET
        would find them now: for tests asking what is left of a deleted service."""
        self.advance()
        with self.lock:
            return {name: dict(g.body.get("tags") or {}) for name, g in self.groups.items()}

    def container_log(
        self, name: str, container: str, *, tail: int | None, timestamps: bool
    ) -> str:
        """Containers - List Logs of one container (``arm_logs``): 404 for a group or
        container that does not exist, ContainerLogNotAvailable until it runs."""
        now = time.monotonic()
        with self.lock:
            group = self._require(name)
            containers = group.body.get("properties", {}).get("containers", [])
            found = next((c for c in containers if c.get("name") == container), None)
            if found is None:
                raise arm_logs.container_not_found(name, container)
            running = (
                group.running_at is not None
                and now >= group.running_at
                and not self._pull_fails(group.body)
            )
            if not running or group.running_at is None:
                raise arm_logs.not_available(name, container)
            started = group.running_at + self._epoch_offset
            return arm_logs.content(
                found, started, now + self._epoch_offset, tail=tail, timestamps=timestamps
            )

    def is_stopped(self, name: str) -> bool:
        with self.lock:
            return self._require(name).running_at is None

    def operation_status(self, op_id: str) -> dict[str, Any]:
        with self.lock:
            op = self.operations.get(op_id)
            if op is None:
                raise ArmError(404, "OperationNotFound", f"Operation '{op_id}' not found.")
            done = time.monotonic() >= op.done_after
            return {
                "id": op_id,
                "name": op_id,
                "status": "Succeeded" if done else "InProgress",
                "startTime": _iso(time.time()),
            }

    def metrics(self, name: str) -> tuple[float, float] | None:
        """CpuUsage (millicores) and MemoryUsage (bytes) while the group runs, else None."""
        body = self.render(name, instance_view=True)
        if body["properties"]["instanceView"]["state"] != "Running":
            return None
        if name in self.metric_values:
            return self.metric_values[name]
        cpu = 0.0
        for container in body["properties"]["containers"]:
            requests = container["properties"]["resources"]["requests"]
            cpu += float(requests["cpu"]) * 1000 * 0.25
        return cpu, 48.0 * 1024 * 1024 * len(body["properties"]["containers"])
