"""How the local provider carries out rollouts: a task per service in rollout, its steps.

A change records the new revision and returns; ``ensure_worker`` then gives the
service a task that looks at its replicas every TICK under the service's lock (a
change never waits for the rollout it supersedes, only for the step under way),
replaces the next slot once every replica of the new revision is ready, and ends
the rollout as rollout.py judges it: SUCCEEDED, or FAILED (the replicas of the
failed revision that are not ready go back to what their slot ran before; with
``auto_rollback``, a rollback to the last good revision follows).

``RolloutDriver`` is a base class of the provider (provider.py), which supplies the
replica and store operations declared at the top of the class.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from alphaswarm_core.providers.conditions import Verdict
from alphaswarm_core.providers.errors import InvalidSpecError, RevisionNotFound
from alphaswarm_core.providers.models import DeploymentSpec, Revision, Rollout, RolloutState

from . import rollout as rollouts
from .launch import LaunchPlan
from .replica import Replica
from .rollout import Progress
from .settings import LocalSettings
from .store import Desired, StateStore

log = logging.getLogger(__name__)

Key = tuple[str, str]


@dataclass(eq=False, slots=True)
class Deployment:
    """One service of the provider: what is desired, its launch plan, its replicas."""

    desired: Desired
    plan: LaunchPlan
    replicas: dict[int, Replica] = field(default_factory=dict)
    note: str = ""
    """Why it was not started (at open), shown in status."""
    worker: asyncio.Task[None] | None = None
    """The task rolling out ``desired.revision`` while its rollout is in progress."""
    available: tuple[bool, datetime] | None = None
    """Whether every desired replica was ready when last looked at, and since when."""


def begun(revision: int) -> Rollout:
    return Rollout(
        RolloutState.IN_PROGRESS,
        datetime.now(UTC),
        message=f"replacing replicas with revision {revision}, one at a time",
    )


def revision_of(
    desired: Desired, cause: str, *, rollback_of: int = 0, automatic: bool = False
) -> Revision:
    """The revision ``desired`` makes (its spec without replicas, its config)."""
    return Revision(
        desired.revision,
        replace(desired.spec, replicas=0),
        dict(desired.config),
        str(desired.config_version),
        datetime.now(UTC),
        cause,
        rollback_of,
        automatic,
    )


class RolloutDriver:
    """The rollout side of the local provider (mixed into ``LocalProvider``)."""

    _deployments: dict[Key, Deployment]
    _store: StateStore | None
    _tasks: set[asyncio.Task[object]]

    @property
    def settings(self) -> LocalSettings:
        raise NotImplementedError

    def _serialised(self, key: Key) -> contextlib.AbstractAsyncContextManager[None]:
        raise NotImplementedError

    def _task_done(self, task: asyncio.Task[object]) -> None:
        raise NotImplementedError

    def _checked_plan(self, spec: DeploymentSpec, config: Mapping[str, str]) -> LaunchPlan:
        raise NotImplementedError

    async def _add(
        self, deployment: Deployment, ordinal: int, revision: int, plan: LaunchPlan
    ) -> Replica:
        raise NotImplementedError

    async def _remove(self, deployment: Deployment, ordinal: int, *, forget: bool = False) -> None:
        raise NotImplementedError

    async def _save(
        self,
        deployment: Deployment,
        desired: Desired,
        *,
        expected: int = 0,
        revision: Revision | None = None,
    ) -> None:
        raise NotImplementedError

    async def _converge(
        self, deployment: Deployment, *, recovered: Mapping[int, int] | None = None
    ) -> None:
        raise NotImplementedError

    async def _retag(self, deployment: Deployment) -> None:
        """Replicas that already run exactly what the desired revision runs are of it:
        nothing to restart (a rollback to what runs, a spec changed and changed back)."""
        assert self._store is not None
        desired = deployment.desired
        for ordinal, replica in deployment.replicas.items():
            if (
                replica.revision != desired.revision
                and replica.plan.fingerprint == deployment.plan.fingerprint
            ):
                replica.revision = desired.revision
                await self._store.set_slot(desired.key, ordinal, desired.revision)

    async def _fresh_slot(self, deployment: Deployment) -> tuple[int, LaunchPlan]:
        """What a new slot runs: the desired revision, or after a failed rollout the last
        good one (what the other replicas run), as long as it can still run."""
        desired = deployment.desired
        good = desired.good_revision
        failed = desired.rollout is not None and desired.rollout.state is RolloutState.FAILED
        if failed and good and good != desired.revision:
            plan = await self._revision_plan(deployment, good)
            if plan is not None:
                return good, plan
        return desired.revision, deployment.plan

    async def _revision_plan(self, deployment: Deployment, number: int) -> LaunchPlan | None:
        """The checked launch plan of revision ``number``; None when it left the history or
        cannot run any more (the policy changed)."""
        desired = deployment.desired
        if number == desired.revision:
            return deployment.plan
        assert self._store is not None
        revision = await self._store.revision(desired.key, number)
        if revision is None:
            return None
        try:
            return self._checked_plan(revision.spec, revision.config)
        except InvalidSpecError as exc:
            log.warning(
                "%s/%s: revision %d cannot run any more: %s", *desired.key, number, exc.message
            )
            return None

    def _ensure_worker(self, deployment: Deployment) -> None:
        """Under the service's lock: a rollout in progress has its task."""
        rollout = deployment.desired.rollout
        if deployment.worker is not None or rollout is None or rollout.done:
            return
        namespace, service_id = deployment.desired.key
        task = asyncio.create_task(
            self._roll(deployment), name=f"alphaswarm-local:rollout:{namespace}/{service_id}"
        )
        deployment.worker = task
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    async def _roll(self, deployment: Deployment) -> None:
        """Step the rollout every TICK until it ends (bounded: it fails at the progress
        deadline at the latest), taking the service's lock for each step only, so that a
        change (a rollback, a fix) never waits for the rollout it supersedes."""
        key = deployment.desired.key
        progress: Progress | None = None
        try:
            while True:
                async with self._serialised(key):
                    if self._deployments.get(key) is not deployment:
                        return  # deleted
                    progress, finished = await self._rollout_step(deployment, progress)
                    if finished:
                        deployment.worker = None
                        return
                await asyncio.sleep(rollouts.TICK)
        except Exception:
            log.exception("%s/%s: the rollout task failed", *key)
        finally:
            if deployment.worker is asyncio.current_task():
                deployment.worker = None

    async def _rollout_step(
        self, deployment: Deployment, progress: Progress | None
    ) -> tuple[Progress, bool]:
        """One look at the rollout: fail it, finish it, or replace the next slot once every
        replica of the new revision is ready. True once it has ended."""
        desired = deployment.desired
        rollout = desired.rollout
        now = time.monotonic()
        if rollout is None or rollout.done:
            return progress or Progress(desired.revision, datetime.now(UTC), now), True
        if progress is None or not progress.matches(desired.revision, rollout):
            progress = Progress(desired.revision, rollout.started_at, now)
        await self._retag(deployment)
        target = desired.target
        fresh = {o: r for o, r in deployment.replicas.items() if r.revision == desired.revision}
        ready = sum(1 for r in fresh.values() if r.ready)
        progress.saw_ready(ready, now)
        verdict = rollouts.failure(desired.revision, fresh, self.settings.rollout_exits)
        deadline = desired.spec.progress_deadline_seconds
        if verdict is None and progress.stalled(now, deadline):
            verdict = rollouts.deadline_exceeded(desired.revision, deadline, ready, target)
        if verdict is not None:
            await self._fail(deployment, verdict)
            return progress, False  # an automatic rollback may have begun another one
        if ready == len(fresh) == len(deployment.replicas) == target:
            await self._succeed(deployment)
            return progress, True
        if ready == len(fresh):
            outdated = sorted(
                o for o, r in deployment.replicas.items() if r.revision != desired.revision
            )
            if outdated:
                await self._replace(deployment, outdated[0])
                progress.moved(time.monotonic())
        return progress, False

    async def _replace(self, deployment: Deployment, ordinal: int) -> None:
        """Stop the slot's old replica, then start one of the desired revision in it."""
        old = deployment.replicas[ordinal]
        await self._remove(deployment, ordinal)
        desired = deployment.desired
        new = await self._add(deployment, ordinal, desired.revision, deployment.plan)
        # A replica that never got ready (a rollout superseded mid-way) is no place to go
        # back to: the slot keeps what it ran before that.
        fallback = old.previous if old.previous is not None and not old.ready else None
        new.previous = fallback or (old.revision, old.plan)

    async def _succeed(self, deployment: Deployment) -> None:
        desired = deployment.desired
        assert desired.rollout is not None
        target = desired.target
        done = Rollout(
            RolloutState.SUCCEEDED,
            desired.rollout.started_at,
            message=f"{target} replica(s) of revision {desired.revision} ready",
            finished_at=datetime.now(UTC),
        )
        good = desired.revision if target else desired.good_revision  # none ran: unproven
        await self._save(deployment, desired.changed(rollout=done, good_revision=good))
        for replica in deployment.replicas.values():
            replica.previous = None
        log.info("%s/%s: rollout of revision %d succeeded", *desired.key, desired.revision)

    async def _fail(self, deployment: Deployment, verdict: Verdict) -> None:
        """Replace nothing more; the replicas of the failed revision that are not ready go
        back to what their slot ran before (the last good revision for a new slot)."""
        desired = deployment.desired
        assert desired.rollout is not None
        good = desired.good_revision
        reverted: list[int] = []
        for ordinal in sorted(deployment.replicas):
            replica = deployment.replicas[ordinal]
            if replica.revision != desired.revision or replica.ready:
                continue
            back = replica.previous
            if back is None and good and good != desired.revision:
                plan = await self._revision_plan(deployment, good)
                back = None if plan is None else (good, plan)
            if back is None:
                continue
            await self._remove(deployment, ordinal)
            await self._add(deployment, ordinal, *back)
            reverted.append(ordinal)
        message = f"{verdict.message}; no further replica replaced"
        if reverted:
            slots = ", ".join(str(o) for o in reverted)
            message += f"; replica(s) {slots} back on the revision they ran before"
        failed = Rollout(
            RolloutState.FAILED,
            desired.rollout.started_at,
            verdict.reason.value,
            message,
            datetime.now(UTC),
        )
        await self._save(deployment, desired.changed(rollout=failed))
        log.warning(
            "%s/%s: rollout of revision %d failed: %s", *desired.key, desired.revision, message
        )
        if desired.spec.auto_rollback:
            await self._auto_rollback(deployment, verdict)

    async def _auto_rollback(self, deployment: Deployment, verdict: Verdict) -> None:
        desired = deployment.desired
        assert self._store is not None and desired.rollout is not None
        failed = await self._store.revision(desired.key, desired.revision)
        good = desired.good_revision
        if failed is not None and failed.automatic:
            why = "no automatic rollback: this revision is an automatic rollback itself"
        elif not good or good == desired.revision:
            why = "no automatic rollback: no earlier revision has succeeded"
        else:
            cause = (
                f"automatic rollback: the rollout of revision {desired.revision} failed "
                f"({verdict.reason.value})"
            )
            try:
                await self._restore(deployment, good, cause=cause, automatic=True)
                return
            except (RevisionNotFound, InvalidSpecError) as exc:
                why = f"no automatic rollback to revision {good}: {exc.message}"
        rollout = replace(desired.rollout, message=f"{desired.rollout.message}; {why}")
        await self._save(deployment, desired.changed(rollout=rollout))

    async def _restore(
        self,
        deployment: Deployment,
        number: int,
        *,
        cause: str,
        expected: int = 0,
        automatic: bool = False,
    ) -> None:
        """A new revision with revision ``number``'s spec and config (the replica count and
        the rollout policy stay), rolled out like any change."""
        current = deployment.desired
        assert self._store is not None
        target = await self._store.revision(current.key, number)
        if target is None:
            raise RevisionNotFound(current.spec.service_id, current.spec.namespace, number)
        spec = replace(
            target.spec,
            replicas=current.replicas,
            progress_deadline_seconds=current.spec.progress_deadline_seconds,
            auto_rollback=current.spec.auto_rollback,
        )
        config = dict(target.config)
        plan = self._checked_plan(spec, config)
        version = current.config_version + (config != dict(current.config))
        revision = current.revision + 1
        updated = current.changed(
            spec=spec,
            config=config,
            config_version=version,
            revision=revision,
            rollout=begun(revision),
        )
        record = revision_of(updated, cause, rollback_of=number, automatic=automatic)
        await self._save(deployment, updated, expected=expected, revision=record)
        deployment.plan = plan
        await self._converge(deployment)
