"""Revisions and rollouts as Kubernetes keeps them (pure functions, no I/O).

A revision is what the Deployment controller calls one: every change of the pod
template makes (or re-uses) a ReplicaSet and numbers it in its
``deployment.kubernetes.io/revision`` annotation, one more than the highest so far;
the Deployment carries the number of its newest ReplicaSet. The numbers are the
API server's, so every controller reading them agrees. Config changes make one
too, because they change the template's config-hash annotation.

What the provider adds travels the same way: annotations it writes on the
Deployment together with the template change (change cause, rollback-of, automatic,
when) are copied by the Deployment controller onto the ReplicaSet of that
revision (``copyDeploymentAnnotationsToReplicaSet``, pkg/controller/deployment/
util/deployment_util.go), and the spec rides in the pod template itself.
History is bounded by the Deployment's ``revisionHistoryLimit``: the controller
deletes the oldest scaled-down ReplicaSets beyond it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from alphaswarm_core.providers.models import (
    Condition,
    DeploymentSpec,
    PortSpec,
    Resources,
    Revision,
    Rollout,
    RolloutState,
)
from alphaswarm_core.providers.reasons import ErrorReason

from .transport import JsonObj

#: Set by the Deployment controller on the Deployment and each of its ReplicaSets.
REVISION_KEY = "deployment.kubernetes.io/revision"
#: The annotation ``kubectl rollout history`` shows as CHANGE-CAUSE.
CHANGE_CAUSE_KEY = "kubernetes.io/change-cause"
ROLLBACK_OF_KEY = "alphaswarm.dev/rollback-of"
AUTOMATIC_KEY = "alphaswarm.dev/automatic"
CHANGED_AT_KEY = "alphaswarm.dev/changed-at"
AUTO_ROLLBACK_KEY = "alphaswarm.dev/auto-rollback"
#: The spec a revision runs (replicas and rollout policy aside), in its pod template.
SPEC_KEY = "alphaswarm.dev/spec"
POD_TEMPLATE_HASH = "pod-template-hash"
#: In the pod template: the hash of the config data the revision runs with.
CONFIG_HASH_KEY = "alphaswarm.dev/config-hash"
#: Old ReplicaSets kept for rollback: Kubernetes' default, stated so it is documented.
REVISION_HISTORY_LIMIT = 10
#: Labels of the immutable ConfigMap that keeps the config one revision ran with.
SNAPSHOT_KEY = "alphaswarm.dev/config-snapshot"
CONFIG_VERSION_KEY = "alphaswarm.dev/config-version"

#: Container waiting reasons -> the rollout failure reason they explain.
POD_REASONS: Mapping[str, ErrorReason] = {
    "ImagePullBackOff": ErrorReason.IMAGE_PULL_FAILED,
    "ErrImagePull": ErrorReason.IMAGE_PULL_FAILED,
    "InvalidImageName": ErrorReason.IMAGE_PULL_FAILED,
    "CrashLoopBackOff": ErrorReason.CRASH_LOOP,
    "RunContainerError": ErrorReason.CRASH_LOOP,
    "CreateContainerConfigError": ErrorReason.CONFIG_UNREADABLE,
    "Unschedulable": ErrorReason.UNSCHEDULABLE,
}


def spec_annotation(spec: DeploymentSpec) -> str:
    """The spec as it goes into the pod template: no replicas, no rollout policy (those
    change without a new revision), no names (the Deployment has them)."""
    return json.dumps(
        {
            "image": spec.image,
            "command": list(spec.command),
            "env": dict(spec.env),
            "labels": dict(spec.labels),
            "ports": [[p.container_port, p.host_port, p.protocol] for p in spec.ports],
            "resources": [spec.resources.cpu, spec.resources.memory],
            "provider_options": dict(spec.provider_options),
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def spec_from_annotation(raw: str, service_id: str, namespace: str) -> DeploymentSpec:
    data = json.loads(raw)
    return DeploymentSpec(
        service_id=service_id,
        namespace=namespace,
        image=str(data.get("image", "")),
        command=tuple(str(c) for c in data.get("command", ())),
        env={str(k): str(v) for k, v in (data.get("env") or {}).items()},
        replicas=0,
        labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
        ports=tuple(PortSpec(int(c), int(h), str(p)) for c, h, p in data.get("ports", ())),
        resources=Resources(*[str(r) for r in data.get("resources", ("", ""))]),
        provider_options={str(k): str(v) for k, v in (data.get("provider_options") or {}).items()},
    )


def meta_annotations(obj: JsonObj) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def template_annotations(obj: JsonObj) -> Mapping[str, str]:
    template = (obj.get("spec") or {}).get("template") or {}
    return (template.get("metadata") or {}).get("annotations") or {}


def revision_of(obj: JsonObj) -> int:
    """The revision number the controller gave a Deployment or ReplicaSet (0: none yet)."""
    try:
        return int(meta_annotations(obj).get(REVISION_KEY) or 0)
    except ValueError:
        return 0


def settled(deployment: JsonObj) -> bool:
    """The controller has seen the Deployment's latest spec (its revision is current)."""
    meta = deployment.get("metadata") or {}
    observed = int((deployment.get("status") or {}).get("observedGeneration") or 0)
    return observed >= int(meta.get("generation") or 0) and revision_of(deployment) > 0


def change_annotations(cause: str, rollback_of: int = 0, automatic: bool = False) -> dict[str, str]:
    """What the Deployment carries for the revision a template change makes (all of them,
    every time: a re-used ReplicaSet keeps what it had unless overwritten)."""
    return {
        CHANGE_CAUSE_KEY: cause,
        ROLLBACK_OF_KEY: str(rollback_of),
        AUTOMATIC_KEY: "true" if automatic else "false",
        # Microseconds: a timed-out condition (whole seconds) of the same second as the
        # change is older than it (see _timed_out).
        CHANGED_AT_KEY: datetime.now(UTC).isoformat(timespec="microseconds"),
    }


def kept_annotations(deployment: JsonObj | None) -> dict[str, str]:
    """The change annotations a Deployment has now (a change of no revision keeps them)."""
    current = meta_annotations(deployment or {})
    keys = (CHANGE_CAUSE_KEY, ROLLBACK_OF_KEY, AUTOMATIC_KEY, CHANGED_AT_KEY)
    return {k: current[k] for k in keys if k in current}


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def owned_by(replica_set: JsonObj, deployment: JsonObj) -> bool:
    uid = deployment["metadata"].get("uid")
    refs = replica_set["metadata"].get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)


def revision_from(
    replica_set: JsonObj, service_id: str, namespace: str, configs: Mapping[str, JsonObj]
) -> Revision | None:
    """The Revision a ReplicaSet stands for; ``configs`` are the config snapshots by
    config hash. None for a ReplicaSet this provider did not template."""
    raw = template_annotations(replica_set).get(SPEC_KEY)
    number = revision_of(replica_set)
    if not raw or not number:
        return None
    meta = replica_set["metadata"]
    notes = meta_annotations(replica_set)
    snapshot = configs.get(template_annotations(replica_set).get(CONFIG_HASH_KEY, "")) or {}
    try:
        rollback_of = int(notes.get(ROLLBACK_OF_KEY) or 0)
    except ValueError:
        rollback_of = 0
    return Revision(
        number=number,
        spec=spec_from_annotation(raw, service_id, namespace),
        config=dict(snapshot.get("data") or {}),
        config_version=meta_annotations(snapshot).get(CONFIG_VERSION_KEY, ""),
        created_at=parse_time(notes.get(CHANGED_AT_KEY))
        or parse_time(meta.get("creationTimestamp"))
        or datetime.now(UTC),
        change_cause=notes.get(CHANGE_CAUSE_KEY, ""),
        rollback_of=rollback_of,
        automatic=notes.get(AUTOMATIC_KEY) == "true",
    )


# -- the rollout ------------------------------------------------------------------------------


def _conditions(deployment: JsonObj) -> dict[str, JsonObj]:
    return {c.get("type"): c for c in (deployment.get("status") or {}).get("conditions") or []}


def conditions(deployment: JsonObj) -> tuple[Condition, ...]:
    """The Deployment's own Available and Progressing conditions."""
    found = []
    for kind in ("Available", "Progressing"):
        condition = _conditions(deployment).get(kind)
        if condition is None:
            continue
        status = {"True": True, "False": False}.get(str(condition.get("status")))
        found.append(
            Condition(
                type=kind,
                status=status,
                last_transition_time=parse_time(condition.get("lastTransitionTime"))
                or datetime.now(UTC),
                reason=str(condition.get("reason") or ""),
                message=str(condition.get("message") or "")[:300],
            )
        )
    return tuple(found)


def complete(deployment: JsonObj) -> bool:
    """What ``kubectl rollout status`` waits for: the controller saw the latest spec, and
    every desired replica is updated and available, with no old one left."""
    spec = deployment.get("spec") or {}
    observed = deployment.get("status") or {}
    desired = int(spec.get("replicas", 1))
    return (
        settled(deployment)
        and int(observed.get("updatedReplicas") or 0) >= desired
        and int(observed.get("replicas") or 0) <= desired
        and int(observed.get("availableReplicas") or 0) >= desired
    )


def pod_reason(pods: Sequence[JsonObj], template_hash: str | None) -> tuple[str, str]:
    """(ErrorReason name, message) of the first pod of the new ReplicaSet that is stuck
    for a reason the kubelet or scheduler gave; ("", "") when none is."""
    for pod in pods:
        labels = pod["metadata"].get("labels") or {}
        if template_hash is not None and labels.get(POD_TEMPLATE_HASH) != template_hash:
            continue
        status = pod.get("status") or {}
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = POD_REASONS.get(str(waiting.get("reason") or ""))
            if reason is not None:
                return reason.name, f"{waiting['reason']}: {waiting.get('message', '')}"[:300]
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("reason") == (
                "Unschedulable"
            ):
                return ErrorReason.UNSCHEDULABLE.name, str(condition.get("message") or "")[:300]
    return "", ""


def _timed_out(deployment: JsonObj, progressing: JsonObj, started: datetime) -> datetime | None:
    """When this revision's rollout passed its progress deadline (None: it has not).

    The controller's verdict is Progressing False with ProgressDeadlineExceeded, but
    not while it has not seen the latest spec (it numbers a revision before it
    updates the status), and not when the condition predates the change: a rollout
    onto an existing ReplicaSet (a rollback) keeps the failed rollout's condition
    until it completes (the controller sets a fresh one only for a new ReplicaSet;
    ``DeploymentTimedOut`` in pkg/controller/deployment/util keeps a timed-out one).
    Such a rollout fails by the same rule, counted from the change: no completion
    within progressDeadlineSeconds. The condition's time is in whole seconds, the
    change's in microseconds: a rollback in the second the controller timed out the
    rollout it undoes comes after that verdict, and a rollout's own timeout (at least
    1 s after its change) comes after the change.
    """
    if not (
        settled(deployment)
        and progressing.get("status") == "False"
        and progressing.get("reason") == "ProgressDeadlineExceeded"
    ):
        return None
    when = parse_time(progressing.get("lastUpdateTime")) or parse_time(
        progressing.get("lastTransitionTime")
    )
    if when is None or CHANGED_AT_KEY not in meta_annotations(deployment):
        return when or datetime.now(UTC)
    if when > started:
        return when
    deadline = started + timedelta(
        seconds=int((deployment.get("spec") or {}).get("progressDeadlineSeconds") or 600)
    )
    return deadline if datetime.now(UTC) >= deadline else None


def newest_replica_set(deployment: JsonObj, replica_sets: Sequence[JsonObj]) -> JsonObj | None:
    revision = revision_of(deployment)
    for replica_set in replica_sets:
        if revision and revision_of(replica_set) == revision:
            return replica_set
    return None


def observed_revision(
    deployment: JsonObj, replica_sets: Sequence[JsonObj] | None, done: bool
) -> int:
    """The revision the replicas run: the desired one once the rollout is complete, else
    the newest older revision that still has ready replicas (0: none or unknown)."""
    if done:
        return revision_of(deployment)
    desired = revision_of(deployment)
    running = [
        revision_of(rs)
        for rs in replica_sets or ()
        if int((rs.get("status") or {}).get("readyReplicas") or 0) > 0
        and revision_of(rs) != desired
    ]
    return max(running, default=0)


def rollout(
    deployment: JsonObj,
    pods: Sequence[JsonObj] | None,
    replica_sets: Sequence[JsonObj] | None,
) -> Rollout:
    """The rollout of the Deployment's revision, as its conditions and pods tell it."""
    notes = meta_annotations(deployment)
    progressing = _conditions(deployment).get("Progressing") or {}
    started = (
        parse_time(notes.get(CHANGED_AT_KEY))
        or parse_time(deployment["metadata"].get("creationTimestamp"))
        or datetime.now(UTC)
    )
    newest = newest_replica_set(deployment, replica_sets or ())
    template_hash = (
        (newest["metadata"].get("labels") or {}).get(POD_TEMPLATE_HASH) if newest else None
    )
    reason, message = pod_reason(pods or (), template_hash)
    if complete(deployment):
        completed = parse_time(progressing.get("lastUpdateTime")) or datetime.now(UTC)
        return Rollout(RolloutState.SUCCEEDED, started, finished_at=max(completed, started))
    finished = _timed_out(deployment, progressing, started)
    if finished is not None:  # the pods say why, when they do
        return Rollout(
            RolloutState.FAILED,
            started,
            reason=reason or ErrorReason.PROGRESS_DEADLINE_EXCEEDED.name,
            message=message or str(progressing.get("message") or "")[:300],
            finished_at=finished,
        )
    return Rollout(RolloutState.IN_PROGRESS, started, reason=reason, message=message)
