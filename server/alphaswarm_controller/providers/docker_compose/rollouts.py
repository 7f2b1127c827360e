"""Rollouts: how a change of what a service runs is going, kept beside its definition.

Compose has no controller loop: ``docker compose up --wait`` carries out a change
and waits for it in the command itself. This provider does the same in the
mutating call (start, apply_config, rollback): it records the new revision, replaces
the replicas one at a time, waits for each to be ready, and writes the outcome
(``RolloutRecord``) into the service's definition, where every controller on the
engine reads it. What decides the outcome:

* ready: running with its health check passing (or, without one, running for
  ``min_ready_seconds`` without a restart); or *completed*: exited 0 under a restart
  policy that does not restart it (``no``/``on-failure``), as a one-shot service's
  replicas do (the complaint of compose#9273/#10596: ``up --wait`` treated those
  as failures). The rollout SUCCEEDS when every replica of the revision is one of
  the two.
* CRASH_LOOP: a new replica exited ``crash_loop_exits`` times in a row (default 3)
  without becoming ready, or exited non-zero under restart policy ``no`` (nothing
  restarts it).
* IMAGE_PULL_FAILED: its image is not on the engine and cannot be pulled, or the
  engine cannot run it (no such executable).
* UNSCHEDULABLE: the engine cannot give it the CPUs asked for.
* BACKEND_REJECTED: the engine refused a replica (its host port or name is taken).
* PROGRESS_DEADLINE_EXCEEDED: no replica of the revision became ready within the
  spec's ``progress_deadline`` since the rollout started or last progressed; or the
  call ran out of time before that (its deadline, ALPHASWARM_CP_CALL_TIMEOUT_SECONDS).

A record left IN_PROGRESS by a controller that died mid-rollout is reported FAILED
(PROGRESS_DEADLINE_EXCEEDED) once its progress deadline has passed: nobody is
rolling it any more.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from alphaswarm_core.providers.errors import InfrastructureProviderError
from alphaswarm_core.providers.models import Condition, Rollout, RolloutState
from alphaswarm_core.providers.reasons import ErrorReason

#: Exits in a row, without becoming ready, that make a new replica a crash loop.
DEFAULT_CRASH_LOOP_EXITS = 3
#: Seconds a mutating call keeps, before its deadline, to put back the replica being
#: replaced, record the outcome and (with auto_rollback) start rolling back.
CALL_RESERVE = 5.0
#: Longest message kept in a record (the engine's own texts can be long).
MAX_MESSAGE = 500

#: Engine refusals (``metadata["cause"]``) that make a rollout fail with a reason,
#: rather than a call fail: the revision is recorded, its replicas cannot run.
_REFUSALS = {
    "IMAGE_NOT_FOUND": ErrorReason.IMAGE_PULL_FAILED,
    "CONTAINER_START_FAILED": ErrorReason.IMAGE_PULL_FAILED,
    "CPU_EXCEEDS_ENGINE": ErrorReason.UNSCHEDULABLE,
    "PORT_IN_USE": ErrorReason.BACKEND_REJECTED,
    "NAME_IN_USE": ErrorReason.BACKEND_REJECTED,
}


class ReplicaFailed(Exception):
    """A replica of the revision being rolled out will not become ready."""

    def __init__(self, reason: ErrorReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message[:MAX_MESSAGE]


def refusal(exc: InfrastructureProviderError) -> ReplicaFailed | None:
    """The rollout failure an engine refusal stands for (None: a failure of the call)."""
    reason = _REFUSALS.get(str(exc.metadata.get("cause", "")))
    return None if reason is None else ReplicaFailed(reason, exc.message)


@dataclass
class RolloutClock:
    """The time a rollout may still wait: ``progress_deadline`` seconds since it started
    or a replica last became ready, and never past ``call_deadline`` (monotonic)."""

    progress_deadline: float
    call_deadline: float | None = None
    last_progress: float = field(default_factory=time.monotonic)

    def progressed(self) -> None:
        self.last_progress = time.monotonic()

    def left(self) -> float:
        by_progress = self.last_progress + self.progress_deadline
        if self.call_deadline is not None:
            by_progress = min(by_progress, self.call_deadline - CALL_RESERVE)
        return by_progress - time.monotonic()

    def expired(self, what: str) -> ReplicaFailed:
        """The failure of a wait that ran out of time, naming which bound ended it."""
        call_first = (
            self.call_deadline is not None
            and self.call_deadline - CALL_RESERVE < self.last_progress + self.progress_deadline
        )
        bound = (
            "the call's deadline (the caller's, or ALPHASWARM_CP_CALL_TIMEOUT_SECONDS) came "
            "first; give the call more time"
            if call_first
            else f"its progress deadline of {self.progress_deadline:g}s"
        )
        return ReplicaFailed(
            ErrorReason.PROGRESS_DEADLINE_EXCEEDED, f"{what} was not ready within {bound}"
        )


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    """The rollout of one revision, as stored in the definition."""

    revision: int
    state: RolloutState
    started_at: datetime
    progress_deadline: float
    reason: str = ""
    message: str = ""
    finished_at: datetime | None = None
    digest: str = ""
    """The config-hash of this revision's replicas ("" when it has none): a replica
    carrying it runs this revision whatever its revision label says (a rollback onto
    what runs already replaces nothing)."""

    @property
    def done(self) -> bool:
        return self.state is not RolloutState.IN_PROGRESS

    @classmethod
    def begun(cls, revision: int, progress_deadline: float, digest: str) -> RolloutRecord:
        return cls(revision, RolloutState.IN_PROGRESS, _now(), progress_deadline, digest=digest)

    def succeeded(self) -> RolloutRecord:
        return _finish(self, RolloutState.SUCCEEDED, "", "")

    def failed(self, failure: ReplicaFailed) -> RolloutRecord:
        return _finish(self, RolloutState.FAILED, failure.reason.value, failure.message)

    def seen_at(self, now: datetime) -> Rollout:
        """The rollout as a reader reports it at ``now``: one left IN_PROGRESS beyond its
        deadline (its controller went away) is FAILED."""
        if self.state is RolloutState.IN_PROGRESS:
            due = self.started_at + timedelta(seconds=self.progress_deadline + CALL_RESERVE)
            if now > due:
                return Rollout(
                    RolloutState.FAILED,
                    self.started_at,
                    ErrorReason.PROGRESS_DEADLINE_EXCEEDED.value,
                    "the rollout was not finished within its progress deadline (the call "
                    "making it ended early); start the service again to retry, or roll back",
                    due,
                )
        return Rollout(self.state, self.started_at, self.reason, self.message, self.finished_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "state": self.state.value,
            "started_at": self.started_at.isoformat(),
            "progress_deadline": self.progress_deadline,
            "reason": self.reason,
            "message": self.message,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "digest": self.digest,
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> RolloutRecord:
        finished = body.get("finished_at")
        return cls(
            revision=int(body["revision"]),
            state=RolloutState(str(body["state"])),
            started_at=datetime.fromisoformat(str(body["started_at"])),
            progress_deadline=float(body["progress_deadline"]),
            reason=str(body.get("reason", "")),
            message=str(body.get("message", "")),
            finished_at=datetime.fromisoformat(str(finished)) if finished else None,
            digest=str(body.get("digest", "")),
        )


def _finish(record: RolloutRecord, state: RolloutState, reason: str, message: str) -> RolloutRecord:
    return RolloutRecord(
        record.revision,
        state,
        record.started_at,
        record.progress_deadline,
        reason,
        message[:MAX_MESSAGE],
        _now(),
        record.digest,
    )


def _now() -> datetime:
    return datetime.now(UTC)


def conditions(rollout: Rollout, available: bool, unavailable_why: str) -> tuple[Condition, ...]:
    """``Available`` (every replica ready or completed) and ``Progressing`` (the rollout
    goes on or succeeded; False with the failure's reason), Kubernetes' way. Transition
    times are the rollout's: the engine keeps no history of availability."""
    when = rollout.finished_at or rollout.started_at
    if rollout.state is RolloutState.FAILED:
        progressing = Condition("Progressing", False, when, rollout.reason, rollout.message)
    elif rollout.state is RolloutState.SUCCEEDED:
        progressing = Condition("Progressing", True, when, "NewRevisionAvailable")
    else:
        progressing = Condition("Progressing", True, when, "RolloutInProgress")
    if available:
        availability = Condition("Available", True, when, "MinimumReplicasAvailable")
    else:
        availability = Condition(
            "Available", False, when, "MinimumReplicasUnavailable", unavailable_why
        )
    return (availability, progressing)
