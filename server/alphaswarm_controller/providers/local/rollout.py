"""How a rollout of the local provider is judged: progress, failure, conditions.

A rollout replaces the replicas of a service with ones of its desired revision,
one slot at a time (stop the old process, start the new one, wait until it is
ready, next slot), so that replicas which bind a fixed port never run twice. It
SUCCEEDS once every desired slot runs the desired revision and is ready. It
FAILS when a replica of the new revision exits ``crash_loop_exits`` times in a
row, each time after less than ``stable_after`` seconds (CRASH_LOOP), when its
environment is too large to be handed to a process (CONFIG_UNREADABLE), or when
no slot got replaced and no replica of the new revision became ready for the
spec's ``progress_deadline_seconds`` (PROGRESS_DEADLINE_EXCEEDED). A failed
rollout replaces nothing more; the replicas of the new revision that are not
ready go back to what their slot ran before, so the old replicas keep serving.
The provider (provider.py) acts on these verdicts; nothing here touches a process.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from alphaswarm_core.providers.conditions import Verdict
from alphaswarm_core.providers.models import Condition, Rollout, RolloutState
from alphaswarm_core.providers.reasons import ErrorReason

from .replica import Replica

TICK = 0.1
"""How often a rollout in progress looks at its replicas (in memory: no system call)."""

AVAILABLE = "Available"
PROGRESSING = "Progressing"


@dataclass(slots=True)
class Progress:
    """When the rollout of one revision last moved forward (monotonic clock)."""

    revision: int
    started: datetime
    since: float
    ready: int = 0
    """Replicas of the revision seen ready at once, at most."""

    def matches(self, revision: int, rollout: Rollout) -> bool:
        return (self.revision, self.started) == (revision, rollout.started_at)

    def moved(self, now: float) -> None:
        self.since = now

    def saw_ready(self, ready: int, now: float) -> None:
        if ready > self.ready:
            self.ready = ready
            self.since = now

    def stalled(self, now: float, deadline: float) -> bool:
        return now - self.since > deadline


def failure(revision: int, replicas: Mapping[int, Replica], exits: int) -> Verdict | None:
    """Why the rollout of ``revision`` fails now, judging its replicas; None while it may
    still succeed."""
    for ordinal, replica in sorted(replicas.items()):
        if replica.revision != revision:
            continue
        if replica.start_errno == errno.E2BIG:  # retrying cannot help
            return Verdict(
                ErrorReason.CONFIG_UNREADABLE,
                f"replica {ordinal} of revision {revision} cannot start: its environment "
                "(spec.env and config) is more than this system hands to a process (E2BIG)",
            )
        if replica.exits_in_a_row >= exits:
            return Verdict(
                ErrorReason.CRASH_LOOP,
                f"replica {ordinal} of revision {revision} exited {replica.exits_in_a_row} "
                f"times in a row (last: {replica.last_failure})",
            )
    return None


def deadline_exceeded(revision: int, deadline: float, ready: int, target: int) -> Verdict:
    return Verdict(
        ErrorReason.PROGRESS_DEADLINE_EXCEEDED,
        f"no progress for {deadline:g} s (spec.progress_deadline): {ready}/{target} "
        f"replicas of revision {revision} ready",
    )


def conditions(
    rollout: Rollout | None, available: tuple[bool, datetime], ready: int, target: int
) -> tuple[Condition, ...]:
    """``Available`` (every desired replica is ready) and ``Progressing`` (the rollout of
    the desired revision goes on or has ended well), in the Kubernetes style."""
    ok, since = available
    found = [
        Condition(
            AVAILABLE,
            ok,
            since,
            "MinimumReplicasAvailable" if ok else "MinimumReplicasUnavailable",
            f"{ready}/{target} replicas ready",
        )
    ]
    if rollout is not None:
        when = rollout.finished_at or rollout.started_at
        if rollout.state is RolloutState.IN_PROGRESS:
            found.append(Condition(PROGRESSING, True, when, "ReplicasUpdating", rollout.message))
        elif rollout.state is RolloutState.SUCCEEDED:
            found.append(Condition(PROGRESSING, True, when, "NewRevisionAvailable"))
        else:
            found.append(Condition(PROGRESSING, False, when, rollout.reason, rollout.message))
    return tuple(found)
