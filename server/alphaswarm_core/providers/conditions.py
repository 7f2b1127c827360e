"""Rollout outcomes shared by the providers: why a rollout failed (``Verdict``), and the
Kubernetes-style conditions of a status, from its rollout and how many replicas serve.

Providers whose backend reports no conditions of its own (ECS, Cloud Run, ACI) derive
them here, so that ``Available`` and ``Progressing`` mean the same on every one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .models import Condition, Rollout, RolloutState
from .reasons import ErrorReason

AVAILABLE = "Available"
PROGRESSING = "Progressing"


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a rollout failed: a reason from the ErrorReason catalogue, and what happened."""

    reason: ErrorReason
    message: str


def rollout_conditions(rollout: Rollout, serving: int, desired: int) -> tuple[Condition, ...]:
    """Available (enough replicas serve, whichever revision they run) and Progressing."""
    when = rollout.finished_at or rollout.started_at
    if rollout.state is RolloutState.FAILED:
        progressing = Condition(PROGRESSING, False, when, rollout.reason, rollout.message)
    elif rollout.state is RolloutState.SUCCEEDED:
        progressing = Condition(PROGRESSING, True, when, "NewRevisionAvailable")
    else:
        progressing = Condition(PROGRESSING, True, when, "RolloutInProgress", rollout.message)
    if serving >= desired:
        available = Condition(AVAILABLE, True, when, "MinimumReplicasAvailable")
    else:
        available = Condition(
            AVAILABLE, False, when, "MinimumReplicasUnavailable", f"{serving}/{desired} serving"
        )
    return (available, progressing)
