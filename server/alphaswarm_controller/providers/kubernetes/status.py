"""A Deployment (and optionally its pods) as the JSON the server sent -> DeploymentStatus."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from alphaswarm_core.providers.models import (
    DEFAULT_PROGRESS_DEADLINE_SECONDS,
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    InstanceStatus,
    RolloutState,
)

from . import revisions
from .manifests import STATE_KEY, user_labels
from .transport import JsonObj

#: Container waiting reasons that mean the pod will not become ready by itself.
FAILING_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "Unschedulable",
    }
)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _instance(pod: JsonObj) -> InstanceStatus:
    status = pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    restarts = 0
    state = str(status.get("phase") or "Unknown")
    message = ""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            state = "Unschedulable"
            message = str(condition.get("message") or "")
    for container in status.get("containerStatuses") or []:
        restarts += int(container.get("restartCount") or 0)
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") and not ready:
            state = str(waiting["reason"])
            message = str(waiting.get("message") or "")
    return InstanceStatus(
        instance_id=str(pod["metadata"]["name"]),
        state=state,
        ready=ready,
        restarts=restarts,
        message=message[:300],
        started_at=_parse_time(status.get("startTime")),
    )


def live_pods(pods: Sequence[JsonObj]) -> list[JsonObj]:
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def deployment_status(
    deployment: JsonObj,
    alias: str,
    pods: Sequence[JsonObj] | None = None,
    replica_sets: Sequence[JsonObj] | None = None,
) -> DeploymentStatus:
    """The status; with ``pods`` its instances and the pods' reasons for a stuck rollout,
    with ``replica_sets`` (the Deployment's) the revision its ready replicas run."""
    meta = deployment["metadata"]
    spec = deployment.get("spec") or {}
    observed = deployment.get("status") or {}
    desired = int(spec.get("replicas", 1))
    ready = int(observed.get("readyReplicas") or 0)
    updated = int(observed.get("updatedReplicas") or 0)
    total = int(observed.get("replicas") or 0)
    current = int(observed.get("observedGeneration") or 0) >= int(meta.get("generation") or 0)
    conditions = {c.get("type"): c for c in observed.get("conditions") or []}
    instances = tuple(_instance(p) for p in live_pods(pods)) if pods is not None else ()
    failing = sorted({i.state for i in instances if i.state in FAILING_REASONS})
    restarts = sum(i.restarts for i in instances)

    progressing = conditions.get("Progressing") or {}
    replica_failure = conditions.get("ReplicaFailure") or {}
    problems: list[str] = []
    if progressing.get("status") == "False":
        problems.append(f"{progressing.get('reason')}: {progressing.get('message', '')}".strip())
    if replica_failure.get("status") == "True":
        problems.append(
            f"{replica_failure.get('reason')}: {replica_failure.get('message', '')}".strip()
        )
    if failing:
        problems.append("pods " + ", ".join(failing))

    stopped = (meta.get("annotations") or {}).get(STATE_KEY) == "stopped"
    if desired == 0:
        state = DeploymentState.STOPPED
        message = "stopped" if stopped else "scaled to zero"
    elif progressing.get("status") == "False" or replica_failure.get("status") == "True":
        state = DeploymentState.FAILED
        message = "; ".join(problems)
    elif current and ready >= desired and updated >= desired and total <= desired:
        state = DeploymentState.RUNNING
        message = f"{ready}/{desired} ready"
    elif failing and ready > 0:
        state = DeploymentState.DEGRADED
        message = f"{ready}/{desired} ready; " + "; ".join(problems)
    else:
        state = DeploymentState.PENDING
        detail = "; ".join(problems) if problems else "rolling out" if current else "pending"
        message = f"{ready}/{desired} ready; {detail}"

    stamps = [
        t
        for t in (_parse_time(c.get("lastUpdateTime")) for c in observed.get("conditions") or [])
        if t is not None
    ]
    created = _parse_time(meta.get("creationTimestamp"))
    containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or [{}]
    progress = revisions.rollout(deployment, live_pods(pods) if pods else None, replica_sets)
    return DeploymentStatus(
        service_id=str(meta["name"]),
        namespace=str(meta.get("namespace") or ""),
        provider=alias,
        state=state,
        desired_replicas=desired,
        ready_replicas=ready,
        message=message,
        updated_at=datetime.now(UTC),
        restarts=restarts,
        instances=instances,
        image=str(containers[0].get("image") or ""),
        labels=user_labels(meta.get("labels") or {}),
        created_at=created,
        # The last rollout condition change: the closest the Deployment records to when
        # its spec changed.
        changed_at=max(stamps) if stamps else created,
        spec=recorded_spec(deployment),
        revision=revisions.revision_of(deployment),
        observed_revision=revisions.observed_revision(
            deployment, replica_sets, progress.state is RolloutState.SUCCEEDED
        ),
        rollout=progress,
        conditions=revisions.conditions(deployment),
    )


def recorded_spec(deployment: JsonObj) -> DeploymentSpec | None:
    """The spec read back from the pod template, with the Deployment's replica count and
    rollout policy (None for a Deployment made before specs were recorded)."""
    raw = revisions.template_annotations(deployment).get(revisions.SPEC_KEY)
    if not raw:
        return None
    meta = deployment["metadata"]
    spec = deployment.get("spec") or {}
    try:
        recorded = revisions.spec_from_annotation(raw, meta["name"], meta.get("namespace") or "")
    except (ValueError, TypeError, KeyError):
        return None
    return replace(
        recorded,
        replicas=int(spec.get("replicas", 1)),
        progress_deadline_seconds=float(
            spec.get("progressDeadlineSeconds") or DEFAULT_PROGRESS_DEADLINE_SECONDS
        ),
        auto_rollback=revisions.meta_annotations(deployment).get(revisions.AUTO_ROLLBACK_KEY)
        == "true",
    )
