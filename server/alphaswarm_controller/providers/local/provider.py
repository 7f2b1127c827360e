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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from alphaswarm_core.providers.concurrency import BlockingRunner
from alphaswarm_core.providers.errors import (
    ConfigVersionConflict,
    DeploymentNotFoundError,
    FieldViolation,
    InfrastructureProviderUnavailable,
    InvalidSpecError,
)
from alphaswarm_core.providers.models import (
    ConfigMapPatch,
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    LogEntry,
    LogQuery,
    MetricSample,
    ProviderHealth,
    ProviderKind,
    ServiceConfig,
    check_replicas,
    validate_service_ref,
)
from alphaswarm_core.providers.protocol import DEFAULT_NAMESPACE, InfrastructureProvider
from alphaswarm_core.providers.reasons import ErrorReason

from . import identity as identities_module
from . import launch, processes
from .containment import Containment
from .crashloop import CrashLoopGuard
from .identity import IdentityPolicy, ReplicaIdentity
from .launch import LaunchPlan, LaunchPolicy
from .logfiles import LogBook, LogLimits
from .logstream import LogReader, LogSelector
from .metrics import ProcessTreeSampler
from .proctable import libc
from .replica import Replica
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


@dataclass(eq=False, slots=True)
class _Deployment:
    desired: Desired
    plan: LaunchPlan
    replicas: dict[int, Replica] = field(default_factory=dict)
    note: str = ""
    """Why the last convergence could not finish (a halted rollout), shown in status."""


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


class LocalProvider(InfrastructureProvider):
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
        self._deployments: dict[Key, _Deployment] = {}
        self._locks: dict[Key, asyncio.Lock] = {}
        self._lock_users: dict[Key, int] = {}
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
            deployment = _Deployment(desired, self._plan(desired.spec, desired.config))
            self._deployments[desired.key] = deployment
            if not desired.target:
                continue
            try:  # the policy may have changed since it was stored
                deployment.plan = self._checked_plan(desired.spec, desired.config)
            except InvalidSpecError as exc:
                deployment.note = f"not started: {exc.message}"
                log.error("local provider: %s/%s %s", *desired.key, deployment.note)
                continue
            await self._locked(desired.key, functools.partial(self._converge, deployment))
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
            self._locks.clear()
            self._lock_users.clear()
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

    def _get(self, service_id: str, namespace: str) -> _Deployment:
        validate_service_ref(service_id, namespace)
        deployment = self._deployments.get((namespace, service_id))
        if deployment is None:
            raise DeploymentNotFoundError(service_id, namespace)
        return deployment

    async def _locked(self, key: Key, action: Callable[[], Awaitable[T]]) -> T:
        """Run a mutation serialised per service, to completion even if the caller goes away.

        A cancelled RPC must not leave a rollout half done, so the work runs in
        its own task; ``close`` cancels what is still running.
        """

        async def run() -> T:
            self._lock_users[key] = self._lock_users.get(key, 0) + 1
            try:
                async with self._locks.setdefault(key, asyncio.Lock()):
                    return await action()
            finally:
                left = self._lock_users.get(key, 1) - 1
                if left:
                    self._lock_users[key] = left
                else:  # the lock of a deleted service goes with it
                    self._lock_users.pop(key, None)
                    if key not in self._deployments:
                        self._locks.pop(key, None)

        task: asyncio.Task[T] = asyncio.create_task(run(), name=f"alphaswarm-local:{key}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return await asyncio.shield(task)

    def _task_done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the caller may have gone away

    async def _save(self, deployment: _Deployment, desired: Desired) -> None:
        if desired != deployment.desired:
            assert self._store is not None
            await self._store.save(desired)
            deployment.desired = desired

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

    async def _add(self, deployment: _Deployment, ordinal: int) -> Replica:
        spec = deployment.desired.spec
        assert self._containment is not None
        replica = Replica(
            spec.service_id,
            ordinal,
            deployment.plan,
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

    async def _remove(self, deployment: _Deployment, ordinal: int) -> None:
        replica = deployment.replicas[ordinal]
        await replica.stop()
        if deployment.replicas.get(ordinal) is replica:
            del deployment.replicas[ordinal]

    async def _converge(self, deployment: _Deployment) -> None:
        """Make the processes match desired state: drop extras, roll outdated, add missing.

        Outdated replicas are replaced one at a time, the next only once the new
        one is ready, so a service of two or more keeps serving throughout.
        """
        deployment.note = ""
        target = deployment.desired.target
        if target and not deployment.plan.checked:  # e.g. not started at open: policy changed
            desired = deployment.desired
            deployment.plan = self._checked_plan(desired.spec, desired.config)
        extra = sorted((o for o in deployment.replicas if o >= target), reverse=True)
        await asyncio.gather(*(self._remove(deployment, o) for o in extra))
        fingerprint = deployment.plan.fingerprint
        outdated = sorted(
            o for o, r in deployment.replicas.items() if r.plan.fingerprint != fingerprint
        )
        for ordinal in outdated:
            failing = [
                o
                for o, r in deployment.replicas.items()
                if r.plan.fingerprint == fingerprint and r.state == "backoff"
            ]
            if failing:  # do not trade a working old replica for another failing new one
                deployment.note = f"rollout halted: replica {failing[0]} of the new revision fails"
                break
            await self._remove(deployment, ordinal)
            replica = await self._add(deployment, ordinal)
            if not await replica.wait_ready_or_failed(self.settings.rollout_timeout):
                why = replica.last_failure or "not ready in time"
                deployment.note = f"rollout halted at replica {ordinal}: {why}"
                log.warning("%s/%s: %s", *deployment.desired.key, deployment.note)
                break
        for ordinal in range(target):
            if ordinal not in deployment.replicas:
                await self._add(deployment, ordinal)

    def _status(self, deployment: _Deployment) -> DeploymentStatus:
        desired = deployment.desired
        replicas = [deployment.replicas[o] for o in sorted(deployment.replicas)]
        instances = tuple(r.status() for r in replicas)
        target = desired.target
        ready = sum(1 for i in instances if i.ready)
        restarts = sum(r.restarts for r in replicas)
        failing = [r for r in replicas if r.state == "backoff"]
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
        if deployment.note:
            message = f"{message}; {deployment.note}"
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
        spec.validate()
        launch.require_command(spec)  # before anything else: nothing can change
        await self._ensure_open()
        key = (spec.namespace, spec.service_id)

        async def converge() -> DeploymentStatus:
            deployment = self._deployments.get(key)
            config = deployment.desired.config if deployment else {}
            await self._ensure_identity(spec.namespace)
            plan = self._checked_plan(spec, config)
            if deployment is None:
                desired = Desired(spec=spec, replicas=spec.replicas)
                assert self._store is not None
                await self._store.save(desired)
                deployment = _Deployment(desired, plan)
                self._deployments[key] = deployment
            else:
                current = deployment.desired
                if (current.spec, current.replicas, current.stopped, current.held) != (
                    spec,
                    spec.replicas,
                    False,
                    "",
                ):
                    await self._save(
                        deployment,
                        current.changed(spec=spec, replicas=spec.replicas, stopped=False, held=""),
                    )
                deployment.plan = plan
            await self._converge(deployment)
            return self._status(deployment)

        return await self._locked(key, converge)

    async def stop(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        await self._ensure_open()
        key = self._get(service_id, namespace).desired.key

        async def stop() -> DeploymentStatus:
            deployment = self._get(service_id, namespace)  # it may have been deleted meanwhile
            if not deployment.desired.stopped:
                await self._save(deployment, deployment.desired.changed(stopped=True, held=""))
            await self._converge(deployment)
            return self._status(deployment)

        return await self._locked(key, stop)

    async def scale(
        self, service_id: str, replicas: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        violations: list[FieldViolation] = []
        check_replicas(violations, "replicas", replicas)
        if violations:
            raise InvalidSpecError(violations)
        await self._ensure_open()
        key = self._get(service_id, namespace).desired.key

        async def scale() -> DeploymentStatus:
            deployment = self._get(service_id, namespace)
            current = deployment.desired
            stopped = current.stopped and replicas == 0
            if replicas and not deployment.plan.checked:  # refused before anything changes
                deployment.plan = self._checked_plan(current.spec, current.config)
            if (current.replicas, current.stopped, current.held) != (replicas, stopped, ""):
                await self._save(
                    deployment, current.changed(replicas=replicas, stopped=stopped, held="")
                )
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
        desired = self._get(service_id, namespace).desired
        return ServiceConfig(
            desired.spec.service_id,
            desired.spec.namespace,
            dict(desired.config),
            str(desired.config_version),
        )

    async def apply_config(self, patch: ConfigMapPatch) -> ServiceConfig:
        """Store the new config, then restart replicas one at a time with it in their env."""
        patch.validate()
        await self._ensure_open()
        key = self._get(patch.service_id, patch.namespace).desired.key

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
            try:
                plan = self._checked_plan(current.spec, data)
            except InvalidSpecError as exc:
                raise InvalidSpecError.single(
                    "patch.set", f"with this config the command cannot start: {exc.message}"
                ) from None
            updated = current.changed(config=data, config_version=current.config_version + 1)
            await self._save(deployment, updated)
            deployment.plan = plan
            await self._converge(deployment)
            return ServiceConfig(
                updated.spec.service_id,
                updated.spec.namespace,
                dict(data),
                str(updated.config_version),
            )

        return await self._locked(key, apply)

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
            await asyncio.sleep(interval)

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

        async def delete() -> bool:
            deployment = self._deployments.get(key)
            if deployment is None:
                if allow_missing:
                    return False
                raise DeploymentNotFoundError(service_id, namespace)
            assert self._store is not None
            await self._store.delete(key)  # first: when it fails, nothing has changed
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


def _remove_tree(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)
