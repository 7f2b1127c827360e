"""``EcsProvider``: the ``aws`` alias in ECS mode (services on ECS, config in SSM, metrics
from CloudWatch). The package docstring lists the settings and IAM actions."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Mapping
from datetime import UTC, datetime
from typing import ClassVar

from alphaswarm_core.providers.concurrency import BlockingRunner
from alphaswarm_core.providers.protocol import (
    DEFAULT_NAMESPACE,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigMapPatch,
    DeploymentSpec,
    DeploymentStatus,
    InfrastructureProvider,
    InfrastructureProviderError,
    MetricSample,
    ProviderHealth,
    ProviderKind,
    ServiceConfig,
)

from .account import AwsAccount
from .config import DEFAULT_TIER, TIERS, SsmConfig, base_path, check_values
from .ecs import EcsDeployments
from .metrics import cpu_percent_of_one_core, reserved_memory_bytes, utilization
from .taskdef import OPTION_SETTINGS, plan_for, service_name

log = logging.getLogger(__name__)


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

    # -- plumbing -----------------------------------------------------------------------

    def ecs(self) -> EcsDeployments:
        if self._ecs is None:
            self.account.check_region()
            cluster = self.setting_required("ECS_CLUSTER")
            self._ecs = EcsDeployments(self.clients, cluster, self.provider_alias)
        return self._ecs

    def config_store(self) -> SsmConfig:
        if self._config is None:
            tier = self.setting_choice("SSM_TIER", tuple(TIERS), DEFAULT_TIER)
            self._config = SsmConfig(
                self.clients, kms_key_id=self.setting("SSM_KMS_KEY_ID"), tier=tier
            )
        return self._config

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
        ecs = self.ecs()
        plan = plan_for(spec, self._option_settings(), self.account.region)  # before any call
        store = self.config_store()
        generation = await self.run_blocking(store.current, spec.namespace, spec.service_id)
        path = generation.path(base_path(spec.namespace, spec.service_id))
        return await self.run_blocking(ecs.start, spec, plan, path)

    async def stop(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        return await self.run_blocking(self.ecs().scale, namespace, service_id, 0)

    async def scale(
        self, service_id: str, replicas: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        return await self.run_blocking(self.ecs().scale, namespace, service_id, replicas)

    async def status(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        return await self.run_blocking(self.ecs().status, namespace, service_id)

    async def list_deployments(self, *, namespace: str | None = None) -> list[DeploymentStatus]:
        return await self.run_blocking(self.ecs().list, namespace)

    # -- config -------------------------------------------------------------------------

    async def get_config(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> ServiceConfig:
        await self.run_blocking(self.ecs().require, namespace, service_id)  # NOT_FOUND first
        return await self.run_blocking(self.config_store().read, namespace, service_id)

    async def apply_config(self, patch: ConfigMapPatch) -> ServiceConfig:
        """Commit the new generation, then roll the service onto it (a task definition that
        names it), then sweep generations no revision still needs."""
        store = self.config_store()
        check_values(patch, store.tier)  # before any call
        ecs = self.ecs()
        namespace, service_id = patch.namespace, patch.service_id
        await self.run_blocking(ecs.require, namespace, service_id)
        applied, generation = await self.run_blocking(store.apply, patch)
        path = generation.path(base_path(namespace, service_id))
        await self.run_blocking(ecs.roll_onto_config, namespace, service_id, path)
        try:
            await self.run_blocking(store.sweep, namespace, service_id, generation)
        except InfrastructureProviderError as exc:  # leftovers are swept by the next apply
            log.warning("could not sweep old config of %s/%s: %s", namespace, service_id, exc)
        return applied

    # -- metrics ------------------------------------------------------------------------

    async def stream_metrics(
        self,
        service_id: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        interval_seconds: float = 10.0,
    ) -> AsyncGenerator[MetricSample, None]:
        ecs = self.ecs()
        while True:  # the first sample's status read raises NOT_FOUND for an unknown service
            began = time.monotonic()
            yield await self._sample(ecs, service_id, namespace)
            await asyncio.sleep(max(0.0, interval_seconds - (time.monotonic() - began)))

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
