"""How the rollout of a Cloud Run service's desired revision is going (pure, no I/O).

The rollout of revision N is Cloud Run's reconciliation of the revision made from the
template that carries N (``revisions.py``). Cloud Run reports it on two resources
(service.proto, revision.proto, condition.proto):

* the service: ``latest_created_revision`` (the newest revision made from the
  template), ``latest_ready_revision`` (the newest one that became ready, which the
  default ``TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST`` target serves),
  ``traffic_statuses``, ``reconciling`` and ``terminal_condition``. "If
  reconciliation failed, ``traffic_statuses``, ``observed_generation``, and
  ``latest_ready_revision`` will have the state of the last serving revision"
  (``Service.reconciling``): a failed update leaves the previous revision serving;
* the revision: its ``conditions`` (``Ready``, ``ContainerHealthy``,
  ``ResourcesAvailable``...), each with a state and, when it failed, a reason from
  ``Condition.CommonReason`` or ``Condition.RevisionReason`` and Cloud Run's message.

SUCCEEDED: the revision carrying N is the latest ready one. FAILED: one of its
conditions failed (reason below), or reconciliation ended with the service's
``terminal_condition`` FAILED while it is not the ready one, or it did not become
ready within the spec's ``progress_deadline`` of its creation (Cloud Run's own startup
limits are longer; reason PROGRESS_DEADLINE_EXCEEDED). Else IN_PROGRESS.

Reasons (Cloud Run's -> the catalogue's):

* ``CONTAINER_MISSING`` ("The container image path is incorrect"),
  ``CONTAINER_PERMISSION_DENIED``, ``CONTAINER_IMAGE_UNAUTHORIZED``,
  ``CONTAINER_IMAGE_AUTHORIZATION_CHECK_FAILED`` -> IMAGE_PULL_FAILED;
* ``HEALTH_CHECK_CONTAINER_ERROR``, or the ``ContainerHealthy`` condition failed (a
  container that exits, or never listens on ``$PORT``: "The user-provided container
  failed to start and listen on the port...") -> CRASH_LOOP;
* ``SECRETS_ACCESS_CHECK_FAILED`` (the config secret version cannot be read) ->
  CONFIG_UNREADABLE;
* ``ACTIVE_REVISION_LIMIT_REACHED``, or ``ResourcesAvailable`` failed on a quota ->
  BACKEND_QUOTA_EXCEEDED; ``ResourcesAvailable`` failed otherwise -> UNSCHEDULABLE;
* ``PROGRESS_DEADLINE_EXCEEDED`` (Cloud Run's own) -> PROGRESS_DEADLINE_EXCEEDED;
* anything else that failed -> BACKEND_REJECTED, with Cloud Run's message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.cloud import run_v2

from alphaswarm_core.providers.conditions import Verdict, rollout_conditions
from alphaswarm_core.providers.models import Condition, Rollout, RolloutState
from alphaswarm_core.providers.reasons import ErrorReason

from .revisions import facts_of

_STATE = run_v2.Condition.State
_COMMON = run_v2.Condition.CommonReason
_REVISION = run_v2.Condition.RevisionReason

COMMON_REASONS: Mapping[int, ErrorReason] = {
    _COMMON.CONTAINER_MISSING: ErrorReason.IMAGE_PULL_FAILED,
    _COMMON.CONTAINER_PERMISSION_DENIED: ErrorReason.IMAGE_PULL_FAILED,
    _COMMON.CONTAINER_IMAGE_UNAUTHORIZED: ErrorReason.IMAGE_PULL_FAILED,
    _COMMON.CONTAINER_IMAGE_AUTHORIZATION_CHECK_FAILED: ErrorReason.IMAGE_PULL_FAILED,
    _COMMON.SECRETS_ACCESS_CHECK_FAILED: ErrorReason.CONFIG_UNREADABLE,
    _COMMON.PROGRESS_DEADLINE_EXCEEDED: ErrorReason.PROGRESS_DEADLINE_EXCEEDED,
}
REVISION_REASONS: Mapping[int, ErrorReason] = {
    _REVISION.HEALTH_CHECK_CONTAINER_ERROR: ErrorReason.CRASH_LOOP,
    _REVISION.ACTIVE_REVISION_LIMIT_REACHED: ErrorReason.BACKEND_QUOTA_EXCEEDED,
}


@dataclass(frozen=True, slots=True)
class Judgement:
    rollout: Rollout | None
    conditions: tuple[Condition, ...]

    @property
    def failed(self) -> bool:
        return self.rollout is not None and self.rollout.state is RolloutState.FAILED


def time_of(value: object, default: datetime) -> datetime:
    """A proto-plus timestamp (a ``datetime``, unset: the epoch) or ``default``."""
    if isinstance(value, datetime) and value.timestamp() > 0:
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return default


def _one(condition: run_v2.Condition) -> Verdict | None:
    """Why one condition failed, or None when it did not."""
    if condition.state != _STATE.CONDITION_FAILED:
        return None
    message = str(condition.message) or f"Cloud Run condition {condition.type_} failed"
    reason = COMMON_REASONS.get(int(condition.reason)) or REVISION_REASONS.get(
        int(condition.revision_reason)
    )
    if reason is None and condition.type_ == "ContainerHealthy":
        reason = ErrorReason.CRASH_LOOP
    if reason is None and condition.type_ == "ResourcesAvailable":
        quota = "quota" in message.lower()
        reason = ErrorReason.BACKEND_QUOTA_EXCEEDED if quota else ErrorReason.UNSCHEDULABLE
    return Verdict(reason, message) if reason is not None else None


def verdict(conditions: Iterable[run_v2.Condition]) -> Verdict | None:
    """The most specific reason among failed ``conditions``; BACKEND_REJECTED when they
    failed without one; None when none failed."""
    failed = [c for c in conditions if c.state == _STATE.CONDITION_FAILED]
    for condition in failed:
        found = _one(condition)
        if found is not None:
            return found
    if failed:
        return Verdict(ErrorReason.BACKEND_REJECTED, str(failed[0].message) or "it failed")
    return None


def judge(
    service: run_v2.Service,
    created: run_v2.Revision | None,
    *,
    desired: int,
    deadline_seconds: float,
    serving: int,
    replicas: int,
    now: datetime | None = None,
) -> Judgement:
    """The rollout of revision ``desired`` of ``service``; ``created`` is Cloud Run's
    ``latest_created_revision`` (None if it names none); ``serving`` of ``replicas``
    instances serve (the Available condition)."""
    now = now or datetime.now(UTC)
    if desired == 0:
        return Judgement(None, ())
    if created is None or facts_of(created.annotations).number != desired:
        # Cloud Run has not made the revision yet (reconciliation just began).
        started = time_of(service.update_time, now)
        rollout = _in_progress(started, None, deadline_seconds, now, "creating the revision")
    else:
        rollout = _of_revision(service, created, desired, deadline_seconds, now)
    return Judgement(rollout, rollout_conditions(rollout, serving, replicas))


def _of_revision(
    service: run_v2.Service,
    created: run_v2.Revision,
    desired: int,
    deadline_seconds: float,
    now: datetime,
) -> Rollout:
    """The rollout once Cloud Run made the revision carrying ``desired``."""
    started = time_of(created.create_time, now)
    if created.name == service.latest_ready_revision:
        ready = [c for c in created.conditions if c.type_ == "Ready"]
        finished = time_of(ready[0].last_transition_time if ready else None, started)
        return Rollout(RolloutState.SUCCEEDED, started, finished_at=finished)
    terminal = service.terminal_condition
    found = verdict(created.conditions)
    if found is None and not service.reconciling and terminal.state == _STATE.CONDITION_FAILED:
        found = verdict([terminal])  # reconciliation ended, the revision never became ready
    if found is None:
        return _in_progress(
            started, created, deadline_seconds, now, "Cloud Run is starting the revision"
        )
    return Rollout(
        RolloutState.FAILED,
        started,
        found.reason.value,
        f"revision {desired} ({created.name.rsplit('/', 1)[-1]}) failed: {found.message}",
        finished_at=time_of(terminal.last_transition_time, now),
    )


def _in_progress(
    started: datetime,
    created: run_v2.Revision | None,
    deadline_seconds: float,
    now: datetime,
    doing: str,
) -> Rollout:
    if now - started > timedelta(seconds=deadline_seconds):
        waiting = [str(c.message) for c in (created.conditions if created else []) if c.message]
        detail = f"; Cloud Run says: {waiting[0]}" if waiting else ""
        return Rollout(
            RolloutState.FAILED,
            started,
            ErrorReason.PROGRESS_DEADLINE_EXCEEDED.value,
            f"the revision was not ready within {deadline_seconds:g}s "
            f"(spec.progress_deadline){detail}",
            finished_at=started + timedelta(seconds=deadline_seconds),
        )
    return Rollout(RolloutState.IN_PROGRESS, started, message=doing)
