"""The ``local`` provider: every replica is an OS process on this machine.

Desired state lives in SQLite under ``$ALPHASWARM_CP_STATE_DIR/local`` (private
to the server: statedir.py); the processes are supervised by asyncio tasks of
this controller and run as the replica user (identity.py). Nothing outlives the
controller: on a graceful shutdown every replica's whole process tree is ended
(containment.py), on a crash the kernel kills the leaders (PR_SET_PDEATHSIG,
Linux) and the next ``open`` kills whatever is left before converging every
deployment back to its replicas, except those that keep killing the server
(crashloop.py). Replica output goes through pipes to size-bounded files that the
server alone writes (logfiles.py, logcapture.py) and StreamLogs reads
(logstream.py).

Every change of what runs is a revision, stored with the definition (store.py);
a change returns once it is recorded, and a rollout task per service replaces
the replicas one slot at a time and judges the rollout (rollout.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import platform
import shutil
import sqlite3
import sys
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from alphaswarm_core.call import current_change
from alphaswarm_core.providers.cadence import Cadence
from alphaswarm_core.providers.concurrency import BlockingRunner
from alphaswarm_core.providers.errors import (
    ConfigVersionConflict,
    DeploymentNotFoundError,
    FieldViolation,
    InfrastructureProviderUnavailable,
    InvalidSpecError,
    RevisionNotFound,
)
from alphaswarm_core.providers.models import (
    ConfigMapPatch,
    Definition,
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    LogEntry,
    LogQuery,
    MetricSample,
    ProviderHealth,
    ProviderKind,
    Revision,
    RolloutState,
    ServiceConfig,
    check_replicas,
    validate_service_ref,
)
from alphaswarm_core.providers.protocol import DEFAULT_NAMESPACE, InfrastructureProvider
from alphaswarm_core.providers.reasons import ErrorReason
from alphaswarm_core.providers.service_locks import ServiceLocks

from . import identity as identities_module
from . import launch, processes
from . import rollout as rollouts
from .containment import Containment
from .crashloop import CrashLoopGuard
from .identity import IdentityPolicy, ReplicaIdentity
from .launch import LaunchPlan, LaunchPolicy
from .logfiles import LogBook, LogLimits
from .logstream import LogReader, LogSelector
from .metrics import ProcessTreeSampler
from .proctable import libc
from .replica import Replica
from .rolling import Deployment, RolloutDriver, begun, revision_of
from .settings import STATE_DIR_ENV, LocalSettings
from .statedir import (
    InsecureStateDir,
    make_private_dir,
    open_private,
    secure_tree,
    touch_private,
)
from .store import Desired, StateStore

log = logging.getLogger(__name__)

T = TypeVar("T")
Key = tuple[str, str]


_PR_SET_DUMPABLE = 4


def _unwritable(settings: LocalSettings, exc: Exception) -> InfrastructureProviderUnavailable:
    why = getattr(exc, "strerror", None) or str(exc)
    if isinstance(exc, InsecureStateDir):
        return InfrastructureProviderUnavailable(
            f"local provider state directory {settings.state_dir} cannot be made private: "
            f"{why}; fix it or set {STATE_DIR_ENV} to a directory of the server's user",
            reason=ErrorReason.STATE_DIR_INSECURE,
            metadata={"state_dir": str(settings.state_dir), "env": STATE_DIR_ENV},
        )
    return InfrastructureProviderUnavailable(
        f"local provider state directory {settings.state_dir} is not writable: "
        f"{why}; set {STATE_DIR_ENV} to a writable directory",
        reason=ErrorReason.STATE_DIR_UNWRITABLE,
        metadata={"state_dir": str(settings.state_dir), "env": STATE_DIR_ENV},
    )


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []


class LocalProvider(RolloutDriver, InfrastructureProvider):
    """Replicas as OS processes; the embedded default provider."""

    provider_kind = ProviderKind.LOCAL
    provider_alias = "local"

    def __init__(
        self, *, env: Mapping[str, str] | None = None, runner: BlockingRunner | None = None
    ) -> None:
        super().__init__(env=env, runner=runner)
        self._settings: LocalSettings | None = None
        self._store: StateStore | None = None
        self._lock_fd: int | None = None
        self._deployments: dict[Key, Deployment] = {}
        self.service_locks = ServiceLocks()
        self._logbooks: dict[Key, LogBook] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._open_lock = asyncio.Lock()
        self._opened = False
        self._identities: IdentityPolicy | None = None
        self._uids: dict[str, int] = {}
        """Namespace -> its uid, with ALPHASWARM_LOCAL_UID_RANGE."""
        self._policies: dict[str, LaunchPolicy] = {}
        self._containment: Containment | None = None
        self._guard: CrashLoopGuard | None = None
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def settings(self) -> LocalSettings:
        if self._settings is None:
            self._settings = LocalSettings.from_env(self.env)
        return self._settings

    async def open(self) -> None:
        """Load desired state, kill replicas a previous run left, respawn every deployment.

        A state directory that cannot be used (unwritable, or locked by another
        controller) raises InfrastructureProviderUnavailable. It does not stop the
        server: the pool keeps no provider that did not open, so health reports the
        error and every call raises it until it is fixed.
        """
        await self._ensure_open()

    async def _ensure_open(self) -> None:
        if self._opened:
            return
        async with self._open_lock:
            if not self._opened:
                await self._do_open()
                self._opened = True

    async def _do_open(self) -> None:
        settings = self.settings
        identity = identities_module.policy(settings, self.env)
        store = StateStore(settings.database)
        try:
            self._lock_fd = await self.run_blocking(self._acquire_lock, settings)
            repaired = await self.run_blocking(secure_tree, settings.root)
            if repaired:
                log.warning("local provider: made the state directory private: %s", repaired)
            await store.open()
            containment = await self.run_blocking(
                Containment.create, settings.cgroup, str(settings.state_dir), identity.uids
            )
            uids = await store.namespace_uids()
        except BaseException as exc:
            await store.close()
            self._release_lock()
            if isinstance(exc, OSError | sqlite3.Error):
                raise _unwritable(settings, exc) from exc
            raise
        self._store = store
        self._identities = identity
        self._uids = uids
        self._containment = containment
        if identity.same_user and sys.platform == "linux":
            # Replicas share the server's uid: at least they cannot ptrace it or read its
            # memory and environment through /proc (they can still signal it; crashloop.py).
            libc().prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
        log.info(
            "local provider: replicas run as %s; process trees tracked by %s%s",
            identity.describe(),
            containment.mode,
            f" ({containment.why_not_cgroup})" if containment.mode == "session" else "",
        )
        try:
            await self._recover(settings, store, containment)
        except BaseException:
            await self.close()  # releases the lock too, so a later call can retry
            raise

    async def _recover(
        self, settings: LocalSettings, store: StateStore, containment: Containment
    ) -> None:
        """Kill what a previous run left behind, then bring every deployment back."""
        recorded = await self.run_blocking(processes.still_running, await store.recorded_pids())
        killed = await self.run_blocking(containment.kill_leftovers, recorded)
        if killed:
            log.warning(
                "killed %d replica process(es) left by a previous run: %s", len(killed), killed
            )
        await store.clear_pids()
        self._guard = CrashLoopGuard(store, settings)
        await self._guard.begin()
        stored = await store.load()
        # Before any replica runs (and writes its logs): nothing else touches the log tree.
        orphans = await self.run_blocking(self._orphan_logs, {desired.key for desired in stored})
        if orphans:
            log.warning("local provider: removed the logs of deleted deployments: %s", orphans)
        for desired in stored:
            await self._ensure_identity(desired.spec.namespace)
            deployment = Deployment(desired, self._plan(desired.spec, desired.config))
            self._deployments[desired.key] = deployment
            if not desired.target:
                continue
            try:  # the policy may have changed since it was stored
                deployment.plan = self._checked_plan(desired.spec, desired.config)
            except InvalidSpecError as exc:
                deployment.note = f"not started: {exc.message}"
                log.error("local provider: %s/%s %s", *desired.key, deployment.note)
                continue
            rollout = desired.rollout
            # A rollout in progress resumes, and a failed one stays failed: every slot
            # comes back with the revision it ran.
            slots = (
                await store.slots(desired.key)
                if rollout is not None and rollout.state is not RolloutState.SUCCEEDED
                else {}
            )
            await self._locked(
                desired.key, functools.partial(self._converge, deployment, recovered=slots)
            )
        if containment.mode == "session":
            self._sweeper = asyncio.create_task(
                self._sweep(containment), name="alphaswarm-local:sweep"
            )
        log.info(
            "local provider: %d deployment(s) from %s", len(self._deployments), settings.database
        )

    def _orphan_logs(self, known: set[Key]) -> list[str]:
        """Blocking. Log directories of no deployment (a delete the server did not finish)."""
        removed = []
        logs = self.settings.logs
        for namespace in _listdir(logs):
            for service_id in _listdir(logs / namespace):
                if (namespace, service_id) not in known:
                    shutil.rmtree(logs / namespace / service_id)
                    removed.append(f"{namespace}/{service_id}")
            with contextlib.suppress(OSError):  # only when empty
                (logs / namespace).rmdir()
        return removed

    async def _sweep(self, containment: Containment) -> None:
        """Without cgroups: find processes that escaped their replica, every few moments."""
        while True:
            await asyncio.sleep(self.settings.sweep_interval)
            if containment.active:
                try:
                    await self.run_blocking(containment.sweep)
                except Exception:  # a vanished /proc entry mid-read: the next round sees it
                    log.debug("sweep for escaped replica processes failed", exc_info=True)

    @staticmethod
    def _acquire_lock(settings: LocalSettings) -> int:
        """One controller per state directory: a second one would kill the first's replicas."""
        make_private_dir(settings.root)
        fd = open_private(settings.root / "controller.lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise InfrastructureProviderUnavailable(
                f"local provider state directory {settings.state_dir} is in use by another "
                f"controller (pid {holder}); set {STATE_DIR_ENV} to another directory",
                reason=ErrorReason.STATE_DIR_LOCKED,
                metadata={"state_dir": str(settings.state_dir), "env": STATE_DIR_ENV},
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        return fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def close(self) -> None:
        """Stop every replica (SIGTERM, then SIGKILL), keep desired state, end every task.

        Cancelled (the server's shutdown budget ran out, or a second signal), it
        SIGKILLs every replica's tree at once instead of waiting for the grace.
        """
        replicas: list[Replica] = []
        try:
            tasks = list(self._tasks)
            if self._sweeper is not None:
                tasks.append(self._sweeper)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            replicas = self._replicas()
            await asyncio.gather(*(replica.stop() for replica in replicas))
        finally:
            for replica in {*replicas, *self._replicas()}:
                replica.kill_now()
            for deployment in self._deployments.values():
                deployment.replicas.clear()
            for book in self._logbooks.values():
                book.close()
            self._logbooks.clear()
            await self._close_store()
            if self._containment is not None:
                self._containment.close()
                self._containment = None
            self._release_lock()
            self._deployments.clear()
            self.service_locks = ServiceLocks()
            self._sweeper = None
            self._policies.clear()
            self._opened = False

    def _replicas(self) -> list[Replica]:
        return [r for d in self._deployments.values() for r in d.replicas.values()]

    async def _close_store(self) -> None:
        store, guard = self._store, self._guard
        self._store = self._guard = None
        if store is None:
            return
        try:
            if guard is not None:
                await guard.end()
        finally:
            await store.close()

    # -- helpers ----------------------------------------------------------------------------

    async def _ensure_identity(self, namespace: str) -> None:
        """With a uid range, the namespace's uid (given out on first use, kept for good)."""
        identities, store = self._identities, self._store
        assert identities is not None and store is not None
        if identities.uid_range is None or namespace in self._uids:
            return
        first, last = identities.uid_range
        uid = await store.allocate_uid(namespace, first, last, identities_module.uid_taken)
        if uid is None:
            raise InfrastructureProviderUnavailable(
                f"no free uid left in {first}-{last} for namespace {namespace!r}; "
                "widen ALPHASWARM_LOCAL_UID_RANGE",
                reason=ErrorReason.REPLICA_USER_UNAVAILABLE,
                metadata={"setting": "ALPHASWARM_LOCAL_UID_RANGE", "namespace": namespace},
            )
        self._uids[namespace] = uid

    def _identity(self, namespace: str) -> ReplicaIdentity:
        identities = self._identities
        assert identities is not None, "opened"
        if identities.single is not None:
            return identities.single
        return identities.for_uid(self._uids[namespace])

    def _policy(self, namespace: str) -> LaunchPolicy:
        per_namespace = self._identities is not None and self._identities.uid_range is not None
        key = namespace if per_namespace else ""
        policy = self._policies.get(key)
        if policy is None:
            settings = self.settings
            policy = LaunchPolicy.create(
                self._identity(namespace),
                self.env,
                settings.state_dir,
                settings.allowed_commands,
                settings.allowed_cwds,
            )
            self._policies[key] = policy
        return policy

    def _plan(self, spec: DeploymentSpec, config: Mapping[str, str]) -> LaunchPlan:
        return launch.launch_plan(spec, config, self._policy(spec.namespace))

    def _checked_plan(self, spec: DeploymentSpec, config: Mapping[str, str]) -> LaunchPlan:
        policy = self._policy(spec.namespace)
        return launch.check_runnable(spec, self._plan(spec, config), policy)

    def _get(self, service_id: str, namespace: str) -> Deployment:
        validate_service_ref(service_id, namespace)
        deployment = self._deployments.get((namespace, service_id))
        if deployment is None:
            raise DeploymentNotFoundError(service_id, namespace)
        return deployment

    def _serialised(self, key: Key) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold the service's lock: one change (or rollout step) of a service at a time."""
        return self.service_locks.hold(*key)

    async def _locked(self, key: Key, action: Callable[[], Awaitable[T]]) -> T:
        """Run a mutation serialised per service, to completion even if the caller goes away.

        A cancelled RPC must not leave a change half made, so the work runs in
        its own task; ``close`` cancels what is still running.
        """

        async def run() -> T:
            async with self._serialised(key):
                return await action()

        task: asyncio.Task[T] = asyncio.create_task(run(), name=f"alphaswarm-local:{key}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return await asyncio.shield(task)

    def _task_done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the caller may have gone away

    async def _save(
        self,
        deployment: Deployment,
        desired: Desired,
        *,
        expected: int = 0,
        revision: Revision | None = None,
    ) -> None:
        """Store ``desired`` (and the revision it makes), checking ``expected`` first in the
        same transaction; only then does memory change."""
        assert self._store is not None
        await self._store.save(desired, expected=expected, revision=revision)
        deployment.desired = desired

    async def _check(self, key: Key, expected: int) -> None:
        """For a change that changes nothing: still REVISION_CONFLICT when stale."""
        assert self._store is not None
        await self._store.check(key, expected)

    def _pid_hook(self, key: Key) -> Callable[[int, int, float | None], Awaitable[None]]:
        async def hook(ordinal: int, pid: int, created: float | None) -> None:
            store = self._store
            if store is None:
                return
            try:
                if created is None:
                    await store.forget_pid(key, ordinal, pid)
                else:
                    await store.record_pid(key, ordinal, pid, created)
            except (RuntimeError, OSError) as exc:  # store closing; open() rescans anyway
                log.debug("pid bookkeeping for %s skipped: %s", key, exc)

        return hook

    async def _add(
        self, deployment: Deployment, ordinal: int, revision: int, plan: LaunchPlan
    ) -> Replica:
        spec = deployment.desired.spec
        assert self._containment is not None and self._store is not None
        await self._store.set_slot(deployment.desired.key, ordinal, revision)
        replica = Replica(
            spec.service_id,
            ordinal,
            plan,
            revision=revision,
            log=self._logbook(deployment.desired.key).replica(ordinal),
            settings=self.settings,
            on_pid=self._pid_hook(deployment.desired.key),
            label=f"{spec.namespace}.{spec.service_id}.{ordinal}",
            identity=self._identity(spec.namespace),
            containment=self._containment,
            run=self.run_blocking,
        )
        deployment.replicas[ordinal] = replica
        await replica.start()
        return replica

    def _logbook(self, key: Key) -> LogBook:
        book = self._logbooks.get(key)
        if book is None:
            settings = self.settings
            limits = LogLimits(
                settings.log_file_bytes, settings.log_rotated_files, settings.log_rate_bytes
            )
            book = self._logbooks[key] = LogBook(settings.log_dir(*key), limits)
        return book

    async def _remove(self, deployment: Deployment, ordinal: int, *, forget: bool = False) -> None:
        """Stop the slot's replica; ``forget``: the slot itself goes (scale-down, stop)."""
        replica = deployment.replicas[ordinal]
        await replica.stop()
        if deployment.replicas.get(ordinal) is replica:
            del deployment.replicas[ordinal]
        if forget and self._store is not None and ordinal not in deployment.replicas:
            await self._store.drop_slot(deployment.desired.key, ordinal)

    async def _converge(
        self, deployment: Deployment, *, recovered: Mapping[int, int] | None = None
    ) -> None:
        """Make the processes match desired state at once where nothing is replaced: drop
        extras, add missing slots; then let the rollout task replace outdated replicas.

        ``recovered``: at open, the revision each slot ran before (a rollout resumes).
        """
        deployment.note = ""
        desired = deployment.desired
        target = desired.target
        if target and not deployment.plan.checked:  # e.g. not started at open: policy changed
            deployment.plan = self._checked_plan(desired.spec, desired.config)
        extra = sorted((o for o in deployment.replicas if o >= target), reverse=True)
        await asyncio.gather(*(self._remove(deployment, o, forget=True) for o in extra))
        await self._retag(deployment)
        missing = [o for o in range(target) if o not in deployment.replicas]
        if missing:
            fresh = await self._fresh_slot(deployment)
            for ordinal in missing:
                revision, plan = fresh
                ran = (recovered or {}).get(ordinal)
                if ran is not None and ran != desired.revision:
                    found = await self._revision_plan(deployment, ran)
                    if found is not None:
                        revision, plan = ran, found
                await self._add(deployment, ordinal, revision, plan)
        self._ensure_worker(deployment)

    def _status(self, deployment: Deployment) -> DeploymentStatus:
        desired = deployment.desired
        replicas = [deployment.replicas[o] for o in sorted(deployment.replicas)]
        instances = tuple(r.status() for r in replicas)
        target = desired.target
        ready = sum(1 for i in instances if i.ready)
        restarts = sum(r.restarts for r in replicas)
        failing = [r for r in replicas if r.state == "backoff"]
        rollout = desired.rollout
        rollout_failed = rollout is not None and rollout.state is RolloutState.FAILED
        if desired.held and not desired.stopped:
            state = DeploymentState.STOPPED
            message = f"held: {desired.held}"
        elif target == 0:
            state = DeploymentState.STOPPED
            message = "stopped" if desired.stopped else "scaled to 0"
        elif ready >= target:
            state = DeploymentState.RUNNING
            message = f"{ready}/{target} replicas running"
        elif failing:
            state = DeploymentState.DEGRADED
            first = failing[0]
            message = f"{ready}/{target} ready; replica {first.ordinal}: {first.message}"
        else:
            state = DeploymentState.PENDING
            message = f"{ready}/{target} replicas ready"
        if rollout_failed and state in (DeploymentState.RUNNING, DeploymentState.PENDING):
            state = DeploymentState.DEGRADED  # perhaps serving, but not what is desired
        if deployment.note:
            message = f"{message}; {deployment.note}"
        if rollout is not None and rollout.state is RolloutState.IN_PROGRESS and target:
            updated = sum(1 for r in replicas if r.revision == desired.revision and r.ready)
            message += f"; rolling out revision {desired.revision}: {updated}/{target} updated"
        elif rollout_failed and rollout is not None:
            message += (
                f"; rollout of revision {desired.revision} failed ({rollout.reason}): "
                f"{rollout.message}"
            )
        available = ready >= target
        if deployment.available is None or deployment.available[0] != available:
            deployment.available = (available, datetime.now(UTC))
        spec = desired.spec
        return DeploymentStatus(
            service_id=spec.service_id,
            namespace=spec.namespace,
            provider=self.provider_alias,
            state=state,
            desired_replicas=target,
            ready_replicas=ready,
            message=message,
            updated_at=datetime.now(UTC),
            restarts=restarts,
            instances=instances,
            image=spec.image,
            labels=dict(spec.labels),
            changed_at=datetime.fromtimestamp(desired.updated_at, UTC),
            created_at=datetime.fromtimestamp(desired.created_at, UTC)
            if desired.created_at
            else None,
            spec=replace(spec, replicas=desired.replicas),
            revision=desired.revision,
            observed_revision=min((r.revision for r in replicas), default=desired.revision),
            rollout=rollout,
            conditions=rollouts.conditions(rollout, deployment.available, ready, target),
        )

    # -- required ---------------------------------------------------------------------------

    async def health(self) -> ProviderHealth:
        await self._ensure_open()
        settings = self.settings
        assert self._store is not None
        probe = settings.root / f".probe-{uuid.uuid4().hex}"  # concurrent probes: own files
        try:
            await self.run_blocking(touch_private, probe)
            await self.run_blocking(probe.unlink)
            count = await self._store.ping()
        except OSError as exc:
            raise _unwritable(settings, exc) from exc
        running = sum(1 for d in self._deployments.values() for r in d.replicas.values() if r.pid)
        return ProviderHealth(
            alias=self.provider_alias,
            kind=ProviderKind.LOCAL.value,
            healthy=True,
            message=f"{count} deployment(s), {running} replica process(es) running",
            details={
                "state_dir": str(settings.state_dir),
                "database": str(settings.database),
                "deployments": str(count),
                "running_replicas": str(running),
                "python": platform.python_version(),
                "os": f"{platform.system()} {platform.release()}",
                "platform": sys.platform,
                "controller_pid": str(os.getpid()),
                "pdeathsig": str(settings.pdeathsig).lower(),
            },
        )

    async def start(self, spec: DeploymentSpec) -> DeploymentStatus:
        """Record the spec (a new revision when what runs changes) and return at once; the
        rollout task replaces the replicas. A start of what is desired already retries a
        failed rollout and resumes a stopped or held service."""
        spec.validate()
        launch.require_command(spec)  # before anything else: nothing can change
        await self._ensure_open()
        key = (spec.namespace, spec.service_id)
        change = current_change()

        async def converge() -> DeploymentStatus:
            deployment = self._deployments.get(key)
            config = deployment.desired.config if deployment else {}
            await self._ensure_identity(spec.namespace)
            plan = self._checked_plan(spec, config)
            if deployment is None:
                desired = Desired(spec=spec, replicas=spec.replicas, revision=1, rollout=begun(1))
                assert self._store is not None
                await self._store.save(
                    desired,
                    expected=change.expected_revision,
                    revision=revision_of(desired, change.change_cause),
                )
                deployment = Deployment(desired, plan)
                self._deployments[key] = deployment
            else:
                current = deployment.desired
                updated, record = _started(current, spec, change.change_cause)
                if record is not None or _fields(updated) != _fields(current):
                    await self._save(
                        deployment, updated, expected=change.expected_revision, revision=record
                    )
                else:
                    await self._check(key, change.expected_revision)
                deployment.plan = plan
            await self._converge(deployment)
            return self._status(deployment)

        return await self._locked(key, converge)

    async def stop(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        await self._ensure_open()
        key = self._get(service_id, namespace).desired.key
        expected = current_change().expected_revision

        async def stop() -> DeploymentStatus:
            deployment = self._get(service_id, namespace)  # it may have been deleted meanwhile
            if not deployment.desired.stopped:
                updated = deployment.desired.changed(stopped=True, held="")
                await self._save(deployment, updated, expected=expected)
            else:
                await self._check(key, expected)
            await self._converge(deployment)
            return self._status(deployment)

        return await self._locked(key, stop)

    async def scale(
        self, service_id: str, replicas: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        """Add or remove slots at once; never a new revision (new slots run the desired
        revision, or the last good one after a failed rollout)."""
        violations: list[FieldViolation] = []
        check_replicas(violations, "replicas", replicas)
        if violations:
            raise InvalidSpecError(violations)
        await self._ensure_open()
        key = self._get(service_id, namespace).desired.key
        expected = current_change().expected_revision

        async def scale() -> DeploymentStatus:
            deployment = self._get(service_id, namespace)
            current = deployment.desired
            stopped = current.stopped and replicas == 0
            if replicas and not deployment.plan.checked:  # refused before anything changes
                deployment.plan = self._checked_plan(current.spec, current.config)
            if (current.replicas, current.stopped, current.held) != (replicas, stopped, ""):
                updated = current.changed(replicas=replicas, stopped=stopped, held="")
                await self._save(deployment, updated, expected=expected)
            else:
                await self._check(key, expected)
            await self._converge(deployment)
            return self._status(deployment)

        return await self._locked(key, scale)

    async def status(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        await self._ensure_open()
        return self._status(self._get(service_id, namespace))

    async def list_deployments(self, *, namespace: str | None = None) -> list[DeploymentStatus]:
        await self._ensure_open()
        return [
            self._status(deployment)
            for key, deployment in sorted(self._deployments.items())
            if namespace is None or key[0] == namespace
        ]

    # -- config -----------------------------------------------------------------------------

    async def get_config(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> ServiceConfig:
        await self._ensure_open()
        return self._config(self._get(service_id, namespace).desired)

    async def apply_config(self, patch: ConfigMapPatch) -> ServiceConfig:
        """Store the new config as a new revision; the rollout task then restarts the
        replicas one at a time with it in their environment. A patch that changes
        nothing makes no revision and keeps the version."""
        patch.validate()
        await self._ensure_open()
        key = self._get(patch.service_id, patch.namespace).desired.key
        change = current_change()

        async def apply() -> ServiceConfig:
            deployment = self._get(patch.service_id, patch.namespace)
            current = deployment.desired
            version = str(current.config_version)
            if patch.expected_version and patch.expected_version != version:
                raise ConfigVersionConflict(
                    patch.service_id,
                    patch.namespace,
                    expected=patch.expected_version,
                    actual=version,
                )
            data = patch.applied_to(current.config)
            if data == dict(current.config):
                await self._check(key, change.expected_revision)
                return self._config(current)
            try:
                plan = self._checked_plan(current.spec, data)
            except InvalidSpecError as exc:
                raise InvalidSpecError.single(
                    "patch.set", f"with this config the command cannot start: {exc.message}"
                ) from None
            number = current.revision + 1
            updated = current.changed(
                config=data,
                config_version=current.config_version + 1,
                revision=number,
                rollout=begun(number),
            )
            record = revision_of(updated, change.change_cause)
            await self._save(
                deployment, updated, expected=change.expected_revision, revision=record
            )
            deployment.plan = plan
            await self._converge(deployment)
            return self._config(updated)

        return await self._locked(key, apply)

    @staticmethod
    def _config(desired: Desired) -> ServiceConfig:
        return ServiceConfig(
            desired.spec.service_id,
            desired.spec.namespace,
            dict(desired.config),
            str(desired.config_version),
        )

    # -- revisions --------------------------------------------------------------------------

    async def definition(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> Definition:
        """The desired spec (with the replicas that should run now), config and revision."""
        await self._ensure_open()
        desired = self._get(service_id, namespace).desired
        return Definition(
            replace(desired.spec, replicas=desired.target),
            dict(desired.config),
            str(desired.config_version),
            desired.revision,
        )

    async def list_revisions(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> list[Revision]:
        """Newest first: the last ``store.HISTORY`` revisions, and older ones still needed
        (the last good one, those a replica runs)."""
        await self._ensure_open()
        key = self._get(service_id, namespace).desired.key
        assert self._store is not None
        return await self._store.revisions(key)

    async def rollback(
        self, service_id: str, to_revision: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        """A new revision with ``to_revision``'s spec and config (0: the revision before the
        newest), replacing the replicas one at a time like any change."""
        if to_revision < 0:
            raise InvalidSpecError.single(
                "to_revision", "0 (the previous one) or a revision number"
            )
        await self._ensure_open()
        key = self._get(service_id, namespace).desired.key
        change = current_change()

        async def roll_back() -> DeploymentStatus:
            deployment = self._get(service_id, namespace)
            number = to_revision
            if number == 0:
                assert self._store is not None
                history = await self._store.revisions(key)
                if len(history) < 2:
                    raise RevisionNotFound(service_id, namespace, 0)
                number = history[1].number
            await self._restore(
                deployment, number, cause=change.change_cause, expected=change.expected_revision
            )
            return self._status(deployment)

        return await self._locked(key, roll_back)

    # -- metrics ----------------------------------------------------------------------------

    async def stream_metrics(
        self,
        service_id: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        interval_seconds: float = 10.0,
    ) -> AsyncGenerator[MetricSample, None]:
        interval = max(0.05, interval_seconds)
        await self._ensure_open()
        sampler = ProcessTreeSampler()
        cadence = Cadence(interval)
        while True:
            deployment = self._get(service_id, namespace)  # NOT_FOUND once it is deleted
            replicas = {r.ordinal: r.pid for r in deployment.replicas.values() if r.pid}
            now = datetime.now(UTC)
            try:
                reading = await self.run_blocking(sampler.sample, list(replicas.values()))
            except Exception as exc:  # psutil/OS hiccup: mark this sample, keep streaming
                log.debug("metrics of %s/%s failed", namespace, service_id, exc_info=True)
                sample = MetricSample(
                    service_id,
                    namespace,
                    self.provider_alias,
                    now,
                    replicas=len(replicas),
                    ok=False,
                    error=f"cannot read process metrics: {type(exc).__name__}",
                )
            else:
                extra = {
                    f"replica_{ordinal}_rss_bytes": float(reading.per_replica_rss[pid])
                    for ordinal, pid in replicas.items()
                    if pid in reading.per_replica_rss
                }
                extra["restarts"] = float(sum(r.restarts for r in deployment.replicas.values()))
                sample = MetricSample(
                    service_id,
                    namespace,
                    self.provider_alias,
                    now,
                    replicas=reading.replicas,
                    cpu_percent=reading.cpu_percent,
                    memory_bytes=reading.memory_bytes,
                    extra=extra,
                )
            yield sample
            await cadence.wait()

    # -- logs -------------------------------------------------------------------------------

    async def stream_logs(
        self, service_id: str, query: LogQuery, *, namespace: str = DEFAULT_NAMESPACE
    ) -> AsyncGenerator[LogEntry, None]:
        """The replica log files (logfiles.py): every slot the service has had since it was
        created, its last ``query.tail`` lines then, with ``follow``, what comes."""
        await self._ensure_open()
        key = self._get(service_id, namespace).desired.key
        reader = LogReader(
            self._logbook(key), LogSelector.of(service_id, query), query.tail, self.run_blocking
        )
        async with contextlib.aclosing(reader.entries(follow=query.follow)) as entries:
            async for entry in entries:
                yield entry

    # -- delete -----------------------------------------------------------------------------

    async def delete(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE, allow_missing: bool = False
    ) -> bool:
        """Stop every process of every replica, then forget the deployment: its row (spec,
        config, secrets), its log files and its cgroups. Serialised with every other change
        of the service, so a concurrent start of the same name waits and then starts afresh.
        """
        validate_service_ref(service_id, namespace)
        await self._ensure_open()
        key = (namespace, service_id)
        expected = current_change().expected_revision

        async def delete() -> bool:
            deployment = self._deployments.get(key)
            if deployment is None:
                if allow_missing:
                    return False
                raise DeploymentNotFoundError(service_id, namespace)
            assert self._store is not None
            await self._store.delete(key, expected=expected)  # first: if it fails, nothing changed
            try:
                ordinals = list(deployment.replicas)
                await asyncio.gather(*(self._remove(deployment, o) for o in ordinals))
            finally:
                del self._deployments[key]
                book = self._logbooks.pop(key, None)
                if book is not None:
                    book.close()  # followers of its logs end
            log_dir = self.settings.log_dir(*key)
            await self.run_blocking(_remove_tree, log_dir)
            with contextlib.suppress(OSError):  # the namespace's directory, once empty
                log_dir.parent.rmdir()
            log.info("local provider: deleted %s/%s", namespace, service_id)
            return True

        return await self._locked(key, delete)


def _started(current: Desired, spec: DeploymentSpec, cause: str) -> tuple[Desired, Revision | None]:
    """What a StartDeployment of ``spec`` makes of ``current``, and the revision it makes:
    one when what runs changes; none, but a new rollout, when it retries a failed one or
    resumes a service that ran no replica."""
    updated = current.changed(spec=spec, replicas=spec.replicas, stopped=False, held="")
    if not current.spec.runs_as(spec):
        number = current.revision + 1
        updated = replace(updated, revision=number, rollout=begun(number))
        return updated, revision_of(updated, cause)
    failed = current.rollout is not None and current.rollout.state is RolloutState.FAILED
    if spec.replicas and (failed or current.target == 0):
        updated = replace(updated, rollout=begun(current.revision))
    return updated, None


def _fields(desired: Desired) -> tuple[object, ...]:
    """What a change may alter (``updated_at`` aside)."""
    return (
        desired.spec,
        desired.replicas,
        desired.stopped,
        desired.held,
        desired.revision,
        desired.rollout,
    )


def _remove_tree(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)
