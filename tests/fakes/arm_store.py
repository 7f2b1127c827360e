"""State of the ARM emulator: container groups, async operations, AKS clusters, faults.

Transitions are driven by the clock and applied lazily on each request (no
background thread), so a test sees the same progression Azure shows: a PUT
leaves the group ``Pending``, it reaches ``Succeeded`` after ``provision_delay``
and its containers ``Running`` after ``run_delay``; a DELETE leaves it
``Deleting`` until its operation completes.
"""

from __future__ import annotations

import copy
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GROUP_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_TAGS = 50
MAX_CPU = 4.0
MAX_MEMORY_GB = 16.0


class ArmError(Exception):
    """An ARM error response: status, ``error.code``, ``error.message``, extra headers."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


@dataclass
class Fault:
    """Fail the next ``times`` requests whose method and path match."""

    method: str
    path_pattern: str
    status: int
    code: str
    message: str
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Group:
    body: dict[str, Any]
    created: float
    stopped: bool = False
    deleting_since: float | None = None
    started: float = 0.0


@dataclass
class Operation:
    kind: str
    key: str
    started: float
    done_after: float


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def validate_group(name: str, body: dict[str, Any]) -> None:
    """The checks ACI makes on PUT, with its error codes."""
    if len(name) > 63 or "--" in name or not GROUP_NAME.match(name):
        raise ArmError(
            400,
            "InvalidContainerGroupName",
            f"The container group name '{name}' is invalid. The container group name must "
            "contain no more than 63 characters and only lowercase alphanumeric characters "
            "and '-', and it cannot start or end with '-' and cannot have '--'.",
        )
    if not body.get("location"):
        raise ArmError(400, "LocationRequired", "The location property is required.")
    tags = body.get("tags") or {}
    if len(tags) > MAX_TAGS:
        raise ArmError(400, "InvalidTagCount", f"At most {MAX_TAGS} tags are allowed.")
    for key in tags:
        if any(c in key for c in "<>%&\\?/"):
            raise ArmError(400, "InvalidTagNameCharacters", f"Invalid tag name '{key}'.")
    containers = body.get("properties", {}).get("containers") or []
    if not containers:
        raise ArmError(400, "ContainerGroupMissingContainers", "At least one container.")
    for container in containers:
        props = container.get("properties", {})
        if not props.get("image"):
            raise ArmError(400, "InvalidContainerImage", "The container image is required.")
        requests = props.get("resources", {}).get("requests", {})
        cpu = float(requests.get("cpu", 0))
        memory = float(requests.get("memoryInGB", 0))
        if not 0 < cpu <= MAX_CPU or not 0 < memory <= MAX_MEMORY_GB:
            raise ArmError(
                400,
                "InvalidContainerResourceRequests",
                f"The container '{container.get('name')}' requests cpu {cpu} and memory "
                f"{memory}GB; allowed: cpu up to {MAX_CPU}, memory up to {MAX_MEMORY_GB}GB.",
            )


class ArmStore:
    def __init__(
        self,
        subscription_id: str,
        resource_group: str,
        location: str,
        *,
        provision_delay: float = 0.05,
        run_delay: float = 0.1,
        delete_delay: float = 0.05,
    ) -> None:
        self.subscription_id = subscription_id
        self.resource_groups = {resource_group}
        self.location = location
        self.provision_delay = provision_delay
        self.run_delay = run_delay
        self.delete_delay = delete_delay
        self.lock = threading.RLock()
        self.groups: dict[str, Group] = {}
        self.operations: dict[str, Operation] = {}
        self.faults: list[Fault] = []
        self.clusters: dict[str, str] = {}
        """AKS cluster name -> user kubeconfig (YAML)."""
        self.failing_images: set[str] = set()
        """Images whose groups end provisioning ``Failed`` (as an image ACI cannot pull)."""
        self.metric_values: dict[str, tuple[float, float]] = {}
        """Group name -> (CpuUsage millicores, MemoryUsage bytes); default from requests."""

    # -- faults --------------------------------------------------------------------------------

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.method == method and re.search(fault.path_pattern, path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    # -- clock ---------------------------------------------------------------------------------

    def advance(self) -> None:
        now = time.monotonic()
        with self.lock:
            for op in self.operations.values():
                group = self.groups.get(op.key)
                deleting = group is not None and group.deleting_since is not None
                if op.kind == "delete" and now >= op.done_after and deleting:
                    self.groups.pop(op.key)

    def check_resource_group(self, resource_group: str) -> None:
        if resource_group not in self.resource_groups:
            raise ArmError(
                404,
                "ResourceGroupNotFound",
                f"Resource group '{resource_group}' could not be found.",
            )

    # -- container groups ----------------------------------------------------------------------

    def group_id(self, resource_group: str, name: str) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{resource_group}"
            f"/providers/Microsoft.ContainerInstance/containerGroups/{name}"
        )

    def put_group(self, resource_group: str, name: str, body: dict[str, Any]) -> tuple[int, str]:
        validate_group(name, body)
        now = time.monotonic()
        with self.lock:
            existing = self.groups.get(name)
            if existing is not None and existing.deleting_since is not None:
                raise ArmError(409, "Conflict", f"The container group '{name}' is being deleted.")
            stored = copy.deepcopy(body)
            stored["id"] = self.group_id(resource_group, name)
            stored["name"] = name
            stored["type"] = "Microsoft.ContainerInstance/containerGroups"
            self.groups[name] = Group(stored, created=now, started=now)
            op_id = uuid.uuid4().hex
            self.operations[op_id] = Operation("put", name, now, now + self.provision_delay)
        return (200 if existing else 201), op_id

    def delete_group(self, name: str) -> str | None:
        now = time.monotonic()
        with self.lock:
            group = self.groups.get(name)
            if group is None:
                return None
            group.deleting_since = now
            op_id = uuid.uuid4().hex
            self.operations[op_id] = Operation("delete", name, now, now + self.delete_delay)
            return op_id

    def stop_group(self, name: str) -> None:
        with self.lock:
            self._require(name).stopped = True

    def start_group(self, name: str) -> str:
        now = time.monotonic()
        with self.lock:
            group = self._require(name)
            group.stopped = False
            group.started = now
            op_id = uuid.uuid4().hex
            self.operations[op_id] = Operation("start", name, now, now + self.provision_delay)
            return op_id

    def patch_tags(self, name: str, tags: dict[str, str]) -> None:
        with self.lock:
            self._require(name).body["tags"] = dict(tags)

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
        """A group as ARM returns it; secure values are never echoed back."""
        now = time.monotonic()
        with self.lock:
            group = self._require_any(name)
            body = copy.deepcopy(group.body)
            props = body.setdefault("properties", {})
            if group.deleting_since is not None:
                provisioning = "Deleting"
            elif now < group.created + self.provision_delay:
                provisioning = "Pending"
            elif self._pull_fails(body):
                provisioning = "Failed"
            else:
                provisioning = "Succeeded"
            props["provisioningState"] = provisioning
            running = (
                provisioning == "Succeeded"
                and not group.stopped
                and now >= group.started + self.run_delay
            )
            for container in props.get("containers", []):
                cprops = container.setdefault("properties", {})
                for env in cprops.get("environmentVariables", []):
                    if "secureValue" in env:
                        env["secureValue"] = None
                if instance_view:
                    state = "Running" if running else ("Terminated" if group.stopped else "Waiting")
                    cprops["instanceView"] = {
                        "restartCount": 0,
                        "currentState": {"state": state, "startTime": _iso(time.time())},
                        "events": [],
                    }
            if instance_view:
                state = "Stopped" if group.stopped else ("Running" if running else "Pending")
                if provisioning == "Failed":
                    state = "Failed"
                    for container in props.get("containers", []):
                        current = container["properties"]["instanceView"]["currentState"]
                        current.update(state="Waiting", detailStatus="ErrImagePull")
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
