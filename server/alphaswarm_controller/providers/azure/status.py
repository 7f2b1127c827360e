"""DeploymentStatus from container groups: provisioning state plus, when read, instance views.

A listing of the resource group carries provisioning states but no instance
views, so ``list_deployments`` counts a provisioned group as ready; ``status``
reads each group (GET) and counts it ready only when its containers run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from azure.mgmt.containerinstance import models as aci

from alphaswarm_core.providers.protocol import (
    DeploymentState,
    DeploymentStatus,
    InstanceStatus,
)

from .aci import RESERVED_TAG_PREFIX, TAG_SIZING, Replica

_FAILED = {"failed"}


def running_state(group: aci.ContainerGroup | None) -> tuple[str, str]:
    """``("running" | "failed" | "pending", detail)`` of a group as GET returned it."""
    if group is None:
        return "failed", "the container group no longer exists"
    provisioning = (group.provisioning_state or "unknown").lower()
    view = ((group.instance_view.state if group.instance_view else None) or "").lower()
    states: list[str] = []
    details: list[str] = []
    for container in group.containers or []:
        current = container.instance_view.current_state if container.instance_view else None
        states.append(((current.state if current else None) or "unknown").lower())
        if current is not None and current.detail_status:
            details.append(f"{container.name}: {current.detail_status}")
    detail = "; ".join(details) or f"provisioning {provisioning}, state {view or 'unknown'}"
    if provisioning in _FAILED or view in _FAILED or "terminated" in states:
        return "failed", detail
    if (
        provisioning == "succeeded"
        and view == "running"
        and states
        and all(state == "running" for state in states)
    ):
        return "running", detail
    return "pending", detail


def _instance(replica: Replica, group: aci.ContainerGroup | None) -> InstanceStatus:
    provisioning = (replica.group.provisioning_state or "Unknown").lower()
    if group is None:
        ready = provisioning == "succeeded"
        return InstanceStatus(replica.instance_id, provisioning, ready)
    provisioning = (group.provisioning_state or provisioning).lower()
    view_state = ((group.instance_view.state if group.instance_view else None) or "").lower()
    restarts = 0
    container_states: list[str] = []
    messages: list[str] = []
    started: datetime | None = None
    for container in group.containers or []:
        view = container.instance_view
        if view is None:
            container_states.append("unknown")
            continue
        restarts += view.restart_count or 0
        current = view.current_state
        container_states.append(((current.state if current else None) or "unknown").lower())
        if current is not None and isinstance(current.start_time, datetime):
            started = current.start_time if started is None else min(started, current.start_time)
        if current is not None and current.detail_status:
            messages.append(f"{container.name}: {current.detail_status}")
    ready = (
        provisioning == "succeeded"
        and view_state == "running"
        and all(state == "running" for state in container_states)
    )
    state = view_state or provisioning
    if provisioning in _FAILED:
        state = "failed"
    return InstanceStatus(
        replica.instance_id, state, ready, restarts, "; ".join(messages), started_at=started
    )


def deployment_status(
    alias: str,
    namespace: str,
    service_id: str,
    replicas: Sequence[Replica],
    views: Mapping[str, aci.ContainerGroup | None] | None = None,
) -> DeploymentStatus:
    """``views`` maps group name -> the group as GET returned it (with its instance view)."""
    active = [r for r in replicas if not r.stopped]
    instances = tuple(
        _instance(r, views.get(r.name) if views is not None else None) for r in active
    )
    desired = len(active)
    ready = sum(1 for i in instances if i.ready)
    restarts = sum(i.restarts for i in instances)
    failed = sum(1 for i in instances if i.state == "failed")
    if desired == 0:
        state = DeploymentState.STOPPED
        message = "stopped: the container group is kept, stopped"
    elif ready == desired:
        state = DeploymentState.RUNNING
        message = f"{ready}/{desired} container groups running"
    elif failed and not ready:
        state = DeploymentState.FAILED
        message = f"{failed}/{desired} container groups failed"
    elif failed or restarts or any(i.state == "terminated" for i in instances):
        state = DeploymentState.DEGRADED
        message = f"{ready}/{desired} container groups running, {restarts} restarts"
    else:
        state = DeploymentState.PENDING
        message = f"{ready}/{desired} container groups running"
    first = replicas[0].group if replicas else None
    sizing_note = (first.tags or {}).get(TAG_SIZING, "") if first is not None else ""
    if sizing_note:
        message = f"{message}; {sizing_note}"
    image = ""
    if first is not None and first.containers:
        image = first.containers[0].image or ""
    labels = (
        {k: v for k, v in (first.tags or {}).items() if not k.startswith(RESERVED_TAG_PREFIX)}
        if first is not None
        else {}
    )
    return DeploymentStatus(
        service_id=service_id,
        namespace=namespace,
        provider=alias,
        state=state,
        desired_replicas=desired,
        ready_replicas=ready,
        message=message,
        restarts=restarts,
        instances=instances,
        image=image,
        labels=labels,
    )
