"""How a rollout of an ECS service is going, judged from what ECS reports (no AWS call).

A rollout is the PRIMARY deployment of the service (ECS starts one for every new
task definition, DescribeServices ``deployments``). Its ``rolloutState`` says most:
IN_PROGRESS, COMPLETED once the service reached a steady state, FAILED when the
deployment circuit breaker tripped ("If the service fails to reach a steady state and
circuit breaker is turned on, the deployment transitions to a FAILED state",
Deployment.rolloutState, botocore ecs model). The breaker does not see everything:
it counts tasks that cannot be placed or never reach RUNNING, and "Once a service
deployment has one or more successfully running tasks, the failed task count resets
to zero and stops being evaluated" (Deployment.failedTasks). A container that starts
and then exits is not counted (aws/containers-roadmap#1206, aws/copilot-cli#1879:
``CMD exit 1`` cycles for an hour with failedTasks 0). So the provider judges two
more failures itself, from the tasks ECS stopped and the service's events:

* CRASH_LOOP: the last ``CRASH_LOOP_EXITS`` tasks of the rollout stopped because
  their essential container exited (stop code ``EssentialContainerExited``);
* no progress for the spec's ``progress_deadline`` (ECS has no deadline of its own):
  progress is the deployment starting and each of its tasks reaching RUNNING. The
  reason is what stopped the tasks or kept them from being placed when ECS said so
  (IMAGE_PULL_FAILED, CRASH_LOOP, UNSCHEDULABLE, BACKEND_QUOTA_EXCEEDED,
  CONFIG_UNREADABLE), else PROGRESS_DEADLINE_EXCEEDED.

Stopped tasks name their cause in ``stopCode`` and ``stoppedReason`` ("Stopped tasks
error codes", ECS developer guide): ``CannotPullContainerError`` (IMAGE_PULL_FAILED),
``ResourceInitializationError`` for secrets (CONFIG_UNREADABLE), an essential
container that exited (CRASH_LOOP), any other ``TaskFailedToStart``
(BACKEND_REJECTED). Tasks the scheduler could not place leave service events
("service ... was unable to place a task because no container instance met all of its
requirements" -> UNSCHEDULABLE; "... reached the limit ..." -> BACKEND_QUOTA_EXCEEDED;
"Service event messages", ECS developer guide).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from alphaswarm_core.providers.conditions import Verdict, rollout_conditions
from alphaswarm_core.providers.models import Condition, Rollout, RolloutState
from alphaswarm_core.providers.reasons import ErrorReason

from .taskdef import revision_number

JsonDict = Mapping[str, Any]

CRASH_LOOP_EXITS = 3
EPOCH = datetime.fromtimestamp(0, UTC)


@dataclass(frozen=True, slots=True)
class Judgement:
    revision: int
    """The desired revision: the service's task definition, or the one ECS rolled back from."""
    observed: int
    """What the tasks run: the revision once its rollout completed, else the oldest one a
    RUNNING task runs (0: none runs)."""
    rollout: Rollout | None
    conditions: tuple[Condition, ...]
    good: int = 0
    """The newest other revision known to have served (an automatic rollback's target)."""

    @property
    def failed(self) -> bool:
        return self.rollout is not None and self.rollout.state is RolloutState.FAILED


def primary_deployment(service: JsonDict) -> JsonDict:
    for deployment in service.get("deployments", []):
        if deployment.get("status") == "PRIMARY":
            return dict(deployment)
    return {}


def _time(value: object, default: datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return default


def stop_verdict(task: JsonDict) -> Verdict | None:
    """Why a stopped task failed, or None when it was stopped on purpose."""
    reason = str(task.get("stoppedReason") or "")
    code = str(task.get("stopCode") or "")
    containers = list(task.get("containers") or [])
    details = [str(c.get("reason")) for c in containers if c.get("reason")]
    text = " ".join([reason, *details])
    if "CannotPullContainerError" in text:
        return Verdict(ErrorReason.IMAGE_PULL_FAILED, text.strip())
    if "ResourceInitializationError" in text and "secret" in text.lower():
        return Verdict(ErrorReason.CONFIG_UNREADABLE, text.strip())
    if code == "EssentialContainerExited":
        codes = [str(c["exitCode"]) for c in containers if c.get("exitCode") is not None]
        exited = f" (exit code {', '.join(codes)})" if codes else ""
        return Verdict(ErrorReason.CRASH_LOOP, f"{reason or 'essential container exited'}{exited}")
    if code == "TaskFailedToStart":
        return Verdict(ErrorReason.BACKEND_REJECTED, text.strip() or "the task failed to start")
    return None


def placement_verdict(message: str) -> Verdict | None:
    """Why the scheduler could not place a task, from one service event."""
    if "unable to place a task" not in message:
        return None
    lowered = message.lower()
    if "reached the limit" in lowered or "quota" in lowered:
        return Verdict(ErrorReason.BACKEND_QUOTA_EXCEEDED, message)
    return Verdict(ErrorReason.UNSCHEDULABLE, message)


def _stopped_at(task: JsonDict) -> datetime:
    return _time(task.get("stoppedAt") or task.get("createdAt"), EPOCH)


def newest_first(tasks: Iterable[JsonDict]) -> list[JsonDict]:
    return sorted(tasks, key=_stopped_at, reverse=True)


def _cause(
    stopped: Sequence[JsonDict], events: Sequence[JsonDict], since: datetime
) -> Verdict | None:
    """The newest reason tasks failed (stopped ``stopped``, or ``events`` since ``since``)."""
    for task in newest_first(stopped):
        verdict = stop_verdict(task)
        if verdict is not None:
            return verdict
    for event in events:  # ECS lists them newest first
        if _time(event.get("createdAt"), since) < since:
            break
        verdict = placement_verdict(str(event.get("message", "")))
        if verdict is not None:
            return verdict
    return None


def crash_loop(stopped: Sequence[JsonDict]) -> Verdict | None:
    """CRASH_LOOP when the newest ``CRASH_LOOP_EXITS`` of ``stopped`` exited."""
    newest = newest_first(stopped)[:CRASH_LOOP_EXITS]
    if len(newest) < CRASH_LOOP_EXITS:
        return None
    verdicts = [stop_verdict(task) for task in newest]
    if all(v is not None and v.reason is ErrorReason.CRASH_LOOP for v in verdicts):
        last = verdicts[0]
        assert last is not None
        return Verdict(
            ErrorReason.CRASH_LOOP,
            f"the last {CRASH_LOOP_EXITS} tasks exited after starting: {last.message}",
        )
    return None


def _of_deployment(tasks: Iterable[JsonDict], deployment: JsonDict) -> list[JsonDict]:
    return [t for t in tasks if deployment and t.get("startedBy") == deployment.get("id")]


def _of_revision(tasks: Iterable[JsonDict], revision: int) -> list[JsonDict]:
    return [t for t in tasks if revision_number(str(t.get("taskDefinitionArn", ""))) == revision]


def last_good(service: JsonDict, stopped: Sequence[JsonDict], failed_revision: int) -> int:
    """The newest revision other than ``failed_revision`` known to have served: an older
    deployment ECS still lists as COMPLETED, else the revision of the newest task the
    scheduler replaced after it had run."""
    completed = [
        d
        for d in service.get("deployments", [])
        if d.get("status") != "PRIMARY" and d.get("rolloutState") == "COMPLETED"
    ]
    if completed:
        newest = max(completed, key=lambda d: _time(d.get("createdAt"), EPOCH))
        revision = revision_number(str(newest.get("taskDefinition", "")))
        if revision and revision != failed_revision:
            return revision
    for task in newest_first(stopped):
        revision = revision_number(str(task.get("taskDefinitionArn", "")))
        if (
            task.get("stopCode") == "ServiceSchedulerInitiated"
            and task.get("startedAt")
            and revision
            and revision != failed_revision
        ):
            return revision
    return 0


def judge(
    service: JsonDict,
    tasks: Sequence[JsonDict],
    *,
    stopped: Sequence[JsonDict] = (),
    rolled_back_from: int = 0,
    rolled_back_since: datetime | None = None,
    deadline_seconds: float,
    now: datetime | None = None,
) -> Judgement:
    """The rollout of ``service`` (described) with its desired-RUNNING ``tasks`` and
    recently ``stopped`` ones. ``rolled_back_from``: the revision ECS's circuit breaker
    rolled the service back from (claims.py tells), registered at ``rolled_back_since``."""
    now = now or datetime.now(UTC)
    desired = int(service.get("desiredCount", 0))
    primary = primary_deployment(service)
    running_revision = revision_number(str(service.get("taskDefinition", "")))
    revision = rolled_back_from or running_revision
    state = str(primary.get("rolloutState", ""))
    if not state and primary:  # services behind a Classic Load Balancer report none
        settled = len(service.get("deployments", [])) == 1 and int(
            primary.get("runningCount", 0)
        ) >= int(primary.get("desiredCount", 0))
        state = "COMPLETED" if settled else "IN_PROGRESS"
    started = _time(primary.get("createdAt"), now)
    updated = _time(primary.get("updatedAt"), started)
    running = [t for t in tasks if t.get("lastStatus") == "RUNNING"]
    if state == "COMPLETED":
        observed = running_revision
    else:
        revisions = [revision_number(str(t.get("taskDefinitionArn", ""))) for t in running]
        observed = min((r for r in revisions if r), default=0)
    mine = _of_deployment(stopped, primary)
    events = list(service.get("events") or [])

    rollout: Rollout
    if rolled_back_from:
        cause = _cause(_of_revision(stopped, rolled_back_from), (), started)
        why = f"{cause.reason.value}: {cause.message}" if cause else "its deployment failed"
        rollout = Rollout(
            RolloutState.FAILED,
            rolled_back_since or started,
            cause.reason.value if cause else ErrorReason.BACKEND_REJECTED.value,
            f"revision {rolled_back_from} failed ({why}); ECS's circuit breaker rolled the "
            f"service back to revision {running_revision}",
            finished_at=updated,
        )
    elif state == "FAILED":
        cause = _cause(mine, events, started)
        told = str(primary.get("rolloutStateReason") or "ECS deployment failed")
        rollout = Rollout(
            RolloutState.FAILED,
            started,
            cause.reason.value if cause else ErrorReason.BACKEND_REJECTED.value,
            f"{told} {cause.message}" if cause else told,
            finished_at=updated,
        )
    elif state == "COMPLETED":
        rollout = Rollout(RolloutState.SUCCEEDED, started, finished_at=updated)
    else:
        rollout = _in_progress(
            primary,
            running=running,
            stopped=mine,
            events=events,
            desired=desired,
            deadline_seconds=deadline_seconds,
            now=now,
        )
    good = last_good(service, stopped, revision) if rollout.state is RolloutState.FAILED else 0
    return Judgement(
        revision=revision,
        observed=observed,
        rollout=rollout,
        conditions=rollout_conditions(rollout, _serving(tasks), desired),
        good=good,
    )


def _in_progress(
    primary: JsonDict,
    *,
    running: Sequence[JsonDict],
    stopped: Sequence[JsonDict],
    events: Sequence[JsonDict],
    desired: int,
    deadline_seconds: float,
    now: datetime,
) -> Rollout:
    started = _time(primary.get("createdAt"), now)
    crashed = crash_loop(stopped)
    if crashed is not None:
        when = _stopped_at(newest_first(stopped)[0])
        return Rollout(
            RolloutState.FAILED, started, crashed.reason.value, crashed.message, finished_at=when
        )
    progress = max(
        [started, *(_time(t.get("startedAt"), started) for t in _of_deployment(running, primary))]
    )
    cause = _cause(stopped, events, started)
    running_count = len(_of_deployment(running, primary))
    if desired and now - progress > timedelta(seconds=deadline_seconds):
        reason = cause.reason if cause else ErrorReason.PROGRESS_DEADLINE_EXCEEDED
        stuck = f"{running_count}/{desired} tasks of the new revision running"
        return Rollout(
            RolloutState.FAILED,
            started,
            reason.value,
            f"no progress for {math.ceil(deadline_seconds)}s (spec.progress_deadline): "
            f"{stuck}" + (f"; {cause.message}" if cause else ""),
            finished_at=progress + timedelta(seconds=deadline_seconds),
        )
    return Rollout(
        RolloutState.IN_PROGRESS,
        started,
        cause.reason.value if cause else "",
        f"{running_count}/{desired} tasks of the new revision running"
        + (f"; {cause.message}" if cause else ""),
    )


def _serving(tasks: Sequence[JsonDict]) -> int:
    """Tasks that serve whatever revision they run (RUNNING, not failing a health check):
    Available counts them, as Kubernetes counts the available pods of every ReplicaSet,
    so a failed rollout whose old tasks keep serving is still available."""
    return sum(
        1
        for task in tasks
        if task.get("lastStatus") == "RUNNING" and task.get("healthStatus") != "UNHEALTHY"
    )
