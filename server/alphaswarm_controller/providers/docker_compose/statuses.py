"""A service's status from what the engine holds: its definition and its containers.

Readiness is the containers' state and health; the revision is the definition's;
the observed revision is what the replicas run (their revision label, or the
rollout's config-hash, which a replica left in place by a rollback onto what it
runs already carries); the rollout is the definition's record, read at the time
of the status (``rollouts.RolloutRecord.seen_at``).

One-shot services: a replica that exited 0 under restart policy ``no`` or
``on-failure`` has *completed* (the engine will not restart it, by design). It is
not ready (it serves nothing) and not failing: a service whose replicas all
completed is STOPPED ("completed"), and Available, and its rollout succeeded.
"""

from __future__ import annotations

from datetime import UTC, datetime

from alphaswarm_core.providers.models import (
    DeploymentState,
    DeploymentStatus,
    InstanceStatus,
    RolloutState,
)

from . import compose
from .compose import ContainerRef
from .definitions import Definition
from .options import Options
from .revisions import spec_of
from .rollouts import conditions

#: Restart policies under which an exit with code 0 ends a replica for good.
ONE_SHOT_POLICIES = ("no", "on-failure")


def completed(ref: ContainerRef, opts: Options) -> bool:
    return opts.restart in ONE_SHOT_POLICIES and ref.exit_code == 0


def runs_revision(ref: ContainerRef, definition: Definition | None) -> int:
    """The revision replica ``ref`` runs."""
    rollout = definition.rollout if definition else None
    if rollout is not None and rollout.digest and ref.config_hash == rollout.digest:
        return rollout.revision
    return ref.revision


def observed_revision(definition: Definition | None, refs: list[ContainerRef]) -> int:
    """What the replicas run: the oldest revision any of them runs while they differ;
    without replicas, the last revision that rolled out."""
    if definition is None:
        return 0  # started by Docker Compose: no revision until its first change
    if refs:
        return min(runs_revision(ref, definition) for ref in refs)
    return definition.last_good if definition.rollout else definition.revision


def service_status(
    alias: str,
    project: str,
    service: str,
    definition: Definition | None,
    refs: list[ContainerRef],
    *,
    opts: Options,
) -> DeploymentStatus:
    desired = len(refs)
    ready = sum(1 for ref in refs if ref.ready)
    done = sum(1 for ref in refs if completed(ref, opts))
    failing = [
        ref
        for ref in refs
        if ref.state in ("exited", "dead", "restarting") and not completed(ref, opts)
    ]
    unhealthy = [ref for ref in refs if ref.health == "unhealthy"]
    finished = f", {done} completed" if done else ""
    if desired == 0:
        state, message = DeploymentState.STOPPED, "no replicas"
    elif done == desired:
        state, message = DeploymentState.STOPPED, f"{done}/{desired} replicas completed (exit 0)"
    elif ready + done == desired:
        state, message = DeploymentState.RUNNING, f"{ready}/{desired} replicas ready{finished}"
    elif failing or unhealthy:
        state = DeploymentState.DEGRADED
        worst = (failing or unhealthy)[0]
        message = f"{ready}/{desired} ready; {worst.name}: {worst.status_text or worst.state}"
    else:
        state, message = DeploymentState.PENDING, f"{ready}/{desired} replicas ready{finished}"
    if definition is None and refs:
        message += " (started by Docker Compose)"
    record = definition.rollout if definition else None
    rollout = record.seen_at(datetime.now(UTC)) if record else None
    if rollout is not None and record is not None:
        if rollout.state is RolloutState.IN_PROGRESS:
            message += f"; rolling out revision {record.revision}"
        elif rollout.state is RolloutState.FAILED:
            message += f"; rollout of revision {record.revision} failed ({rollout.reason})"
            # Nothing of an earlier revision serves: a replica of the failed one that is
            # up between two crashes does not make the service RUNNING.
            serving = any(
                ref.ready and runs_revision(ref, definition) != record.revision for ref in refs
            )
            if desired and not serving and not done:
                state = DeploymentState.FAILED
    available = ready + done == desired
    instances = tuple(
        InstanceStatus(
            instance_id=ref.id[:12],
            state=ref.state,
            ready=ref.ready,
            message=f"{ref.name}: {'completed' if completed(ref, opts) else ref.status_text}",
            # The list API's creation time: a restart by the restart policy keeps it.
            started_at=datetime.fromtimestamp(ref.created, UTC) if ref.created else None,
        )
        for ref in refs
    )
    return DeploymentStatus(
        service_id=service,
        namespace=project,
        provider=alias,
        state=state,
        desired_replicas=desired,
        ready_replicas=ready,
        message=message,
        instances=instances,
        image=definition.image if definition else (refs[0].image if refs else ""),
        labels=dict(definition.labels) if definition else compose.user_labels(refs[0].labels),
        spec=spec_of(definition, replicas=desired) if definition else None,
        revision=definition.revision if definition else 0,
        observed_revision=observed_revision(definition, refs),
        rollout=rollout,
        conditions=conditions(rollout, available, message) if rollout else (),
    )
