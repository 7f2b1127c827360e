"""How the rollout of an ACI service's newest revision is going (pure, no I/O).

Inputs: the revision record (``revision_record``: the newest number, and the rollout as
the call that rolled it left it), each active replica's ``alphaswarm-revision`` tag and
its container group as GET returns it (provisioning state plus the instance view of the
group and of each container). What ACI reports, and what it means here:

* image pull failure -> IMAGE_PULL_FAILED: a container's instance view carries the
  event ``Failed`` with "Failed to pull image ..." (type Warning), followed by
  ``BackOff`` "Back-off pulling image ...", and stays ``Waiting``; the group's
  provisioning state ends ``Failed`` ("Troubleshoot common issues in Azure Container
  Instances", learn.microsoft.com/azure/container-instances/
  container-instances-troubleshooting, "Unable to pull image"). A current state whose
  detail is ``ErrImagePull`` / ``ImagePullBackOff`` says the same.
* a container that keeps exiting -> CRASH_LOOP: under the restart policy ``Always`` (or
  ``OnFailure`` after a failure) ACI restarts it and counts ``restartCount`` in its
  instance view (same page, "Container continually exits and restarts"); at
  ``CRASH_LOOP_RESTARTS`` restarts without ever running through, the rollout fails.
  Under ``Never`` (or ``OnFailure``), a container ``Terminated`` with a non-zero exit
  code is not restarted at all: it fails at once.
* quota -> BACKEND_QUOTA_EXCEEDED: a group whose provisioning failed with a quota message
  (the create itself refused with a quota code is the call's ``BackendQuotaExceeded``,
  which the roll records the same way).
* any other ``Failed`` provisioning -> BACKEND_REJECTED, with ACI's detail.
* no replica of the revision running within the spec's ``progress_deadline`` of the
  rollout's start -> PROGRESS_DEADLINE_EXCEEDED.

SUCCEEDED: every active replica carries the newest revision and runs (provisioning
``Succeeded``, group and containers ``Running``). A rollout the call recorded as FAILED
stays FAILED (its replicas were put back, so the groups no longer show why).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from azure.mgmt.containerinstance import models as aci_models

from alphaswarm_core.providers.conditions import Verdict, rollout_conditions
from alphaswarm_core.providers.models import Condition, Rollout, RolloutState
from alphaswarm_core.providers.reasons import ErrorReason

from .aci import TAG_REVISION, Replica
from .revision_record import MAX_MESSAGE, ServiceRecord
from .status import running_state

CRASH_LOOP_RESTARTS = 3
PULL_DETAILS = frozenset({"errimagepull", "imagepullbackoff"})
RESTARTING_POLICIES = frozenset({"always", "onfailure"})


@dataclass(frozen=True, slots=True)
class Judgement:
    rollout: Rollout | None
    observed: int
    conditions: tuple[Condition, ...]


def _events(container: aci_models.Container) -> list[aci_models.Event]:
    view = container.instance_view
    return list(view.events or []) if view is not None else []


def _pull_failure(container: aci_models.Container) -> str | None:
    view = container.instance_view
    current = view.current_state if view is not None else None
    detail = ((current.detail_status if current else None) or "").lower()
    for event in _events(container):
        text = str(event.message or "")
        if str(event.name or "") == "Failed" and "pull" in text.lower():
            return text
    if detail in PULL_DETAILS:
        return f"{container.name}: {current.detail_status if current else detail}"
    return None


def _crash(container: aci_models.Container, policy: str) -> str | None:
    view = container.instance_view
    if view is None:
        return None
    current = view.current_state
    state = ((current.state if current else None) or "").lower()
    exit_code = current.exit_code if current is not None else None
    restarts = view.restart_count or 0
    if restarts >= CRASH_LOOP_RESTARTS:
        return (
            f"container {container.name} restarted {restarts} times "
            f"(last exit code {exit_code if exit_code is not None else 'unknown'})"
        )
    stays_down = policy not in RESTARTING_POLICIES or policy == "onfailure"
    if state == "terminated" and exit_code not in (None, 0) and stays_down:
        return f"container {container.name} exited with code {exit_code} and is not restarted"
    return None


def group_failure(group: aci_models.ContainerGroup | None) -> Verdict | None:
    """Why one replica of a new revision will not run, or None while it may still."""
    if group is None:
        return None  # being recreated: the roll or the next read decides
    for container in group.containers or []:
        pulled = _pull_failure(container)
        if pulled is not None:
            return Verdict(ErrorReason.IMAGE_PULL_FAILED, pulled[:MAX_MESSAGE])
    policy = (group.restart_policy or "Always").lower()
    for container in group.containers or []:
        crashed = _crash(container, policy)
        if crashed is not None:
            return Verdict(ErrorReason.CRASH_LOOP, crashed)
    if (group.provisioning_state or "").lower() == "failed":
        _, detail = running_state(group)
        reason = (
            ErrorReason.BACKEND_QUOTA_EXCEEDED
            if "quota" in detail.lower()
            else ErrorReason.BACKEND_REJECTED
        )
        return Verdict(reason, f"provisioning failed: {detail}"[:MAX_MESSAGE])
    return None


def revision_of(replica: Replica) -> int:
    """The revision a replica's tag says it runs (0: none)."""
    value = replica.tags.get(TAG_REVISION, "")
    return int(value) if value.isdigit() and len(value) < 10 else 0


def _started(group: aci_models.ContainerGroup | None) -> datetime | None:
    times: list[datetime] = []
    for container in group.containers or [] if group is not None else []:
        view = container.instance_view
        current = view.current_state if view is not None else None
        if current is not None and isinstance(current.start_time, datetime):
            times.append(current.start_time)
    return max(times) if times else None


def judge(
    record: ServiceRecord,
    replicas: Sequence[Replica],
    views: Mapping[str, aci_models.ContainerGroup | None],
    *,
    ready: int,
    now: datetime | None = None,
) -> Judgement:
    """The rollout of ``record``'s newest revision over the active ``replicas`` (``views``:
    their groups as GET returned them; ``ready`` of them run)."""
    now = now or datetime.now(UTC)
    desired = record.number
    active = [r for r in replicas if not r.stopped]
    numbers = [revision_of(r) for r in active]
    observed = min(numbers) if numbers else desired
    if desired == 0:
        return Judgement(None, observed, ())
    rollout = _rollout(record, active, views, ready, now)
    return Judgement(rollout, observed, rollout_conditions(rollout, ready, len(active)))


def _rollout(
    record: ServiceRecord,
    active: Sequence[Replica],
    views: Mapping[str, aci_models.ContainerGroup | None],
    ready: int,
    now: datetime,
) -> Rollout:
    desired = record.number
    kept = record.rollout if record.rollout and record.rollout.revision == desired else None
    current = record.current
    started = kept.started_at if kept else (current.created_at if current else now)
    if kept is not None and kept.state is not RolloutState.IN_PROGRESS:
        return Rollout(kept.state, started, kept.reason, kept.message, kept.finished_at)
    new = [r for r in active if revision_of(r) == desired]
    for replica in new:
        found = group_failure(views.get(replica.name))
        if found is not None:
            return Rollout(
                RolloutState.FAILED,
                started,
                found.reason.value,
                f"revision {desired}, replica {replica.name}: {found.message}",
                now,
            )
    if len(new) == len(active) and ready == len(active):
        times = [t for r in active if (t := _started(views.get(r.name))) is not None]
        finished = max([started, *times])
        return Rollout(RolloutState.SUCCEEDED, started, finished_at=min(finished, now))
    deadline = record.progress_deadline_seconds
    if now - started > timedelta(seconds=deadline):
        return Rollout(
            RolloutState.FAILED,
            started,
            ErrorReason.PROGRESS_DEADLINE_EXCEEDED.value,
            f"revision {desired} was not running on every replica within {deadline:g}s "
            f"(spec.progress_deadline; {len(new)}/{len(active)} replicas carry it, {ready} "
            "run); start the service again to continue, or roll back",
            started + timedelta(seconds=deadline),
        )
    return Rollout(
        RolloutState.IN_PROGRESS,
        started,
        message=f"{len(new)}/{len(active)} replicas on revision {desired}, {ready} running",
    )
