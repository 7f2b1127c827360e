"""The ``local`` provider: every replica is an OS process on this machine.

Desired state lives in SQLite under ``$ALPHASWARM_CP_STATE_DIR/local``; the
processes are supervised by asyncio tasks of this controller. Nothing outlives
the controller: on a graceful shutdown every replica is stopped, on a crash the
kernel kills them (PR_SET_PDEATHSIG, Linux) and the next ``open`` kills
whatever is left before converging every deployment back to its replicas.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import platform
import sqlite3
import sys
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    MetricSample,
    ProviderHealth,
    ProviderKind,
    ServiceConfig,
    check_replicas,
    validate_service_ref,
)
from alphaswarm_core.providers.protocol import DEFAULT_NAMESPACE, InfrastructureProvider
from alphaswarm_core.providers.reasons import ErrorReason

from . import processes
from .metrics import ProcessTreeSampler
from .processes import LaunchPlan
from .replica import Replica
from .settings import STATE_DIR_ENV, LocalSettings
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


def _unwritable(settings: LocalSettings, exc: Exception) -> InfrastructureProviderUnavailable:
    why = getattr(exc, "strerror", None) or str(exc)
    return InfrastructureProviderUnavailable(
        f"local provider state directory {settings.state_dir} is not writable: "
        f"{why}; set {STATE_DIR_ENV} to a writable directory",
        reason=ErrorReason.STATE_DIR_UNWRITABLE,
        metadata={"state_dir": str(settings.state_dir), "env": STATE_DIR_ENV},
    )


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
        self._tasks: set[asyncio.Task[object]] = set()
        self._open_lock = asyncio.Lock()
        self._opened = False

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
        store = StateStore(settings.database)
        try:
            self._lock_fd = await self.run_blocking(self._acquire_lock, settings)
            await store.open()
        except BaseException as exc:
            await store.close()
            self._release_lock()
            if isinstance(exc, OSError | sqlite3.Error):
                raise _unwritable(settings, exc) from exc
            raise
        self._store = store
        try:
            await self._recover(settings, store)
        except BaseException:
            await self.close()  # releases the lock too, so a later call can retry
            raise

    async def _recover(self, settings: LocalSettings, store: StateStore) -> None:
        """Kill what a previous run left behind, then bring every deployment back."""
        owner = str(settings.state_dir)
        recorded = await store.recorded_pids()
        orphans = await self.run_blocking(processes.find_orphans, owner, recorded)
        if orphans:
            killed = await self.run_blocking(processes.kill_orphans, orphans)
            log.warning(
                "killed %d replica process group(s) left by a previous run: %s",
                len(killed),
                sorted(killed),
            )
        await store.clear_pids()
        for desired in await store.load():
            plan = self._plan(desired.spec, desired.config)
            deployment = _Deployment(desired, plan)
            self._deployments[desired.key] = deployment
            if desired.target:
                await self._locked(desired.key, functools.partial(self._converge, deployment))
        log.info(
            "local provider: %d deployment(s) from %s", len(self._deployments), settings.database
        )

    @staticmethod
    def _acquire_lock(settings: LocalSettings) -> int:
        """One controller per state directory: a second one would kill the first's replicas."""
        settings.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(
            settings.root / "controller.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
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
        """Stop every replica (SIGTERM, then SIGKILL), keep desired state, end every task."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        replicas = [r for d in self._deployments.values() for r in d.replicas.values()]
        try:
            await asyncio.gather(*(replica.stop() for replica in replicas))
        finally:
            for replica in replicas:
                replica.kill_now()
            for deployment in self._deployments.values():
                deployment.replicas.clear()
            if self._store is not None:
                await self._store.close()
                self._store = None
            self._release_lock()
            self._deployments.clear()
            self._locks.clear()
            self._opened = False

    # -- helpers ----------------------------------------------------------------------------

    def _plan(self, spec: DeploymentSpec, config: Mapping[str, str]) -> LaunchPlan:
        return processes.launch_plan(spec, config, self.env, str(self.settings.state_dir))

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
            async with self._locks.setdefault(key, asyncio.Lock()):
                return await action()

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
        replica = Replica(
            spec.service_id,
            ordinal,
            deployment.plan,
            log_path=self.settings.log_path(spec.namespace, spec.service_id, ordinal),
            settings=self.settings,
            on_pid=self._pid_hook(deployment.desired.key),
        )
        deployment.replicas[ordinal] = replica
        await replica.start()
        return replica

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
        if target == 0:
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
            updated_at=datetime.fromtimestamp(desired.updated_at, UTC),
            restarts=restarts,
            instances=instances,
            image=spec.image,
            labels=dict(spec.labels),
        )

    # -- required ---------------------------------------------------------------------------

    async def health(self) -> ProviderHealth:
        await self._ensure_open()
        settings = self.settings
        assert self._store is not None
        probe = settings.root / f".probe-{uuid.uuid4().hex}"  # concurrent probes: own files
        try:
            await self.run_blocking(probe.write_bytes, b"ok")
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
        if not spec.command:  # before anything else: nothing can change
            processes.check_runnable(spec, self._plan(spec, {}))
        await self._ensure_open()
        key = (spec.namespace, spec.service_id)

        async def converge() -> DeploymentStatus:
            deployment = self._deployments.get(key)
            config = deployment.desired.config if deployment else {}
            plan = self._plan(spec, config)
            processes.check_runnable(spec, plan)
            if deployment is None:
                desired = Desired(spec=spec, replicas=spec.replicas)
                assert self._store is not None
                await self._store.save(desired)
                deployment = _Deployment(desired, plan)
                self._deployments[key] = deployment
            else:
                current = deployment.desired
                if (current.spec, current.replicas, current.stopped) != (
                    spec,
                    spec.replicas,
                    False,
                ):
                    await self._save(
                        deployment,
                        current.changed(spec=spec, replicas=spec.replicas, stopped=False),
                    )
                deployment.plan = plan
            await self._converge(deployment)
            return self._status(deployment)

        return await self._locked(key, converge)

    async def stop(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        await self._ensure_open()
        deployment = self._get(service_id, namespace)

        async def stop() -> DeploymentStatus:
            if not deployment.desired.stopped:
                await self._save(deployment, deployment.desired.changed(stopped=True))
            await self._converge(deployment)
            return self._status(deployment)

        return await self._locked(deployment.desired.key, stop)

    async def scale(
        self, service_id: str, replicas: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        violations: list[FieldViolation] = []
        check_replicas(violations, "replicas", replicas)
        if violations:
            raise InvalidSpecError(violations)
        await self._ensure_open()
        deployment = self._get(service_id, namespace)

        async def scale() -> DeploymentStatus:
            current = deployment.desired
            stopped = current.stopped and replicas == 0
            if (current.replicas, current.stopped) != (replicas, stopped):
                await self._save(deployment, current.changed(replicas=replicas, stopped=stopped))
            await self._converge(deployment)
            return self._status(deployment)

        return await self._locked(deployment.desired.key, scale)

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
        deployment = self._get(patch.service_id, patch.namespace)

        async def apply() -> ServiceConfig:
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
            plan = self._plan(current.spec, data)
            try:
                processes.check_runnable(current.spec, plan)
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

        return await self._locked(deployment.desired.key, apply)

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
        deployment = self._get(service_id, namespace)
        sampler = ProcessTreeSampler()
        while True:
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
