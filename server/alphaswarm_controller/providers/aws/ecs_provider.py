"""``EcsProvider``: the ``aws`` alias in ECS mode (services on ECS, config in SSM, metrics
and logs from CloudWatch, revisions as task-definition revisions). The package
docstring lists the settings; docs/providers.md the IAM actions."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Mapping
from datetime import UTC, datetime
from typing import ClassVar

from alphaswarm_core.providers.cadence import Cadence
from alphaswarm_core.providers.concurrency import BlockingRunner, remaining_timeout
from alphaswarm_core.providers.protocol import (
    DEFAULT_NAMESPACE,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigMapPatch,
    Definition,
    DeploymentNotFoundError,
    DeploymentSpec,
    DeploymentStatus,
    FieldViolation,
    InfrastructureProvider,
    InvalidSpecError,
    LogEntry,
    LogQuery,
    MetricSample,
    ProviderHealth,
    ProviderKind,
    Revision,
    ServiceConfig,
)

from .account import AwsAccount
from .claims import RevisionClaims
from .config import DEFAULT_TIER, TIERS, SsmConfig, check_values
from .ecs import EcsDeployments
from .logread import LogReader, read_logs
from .logs import DEFAULT_RETENTION_DAYS, NO_EXPIRY, RETENTION_DAYS, TASK_ID, delete_log_group
from .metrics import cpu_percent_of_one_core, reserved_memory_bytes, utilization
from .revisions import DEFAULT_HISTORY, EcsRevisions
from .taskdef import OPTION_SETTINGS, EcsPlan, log_group, plan_for, service_name
from .teardown import delete_revisions, delete_service, service_status

log = logging.getLogger(__name__)

DEFAULT_LOGS_POLL_SECONDS = 2.0
DRAIN_WAIT_SECONDS = 60.0
"""How long ``delete`` waits for ECS to stop the tasks (the service turning INACTIVE)."""
DRAIN_POLL_SECONDS = 1.0
MIN_HISTORY, MAX_HISTORY = 2, 100


class EcsProvider(InfrastructureProvider):
    """Each service is an ECS service (Fargate by default) in ``ALPHASWARM_AWS_ECS_CLUSTER``."""

    provider_kind: ClassVar[ProviderKind | str] = ProviderKind.AWS
    provider_alias: ClassVar[str] = "aws"

    def __init__(
        self, *, env: Mapping[str, str] | None = None, runner: BlockingRunner | None = None
    ) -> None:
        super().__init__(env=env, runner=runner)
        self.account = AwsAccount(self.env)
        self.clients = self.account.clients
        self._ecs: EcsDeployments | None = None
        self._config: SsmConfig | None = None
        self._revisions: EcsRevisions | None = None

    # -- plumbing -----------------------------------------------------------------------

    def ecs(self) -> EcsDeployments:
        if self._ecs is None:
            self.account.check_region()
            cluster = self.setting_required("ECS_CLUSTER")
            retention = self.setting_choice(
                "LOG_RETENTION_DAYS",
                tuple(str(days) for days in (NO_EXPIRY, *RETENTION_DAYS)),
                str(DEFAULT_RETENTION_DAYS),
            )
            self._ecs = EcsDeployments(
                self.clients, cluster, self.provider_alias, log_retention_days=int(retention)
            )
        return self._ecs

    def config_store(self) -> SsmConfig:
        if self._config is None:
            tier = self.setting_choice("SSM_TIER", tuple(TIERS), DEFAULT_TIER)
            self._config = SsmConfig(
                self.clients, kms_key_id=self.setting("SSM_KMS_KEY_ID"), tier=tier
            )
        return self._config

    def revisions(self) -> EcsRevisions:
        if self._revisions is None:
            history = self.setting_int(
                "REVISION_HISTORY", DEFAULT_HISTORY, minimum=MIN_HISTORY, maximum=MAX_HISTORY
            )
            self._revisions = EcsRevisions(
                self.ecs(),
                self.config_store(),
                RevisionClaims(self.clients),
                self._plan,
                history=history,
            )
        return self._revisions

    def _plan(self, spec: DeploymentSpec) -> EcsPlan:
        return plan_for(spec, self._option_settings(), self.account.region)

    def _option_settings(self) -> dict[str, str]:
        settings = {suffix: self.setting(suffix) for suffix in OPTION_SETTINGS.values()}
        return {k: v for k, v in settings.items() if v}

    def _check_credentials(self) -> None:
        self.account.check_credentials()

    # -- required -----------------------------------------------------------------------

    async def health(self) -> ProviderHealth:
        self.account.check_region()
        ecs = self.ecs()
        await self.run_blocking(self._check_credentials)
        details = {"mode": "ecs", **await self.run_blocking(self.account.identity)}
        cluster = await self.run_blocking(ecs.check_cluster)
        details["ecs_cluster"] = str(cluster.get("clusterArn", ecs.cluster))
        return ProviderHealth(
            alias=self.provider_alias,
            kind=ProviderKind.AWS.value,
            healthy=True,
            message=f"ECS cluster {ecs.cluster} in {self.account.region}",
            details=details,
        )

    async def start(self, spec: DeploymentSpec) -> DeploymentStatus:
        revisions = self.revisions()
        plan = self._plan(spec)  # validates before any call
        await self.run_blocking(revisions.start, spec, plan)
        return await self._observed(spec.service_id, spec.namespace)

    async def _observed(self, service_id: str, namespace: str) -> DeploymentStatus:
        """The status after a change (as ``status``, without acting on the rollout)."""
        observed = await self.run_blocking(self.revisions().observe, namespace, service_id)
        return observed.status

    async def stop(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        return await self.scale(service_id, 0, namespace=namespace)

    async def scale(
        self, service_id: str, replicas: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        revisions = self.revisions()
        await self.run_blocking(revisions.check_expected, namespace, service_id)
        service = await self.run_blocking(revisions.ecs.require, namespace, service_id)
        await self.run_blocking(revisions.ecs.scale, service, replicas)
        return await self._observed(service_id, namespace)

    async def status(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        return await self.run_blocking(self.revisions().status, namespace, service_id)

    async def list_deployments(self, *, namespace: str | None = None) -> list[DeploymentStatus]:
        return await self.run_blocking(self.ecs().list, namespace)

    # -- config -------------------------------------------------------------------------

    async def get_config(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> ServiceConfig:
        await self.run_blocking(self.ecs().require, namespace, service_id)  # NOT_FOUND first
        return await self.run_blocking(self.config_store().read, namespace, service_id)

    async def apply_config(self, patch: ConfigMapPatch) -> ServiceConfig:
        """Commit the new generation and roll the service onto it as a new revision
        (revisions.py), then sweep generations no revision still needs."""
        revisions = self.revisions()
        check_values(patch, revisions.store.tier)  # before any call
        return await self.run_blocking(revisions.apply_config, patch)

    # -- revisions ----------------------------------------------------------------------

    async def definition(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> Definition:
        return await self.run_blocking(self.revisions().definition, namespace, service_id)

    async def list_revisions(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> list[Revision]:
        return await self.run_blocking(self.revisions().list_revisions, namespace, service_id)

    async def rollback(
        self, service_id: str, to_revision: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        revisions = self.revisions()
        await self.run_blocking(revisions.rollback, namespace, service_id, to_revision)
        return await self._observed(service_id, namespace)

    # -- metrics ------------------------------------------------------------------------

    async def stream_metrics(
        self,
        service_id: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        interval_seconds: float = 10.0,
    ) -> AsyncGenerator[MetricSample, None]:
        ecs = self.ecs()
        cadence = Cadence(interval_seconds)
        while True:  # the first sample's status read raises NOT_FOUND for an unknown service
            yield await self._sample(ecs, service_id, namespace)
            await cadence.wait()

    async def _sample(self, ecs: EcsDeployments, service_id: str, namespace: str) -> MetricSample:
        now = datetime.now(UTC)
        try:
            status, ready_tasks = await self.run_blocking(ecs.observe, namespace, service_id)
            name = service_name(namespace, service_id)
            used = await self.run_blocking(utilization, self.clients, ecs.cluster, name)
        except (BackendUnavailableError, BackendTimeoutError) as exc:
            return MetricSample(
                service_id, namespace, self.provider_alias, now, 0, ok=False, error=exc.message
            )
        extra = {"running_tasks": float(len(ready_tasks))}
        if used.cpu_percent is not None:
            extra["cpu_utilization_percent"] = used.cpu_percent
        if used.memory_percent is not None:
            extra["memory_utilization_percent"] = used.memory_percent
        missing = [
            metric
            for metric, value in (
                ("CPUUtilization", used.cpu_percent),
                ("MemoryUtilization", used.memory_percent),
            )
            if value is None
        ]
        return MetricSample(
            service_id=service_id,
            namespace=namespace,
            provider=self.provider_alias,
            timestamp=now,
            replicas=status.ready_replicas,
            cpu_percent=cpu_percent_of_one_core(used.cpu_percent or 0.0, ready_tasks),
            memory_bytes=round(
                (used.memory_percent or 0.0) / 100 * reserved_memory_bytes(ready_tasks)
            ),
            ok=not missing or status.ready_replicas == 0,
            error=f"no CloudWatch datapoint yet for AWS/ECS {', '.join(missing)}"
            if missing and status.ready_replicas
            else "",
            extra=extra,
        )

    # -- logs ---------------------------------------------------------------------------

    async def stream_logs(
        self, service_id: str, query: LogQuery, *, namespace: str = DEFAULT_NAMESPACE
    ) -> AsyncGenerator[LogEntry, None]:
        """What the tasks wrote, from the service's CloudWatch Logs group (``logread``)."""
        if query.instance_id and not TASK_ID.fullmatch(query.instance_id):
            raise InvalidSpecError(
                [FieldViolation("instance_id", "not an ECS task id (32 hex digits or a UUID)")]
            )
        ecs = self.ecs()
        poll = self.setting_seconds(
            "LOGS_POLL_INTERVAL", DEFAULT_LOGS_POLL_SECONDS, minimum=1.0, maximum=60.0
        )
        service = await self.run_blocking(ecs.require, namespace, service_id)
        if query.instance_id:
            tasks = [query.instance_id]
        else:
            tasks = await self.run_blocking(ecs.task_ids, str(service["serviceName"]))
        reader = LogReader(self.clients, log_group(namespace, service_id))
        async for entry in read_logs(
            self, reader, tasks, query, poll_seconds=poll, only_task=query.instance_id
        ):
            yield entry

    # -- delete -------------------------------------------------------------------------

    async def delete(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE, allow_missing: bool = False
    ) -> bool:
        """Delete the ECS service (scaled to zero first), every task definition revision of
        its family, its SSM parameters (every generation) and its log group, then wait
        (bounded) for ECS to finish stopping the tasks.

        Each step is idempotent, so a delete that failed half-way is completed by the next
        one; NOT_FOUND (False with ``allow_missing``) only when none of them found anything
        (a service ECS still drains was deleted already, as status says).
        """
        ecs = self.ecs()
        store = self.config_store()
        name = service_name(namespace, service_id)
        await self.run_blocking(self.revisions().check_expected, namespace, service_id)
        service = await self.run_blocking(ecs.describe_one, namespace, service_id, draining=True)
        active = service is not None and service.get("status") == "ACTIVE"
        if service is not None and active:
            await self.run_blocking(delete_service, self.clients, ecs.cluster, service)
        revisions = await self.run_blocking(delete_revisions, self.clients, name)
        parameters = await self.run_blocking(store.delete_all, namespace, service_id)
        group = await self.run_blocking(
            delete_log_group, self.clients, log_group(namespace, service_id)
        )
        # A DRAINING service was deleted already: like status, that is NOT_FOUND.
        if not (active or revisions or parameters or group):
            if allow_missing:
                return False
            raise DeploymentNotFoundError(service_id, namespace)
        if service is not None:
            await self._drained(ecs.cluster, name)
        return True

    async def _drained(self, cluster: str, name: str) -> bool:
        """Wait until ECS reports the deleted service INACTIVE, within the call's deadline
        and ``DRAIN_WAIT_SECONDS``; False when it was still DRAINING (a start of the same
        name is UNAVAILABLE until it is not)."""
        deadline = time.monotonic() + remaining_timeout(DRAIN_WAIT_SECONDS) - DRAIN_POLL_SECONDS
        while True:
            try:
                status = await self.run_blocking(service_status, self.clients, cluster, name)
            except (BackendUnavailableError, BackendTimeoutError) as exc:
                log.warning("could not see %s drain: %s", name, exc.message)
                return False
            if status in ("INACTIVE", ""):
                return True
            if time.monotonic() + DRAIN_POLL_SECONDS > deadline:
                log.info("%s is still draining; ECS finishes stopping its tasks", name)
                return False
            await asyncio.sleep(DRAIN_POLL_SECONDS)
