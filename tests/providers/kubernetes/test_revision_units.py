"""revisions.py on the JSON the API server sends: rollout verdicts and the spec record.

The Deployment and pod objects below have the shapes of apps/v1 and core/v1
(DeploymentCondition, ContainerStateWaiting, PodCondition); test_revisions.py has
the same verdicts produced by the real controllers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from alphaswarm_controller.providers.kubernetes.revisions import (
    REVISION_KEY,
    rollout,
    spec_annotation,
    spec_from_annotation,
)
from alphaswarm_core.providers.models import DeploymentSpec, PortSpec, Resources, RolloutState

T0 = "2026-01-01T00:00:00Z"


def deployment(*, progressing: tuple[str, str] | None, updated: int = 0) -> dict[str, Any]:
    conditions = []
    if progressing is not None:
        status, reason = progressing
        conditions.append(
            {
                "type": "Progressing",
                "status": status,
                "reason": reason,
                "message": "ReplicaSet has timed out progressing.",
                "lastTransitionTime": T0,
                "lastUpdateTime": T0,
            }
        )
    return {
        "metadata": {
            "name": "web",
            "namespace": "ns",
            "generation": 2,
            "creationTimestamp": T0,
            "annotations": {REVISION_KEY: "2"},
        },
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 2,
            "replicas": 1 + (updated == 0),
            "updatedReplicas": updated,
            "availableReplicas": 1,
            "conditions": conditions,
        },
    }


def replica_set(revision: int, template_hash: str) -> dict[str, Any]:
    return {
        "metadata": {
            "annotations": {REVISION_KEY: str(revision)},
            "labels": {"pod-template-hash": template_hash},
        }
    }


def pod(template_hash: str, waiting: str = "", unschedulable: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Pending", "conditions": []}
    if waiting:
        status["containerStatuses"] = [
            {"name": "main", "state": {"waiting": {"reason": waiting, "message": "why"}}}
        ]
    if unschedulable:
        status["conditions"].append(
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1"}
        )
    return {"metadata": {"labels": {"pod-template-hash": template_hash}}, "status": status}


SETS = [replica_set(1, "old"), replica_set(2, "new")]


def test_a_complete_rollout_succeeded() -> None:
    done = rollout(deployment(progressing=("True", "NewReplicaSetAvailable"), updated=1), [], SETS)
    assert done.state is RolloutState.SUCCEEDED and done.finished_at is not None


@pytest.mark.parametrize(
    ("pods", "reason"),
    [
        ([pod("new", "ImagePullBackOff")], "IMAGE_PULL_FAILED"),
        ([pod("new", "ErrImagePull")], "IMAGE_PULL_FAILED"),
        ([pod("new", "CrashLoopBackOff")], "CRASH_LOOP"),
        ([pod("new", unschedulable=True)], "UNSCHEDULABLE"),
        ([], "PROGRESS_DEADLINE_EXCEEDED"),
        # A pod of the old revision failing does not explain the new one's failure.
        ([pod("old", "CrashLoopBackOff")], "PROGRESS_DEADLINE_EXCEEDED"),
    ],
)
def test_the_controllers_deadline_fails_it_with_the_pods_reason(
    pods: list[dict[str, Any]], reason: str
) -> None:
    failed = rollout(deployment(progressing=("False", "ProgressDeadlineExceeded")), pods, SETS)
    assert (failed.state, failed.reason) == (RolloutState.FAILED, reason)
    assert failed.finished_at is not None


def test_a_stuck_pod_before_the_deadline_is_in_progress_with_its_reason() -> None:
    going = rollout(
        deployment(progressing=("True", "ReplicaSetUpdated")), [pod("new", "ErrImagePull")], SETS
    )
    assert (going.state, going.reason) == (RolloutState.IN_PROGRESS, "IMAGE_PULL_FAILED")
    assert going.finished_at is None


def test_the_spec_record_round_trips_without_replicas_and_policy() -> None:
    spec = DeploymentSpec(
        "web",
        "ns",
        image="registry.example/app:1",
        command=("run", "--fast"),
        env={"A": "1"},
        replicas=3,
        labels={"team": "x"},
        ports=(PortSpec(8080, 80, "tcp"),),
        resources=Resources("500m", "64Mi"),
        provider_options={"service_type": "NodePort"},
        progress_deadline_seconds=30,
        auto_rollback=True,
    )
    raw = spec_annotation(spec)
    assert spec_annotation(spec.__class__("web", "ns", image="registry.example/app:1")) != raw
    back = spec_from_annotation(raw, "web", "ns")
    assert back.runs_as(spec) and back.replicas == 0


def test_the_previous_rollouts_verdict_does_not_fail_a_new_revision() -> None:
    """The controller numbers a new revision (a rollback) before it updates the status:
    until it has observed the new generation, ProgressDeadlineExceeded is the old one's."""
    unseen = deployment(progressing=("False", "ProgressDeadlineExceeded"))
    unseen["metadata"]["generation"] = 3
    going = rollout(unseen, [pod("new", "ImagePullBackOff")], SETS)
    assert going.state is RolloutState.IN_PROGRESS


def test_a_rollback_onto_an_old_replica_set_is_not_failed_by_the_failure_it_undoes() -> None:
    """The controller keeps a timed-out Progressing condition while it rolls back onto an
    existing ReplicaSet; the condition predates the rollback (alphaswarm.dev/changed-at)."""
    rolled = deployment(progressing=("False", "ProgressDeadlineExceeded"))
    now = datetime.now(UTC).replace(microsecond=0)
    rolled["metadata"]["annotations"]["alphaswarm.dev/changed-at"] = now.isoformat()
    rolled["spec"]["progressDeadlineSeconds"] = 600
    assert rollout(rolled, [], SETS).state is RolloutState.IN_PROGRESS
    # ... but it fails by the same deadline, counted from the change.
    then = now - timedelta(seconds=601)
    rolled["metadata"]["annotations"]["alphaswarm.dev/changed-at"] = then.isoformat()
    failed = rollout(rolled, [pod("new", "CrashLoopBackOff")], SETS)
    assert (failed.state, failed.reason) == (RolloutState.FAILED, "CRASH_LOOP")
    assert failed.finished_at == then + timedelta(seconds=600)
    # Rolled back in the very second the controller timed out the rollout it undoes.
    second = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    rolled["status"]["conditions"][0].update(lastUpdateTime=second, lastTransitionTime=second)
    changed = (now + timedelta(milliseconds=200)).isoformat()
    rolled["metadata"]["annotations"]["alphaswarm.dev/changed-at"] = changed
    assert rollout(rolled, [], SETS).state is RolloutState.IN_PROGRESS
    rolled["status"]["conditions"][0].update(lastUpdateTime=T0, lastTransitionTime=T0)
    rolled["metadata"]["annotations"]["alphaswarm.dev/changed-at"] = "2025-12-31T23:59:00+00:00"
    assert rollout(rolled, [], SETS).state is RolloutState.FAILED
