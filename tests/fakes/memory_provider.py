"""An in-memory provider for service-layer tests: full contract, plus failure injection.

It is a real ``InfrastructureProvider`` (it passes the contract suite), so the
gRPC layer can be tested end to end without a backend, and each row of the
error table can be provoked on demand through ``fail_next``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from alphaswarm_core.call import current_change
from alphaswarm_core.providers.cadence import Cadence
from alphaswarm_core.providers.protocol import (
    DEFAULT_NAMESPACE,
    Condition,
    ConfigMapPatch,
    ConfigVersionConflict,
    Definition,
    DeploymentNotFoundError,
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    InfrastructureProvider,
    InstanceStatus,
    LogEntry,
    LogQuery,
    LogStreamKind,
    MetricSample,
    ProviderHealth,
    Revision,
    RevisionConflict,
    RevisionNotFound,
    Rollout,
    RolloutState,
    ServiceConfig,
)

_ids = itertools.count(1)
LINE_SECONDS = 0.1
"""Each in-memory replica 'writes' one line this often, counted from its start."""
HISTORY = 10
"""Revisions kept per service."""
CRASHING = "crash"
"""An image whose name contains this 'crashes': its rollout FAILS with CRASH_LOOP."""


@dataclass
class _Service:
    spec: DeploymentSpec
    replicas: int
    instances: list[str] = field(default_factory=list)
    config: dict[str, str] = field(default_factory=dict)
    config_version: int = 1
    born: dict[str, datetime] = field(default_factory=dict)
    """Instance -> when it started: it 'writes' a line every LINE_SECONDS from then on."""
    revisions: list[Revision] = field(default_factory=list)
    """Oldest first, at most HISTORY."""
    rollout: Rollout | None = None
    observed: int = 0
    """The revision its replicas run (the last one whose rollout succeeded)."""

    @property
    def revision(self) -> int:
        return self.revisions[-1].number if self.revisions else 0


class MemoryProvider(InfrastructureProvider):
    provider_kind = "memory"
    provider_alias = "memory"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.services: dict[tuple[str, str], _Service] = {}
        self.calls: list[str] = []
        self.failures: dict[str, BaseException] = {}
        """Method name -> error raised by that method's next call."""
        self.repeated_failures: dict[str, list[BaseException]] = {}
        """Method name -> errors raised by its next calls, one per call, in order."""
        self.sticky_failures: dict[str, BaseException] = {}
        """Method name -> error raised by each of its calls until the entry is removed."""
        self.hang_seconds = 0.0
        self.opened = False
        self.open_streams = 0
        self.polls = 0
        """Samples produced by stream_metrics, across all streams (one per backend poll)."""
        self.closed = False

    async def open(self) -> None:
        self.opened = True

    async def close(self) -> None:
        self.closed = True

    async def _enter(self, name: str) -> None:
        self.calls.append(name)
        if self.hang_seconds:
            await asyncio.sleep(self.hang_seconds)
        error = self.failures.pop(name, None)
        if error is None and self.repeated_failures.get(name):
            error = self.repeated_failures[name].pop(0)
        if error is None:
            error = self.sticky_failures.get(name)
        if error is not None:
            raise error

    def _get(self, service_id: str, namespace: str) -> _Service:
        key = (namespace, service_id)
        if key not in self.services:
            raise DeploymentNotFoundError(service_id, namespace)
        return self.services[key]

    def _resize(self, service: _Service, replicas: int) -> None:
        del service.instances[replicas:]
        while len(service.instances) < replicas:
            instance = f"{service.spec.service_id}-{next(_ids)}"
            service.instances.append(instance)
            service.born[instance] = datetime.now(UTC)
        service.replicas = replicas

    def _check(self, key: tuple[str, str]) -> None:
        """The caller's expected_revision against this service's (check-and-set)."""
        service = self.services.get(key)
        RevisionConflict.check(
            key[1], key[0], current_change().expected_revision, service.revision if service else 0
        )

    def _record(self, service: _Service, *, rollback_of: int = 0, automatic: bool = False) -> None:
        """A new revision of what ``service`` runs now, and its (instant) rollout."""
        now = datetime.now(UTC)
        service.revisions.append(
            Revision(
                service.revision + 1,
                replace(service.spec, replicas=0),
                dict(service.config),
                str(service.config_version),
                now,
                "" if automatic else current_change().change_cause,
                rollback_of,
                automatic,
            )
        )
        del service.revisions[:-HISTORY]
        if CRASHING not in service.spec.image:
            service.observed = service.revision
            service.rollout = Rollout(RolloutState.SUCCEEDED, now, finished_at=now)
            return
        service.rollout = Rollout(
            RolloutState.FAILED, now, "CRASH_LOOP", "replicas exit at once", finished_at=now
        )
        if service.spec.auto_rollback and service.observed:
            good = next(r for r in service.revisions if r.number == service.observed)
            self._restore(service, good, automatic=True)

    def _restore(self, service: _Service, target: Revision, *, automatic: bool = False) -> None:
        service.spec = replace(target.spec, replicas=service.replicas)
        service.config = dict(target.config)
        service.config_version += 1
        service.instances.clear()
        self._resize(service, service.replicas)
        self._record(service, rollback_of=target.number, automatic=automatic)

    def _status(self, service: _Service) -> DeploymentStatus:
        spec = service.spec
        state = DeploymentState.RUNNING if service.replicas else DeploymentState.STOPPED
        if service.rollout is not None and service.rollout.state is RolloutState.FAILED:
            state = DeploymentState.FAILED
        return DeploymentStatus(
            service_id=spec.service_id,
            namespace=spec.namespace,
            provider=self.provider_alias,
            state=state,
            desired_replicas=service.replicas,
            ready_replicas=len(service.instances),
            instances=tuple(
                InstanceStatus(instance_id=i, state="running", ready=True)
                for i in service.instances
            ),
            image=spec.image or " ".join(spec.command),
            labels=dict(spec.labels),
            spec=replace(spec, replicas=service.replicas),
            revision=service.revision,
            observed_revision=service.observed,
            rollout=service.rollout,
            conditions=self._conditions(service),
        )

    @staticmethod
    def _conditions(service: _Service) -> tuple[Condition, ...]:
        if service.rollout is None:
            return ()
        when = service.rollout.finished_at or service.rollout.started_at
        ok = service.rollout.state is RolloutState.SUCCEEDED
        return (
            Condition("Available", ok or not service.replicas, when),
            Condition("Progressing", ok, when, service.rollout.reason, service.rollout.message),
        )

    async def health(self) -> ProviderHealth:
        await self._enter("health")
        return ProviderHealth(self.provider_alias, "memory", True, "in memory")

    async def start(self, spec: DeploymentSpec) -> DeploymentStatus:
        await self._enter("start")
        key = (spec.namespace, spec.service_id)
        self._check(key)
        service = self.services.get(key)
        changed = service is None or not service.spec.runs_as(spec)
        if service is None:
            service = self.services[key] = _Service(spec, 0)
        elif changed:
            service.instances.clear()
        service.spec = spec
        self._resize(service, spec.replicas)
        if changed:
            self._record(service)
        return self._status(service)

    async def stop(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        await self._enter("stop")
        service = self._get(service_id, namespace)
        self._check((namespace, service_id))
        self._resize(service, 0)
        return self._status(service)

    async def scale(
        self, service_id: str, replicas: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        await self._enter("scale")
        service = self._get(service_id, namespace)
        self._check((namespace, service_id))
        self._resize(service, replicas)
        return self._status(service)

    async def status(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        await self._enter("status")
        return self._status(self._get(service_id, namespace))

    async def list_deployments(self, *, namespace: str | None = None) -> list[DeploymentStatus]:
        await self._enter("list_deployments")
        return [
            self._status(s)
            for (ns, _), s in self.services.items()
            if namespace is None or ns == namespace
        ]

    async def get_config(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> ServiceConfig:
        await self._enter("get_config")
        service = self._get(service_id, namespace)
        return ServiceConfig(
            service_id, namespace, dict(service.config), str(service.config_version)
        )

    async def apply_config(self, patch: ConfigMapPatch) -> ServiceConfig:
        await self._enter("apply_config")
        service = self._get(patch.service_id, patch.namespace)
        current = str(service.config_version)
        if patch.expected_version and patch.expected_version != current:
            raise ConfigVersionConflict(
                patch.service_id, patch.namespace, expected=patch.expected_version, actual=current
            )
        self._check((patch.namespace, patch.service_id))
        merged = patch.applied_to(service.config)
        if merged != service.config:
            service.config = merged
            service.config_version += 1
            self._record(service)
        return await self.get_config(patch.service_id, namespace=patch.namespace)

    async def definition(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> Definition:
        await self._enter("definition")
        service = self._get(service_id, namespace)
        return Definition(
            replace(service.spec, replicas=service.replicas),
            dict(service.config),
            str(service.config_version),
            service.revision,
        )

    async def list_revisions(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> list[Revision]:
        await self._enter("list_revisions")
        return list(reversed(self._get(service_id, namespace).revisions))

    async def rollback(
        self, service_id: str, to_revision: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        await self._enter("rollback")
        service = self._get(service_id, namespace)
        self._check((namespace, service_id))
        target = next((r for r in service.revisions if r.number == to_revision), None)
        if target is None:
            raise RevisionNotFound(service_id, namespace, to_revision)
        self._restore(service, target)
        return self._status(service)

    async def delete(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE, allow_missing: bool = False
    ) -> bool:
        await self._enter("delete")
        if (namespace, service_id) not in self.services and allow_missing:
            return False
        self._get(service_id, namespace)
        self._check((namespace, service_id))
        del self.services[(namespace, service_id)]
        return True

    async def stream_logs(
        self, service_id: str, query: LogQuery, *, namespace: str = DEFAULT_NAMESPACE
    ) -> AsyncGenerator[LogEntry, None]:
        await self._enter("stream_logs")
        service = self._get(service_id, namespace)
        sent: dict[str, int] = {}
        while True:
            now = datetime.now(UTC)
            for instance in list(service.instances):
                written = int((now - service.born[instance]).total_seconds() / LINE_SECONDS)
                first = sent.get(instance, max(0, written - query.tail))
                for n in range(first, written):
                    entry = self._line(service, instance, n)
                    if query.wants(entry):
                        yield entry
                sent[instance] = written
            if not query.follow:
                return
            await asyncio.sleep(LINE_SECONDS)

    def _line(self, service: _Service, instance: str, n: int) -> LogEntry:
        when = service.born[instance] + timedelta(seconds=(n + 1) * LINE_SECONDS)
        return LogEntry(instance, when, f"{instance} line {n}", LogStreamKind.STDOUT)

    async def stream_metrics(
        self,
        service_id: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        interval_seconds: float = 10.0,
    ) -> AsyncGenerator[MetricSample, None]:
        await self._enter("stream_metrics")
        service = self._get(service_id, namespace)
        self.open_streams += 1
        cadence = Cadence(interval_seconds)
        try:
            while True:
                yield self._sample(service, interval_seconds)
                await cadence.wait()
        finally:
            self.open_streams -= 1

    def _sample(self, service: _Service, interval_seconds: float) -> MetricSample:
        self.polls += 1
        return MetricSample(
            service_id=service.spec.service_id,
            namespace=service.spec.namespace,
            provider=self.provider_alias,
            timestamp=datetime.now(UTC),
            replicas=len(service.instances),
            cpu_percent=1.5 * len(service.instances),
            memory_bytes=1024 * 1024 * len(service.instances),
            extra={"interval_seconds": interval_seconds, "poll": self.polls},
        )


class ConfiglessProvider(MemoryProvider):
    """A provider without the optional config capability (for UNIMPLEMENTED)."""

    provider_alias = "configless"
    get_config = InfrastructureProvider.get_config
    apply_config = InfrastructureProvider.apply_config


class PlainProvider(MemoryProvider):
    """A provider that keeps no revisions (for UNIMPLEMENTED on revision fields)."""

    provider_alias = "plain"
    definition = InfrastructureProvider.definition
    list_revisions = InfrastructureProvider.list_revisions
    rollback = InfrastructureProvider.rollback
