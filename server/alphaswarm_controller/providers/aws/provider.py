"""The ``aws`` provider: ECS services (default) or an EKS cluster, through boto3.

Settings (``ALPHASWARM_AWS_*``; AWS's own variables for everything boto3 reads):

==============================  ==================================================
``MODE``                        ``ecs`` (default) or ``eks``
``ECS_CLUSTER``                 ECS cluster name or ARN (required in ECS mode)
``EKS_CLUSTER``                 EKS cluster name (required in EKS mode)
``REGION``                      else ``AWS_REGION`` / ``AWS_DEFAULT_REGION``
``LAUNCH_TYPE``                 ``FARGATE`` (default) or ``EC2``
``SUBNETS``                     comma list; awsvpc subnets for the tasks
``SECURITY_GROUPS``             comma list
``ASSIGN_PUBLIC_IP``            ``true``/``false`` (default false)
``EXECUTION_ROLE_ARN``          task execution role (ECR pulls, logs, secrets)
``TASK_ROLE_ARN``               role the containers run as (reads their SSM config)
``PLATFORM_VERSION``            Fargate platform version
``SSM_KMS_KEY_ID``              KMS key for ``secret.*`` config keys
==============================  ==================================================

Each of LAUNCH_TYPE..PLATFORM_VERSION can be overridden per spec by the
provider option of the same name in lower case (``subnets``, ``launch_type``...).
Credentials come from boto3's standard chain; endpoints from
``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_<SERVICE>`` (how the tests point
it at moto).

IAM minimum (ECS mode): sts:GetCallerIdentity, ecs:DescribeClusters,
ecs:ListServices, ecs:DescribeServices, ecs:CreateService, ecs:UpdateService,
ecs:TagResource, ecs:UntagResource, ecs:ListTasks, ecs:DescribeTasks,
ecs:ListTaskDefinitions, ecs:DescribeTaskDefinition,
ecs:RegisterTaskDefinition, ecs:DeregisterTaskDefinition, iam:PassRole (for
the execution/task roles), ssm:GetParameter, ssm:GetParametersByPath,
ssm:PutParameter, ssm:DeleteParameters, kms:Encrypt (for ``secret.*`` keys),
cloudwatch:GetMetricData. EKS mode: sts:GetCallerIdentity, eks:DescribeCluster
plus the cluster RBAC the kubernetes provider documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Mapping
from datetime import UTC, datetime
from typing import Any

from alphaswarm_core.providers.concurrency import BlockingRunner
from alphaswarm_core.providers.protocol import (
    DEFAULT_NAMESPACE,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigMapPatch,
    DeploymentSpec,
    DeploymentStatus,
    InfrastructureProvider,
    InfrastructureProviderUnavailable,
    MetricSample,
    ProviderHealth,
    ProviderKind,
    ServiceConfig,
)
from alphaswarm_core.providers.reasons import ErrorReason

from .clients import Clients
from .config import SsmConfig
from .ecs import EcsDeployments
from .errors import credentials_missing
from .metrics import reserved_memory_bytes, utilization
from .taskdef import OPTION_SETTINGS, service_name

MODES = ("ecs", "eks")


class AwsProvider(InfrastructureProvider):
    provider_kind = ProviderKind.AWS
    provider_alias = "aws"

    def __init__(
        self, *, env: Mapping[str, str] | None = None, runner: BlockingRunner | None = None
    ) -> None:
        super().__init__(env=env, runner=runner)
        self.mode = self.setting("MODE", "ecs").strip().lower() or "ecs"
        self.clients = Clients(self.env)
        self._ecs: EcsDeployments | None = None
        self._config = SsmConfig(self.clients, self.setting("SSM_KMS_KEY_ID"))
        self._eks: Any = None
        self._eks_lock = asyncio.Lock()

    # -- plumbing -----------------------------------------------------------------------

    def _setting_required(self, name: str, what: str) -> str:
        value = self.setting(name).strip()
        if not value:
            key = f"ALPHASWARM_AWS_{name}"
            raise InfrastructureProviderUnavailable(
                f"the aws provider needs {key} ({what})",
                reason=ErrorReason.SETTING_INVALID,
                metadata={"setting": key},
            )
        return value

    def _check_mode(self) -> None:
        if self.mode not in MODES:
            raise InfrastructureProviderUnavailable(
                f"ALPHASWARM_AWS_MODE must be one of {', '.join(MODES)}, not {self.mode!r}",
                reason=ErrorReason.SETTING_INVALID,
                metadata={"setting": "ALPHASWARM_AWS_MODE"},
            )
        if not self.clients.region:
            raise InfrastructureProviderUnavailable(
                "no AWS region configured: set ALPHASWARM_AWS_REGION, AWS_REGION or "
                "AWS_DEFAULT_REGION",
                reason=ErrorReason.SETTING_INVALID,
                metadata={"env": "ALPHASWARM_AWS_REGION,AWS_REGION,AWS_DEFAULT_REGION"},
            )

    def ecs(self) -> EcsDeployments:
        if self._ecs is None:
            self._check_mode()
            cluster = self._setting_required("ECS_CLUSTER", "the ECS cluster to run services in")
            settings = {suffix: self.setting(suffix) for suffix in OPTION_SETTINGS.values()}
            settings = {k: v for k, v in settings.items() if v}
            self._ecs = EcsDeployments(self.clients, cluster, settings, self.provider_alias)
        return self._ecs

    async def _kube(self) -> InfrastructureProvider:
        async with self._eks_lock:
            if self._eks is None:
                from .eks import kubernetes_provider_for

                self._check_mode()
                cluster = self._setting_required("EKS_CLUSTER", "the EKS cluster to deploy to")
                provider = await self.run_blocking(
                    kubernetes_provider_for, self.clients, cluster, self.env, self.provider_alias
                )
                await provider.open()
                self._eks = provider
        assert isinstance(self._eks, InfrastructureProvider)
        return self._eks

    def _check_credentials(self) -> None:
        if self.clients.session().get_credentials() is None:
            raise credentials_missing()

    async def close(self) -> None:
        if self._eks is not None:
            await self._eks.close()
            self._eks = None

    # -- required -----------------------------------------------------------------------

    async def health(self) -> ProviderHealth:
        self._check_mode()
        await self.run_blocking(self._check_credentials)
        identity = await self.run_blocking(self.clients.call, "sts", "GetCallerIdentity")
        details = {
            "mode": self.mode,
            "region": self.clients.region,
            "account": str(identity.get("Account", "")),
            "identity": str(identity.get("Arn", "")),
        }
        if self.mode == "eks":
            kube = await self._kube()
            inner = await kube.health()
            details["eks_cluster"] = self.setting("EKS_CLUSTER")
            details.update({f"kubernetes.{k}": v for k, v in inner.details.items()})
            message = f"EKS cluster {details['eks_cluster']}: {inner.message}"
        else:
            ecs = self.ecs()
            cluster = await self.run_blocking(ecs.check_cluster)
            details["ecs_cluster"] = str(cluster.get("clusterArn", ecs.cluster))
            message = f"ECS cluster {ecs.cluster} in {self.clients.region}"
        return ProviderHealth(
            alias=self.provider_alias,
            kind=ProviderKind.AWS.value,
            healthy=True,
            message=message,
            details=details,
        )

    async def start(self, spec: DeploymentSpec) -> DeploymentStatus:
        if self.mode == "eks":
            return await (await self._kube()).start(spec)
        return await self.run_blocking(self.ecs().start, spec)

    async def stop(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        if self.mode == "eks":
            return await (await self._kube()).stop(service_id, namespace=namespace)
        return await self.run_blocking(self.ecs().scale, namespace, service_id, 0)

    async def scale(
        self, service_id: str, replicas: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        if self.mode == "eks":
            return await (await self._kube()).scale(service_id, replicas, namespace=namespace)
        return await self.run_blocking(self.ecs().scale, namespace, service_id, replicas)

    async def status(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        if self.mode == "eks":
            return await (await self._kube()).status(service_id, namespace=namespace)
        return await self.run_blocking(self.ecs().status, namespace, service_id)

    async def list_deployments(self, *, namespace: str | None = None) -> list[DeploymentStatus]:
        if self.mode == "eks":
            return await (await self._kube()).list_deployments(namespace=namespace)
        return await self.run_blocking(self.ecs().list, namespace)

    # -- config -------------------------------------------------------------------------

    async def get_config(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> ServiceConfig:
        if self.mode == "eks":
            return await (await self._kube()).get_config(service_id, namespace=namespace)
        ns = namespace
        await self.run_blocking(self.ecs().require, ns, service_id)  # NOT_FOUND when unknown
        return await self.run_blocking(self._config.read, ns, service_id)

    async def apply_config(self, patch: ConfigMapPatch) -> ServiceConfig:
        if self.mode == "eks":
            return await (await self._kube()).apply_config(patch)
        ecs = self.ecs()
        ns = patch.namespace
        await self.run_blocking(ecs.require, ns, patch.service_id)
        applied = await self.run_blocking(self._config.apply, patch)
        await self.run_blocking(ecs.redeploy, ns, patch.service_id)
        return applied

    # -- metrics ------------------------------------------------------------------------

    async def stream_metrics(
        self,
        service_id: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        interval_seconds: float = 10.0,
    ) -> AsyncGenerator[MetricSample, None]:
        if self.mode == "eks":
            samples = self._eks_metrics(service_id, namespace, interval_seconds)
        else:
            samples = self._ecs_metrics(self.ecs(), service_id, namespace, interval_seconds)
        async with contextlib.aclosing(samples):
            async for sample in samples:
                yield sample

    async def _eks_metrics(
        self, service_id: str, namespace: str, interval: float
    ) -> AsyncGenerator[MetricSample, None]:
        kube = await self._kube()
        async for sample in kube.stream_metrics(
            service_id, namespace=namespace, interval_seconds=interval
        ):
            yield sample

    async def _ecs_metrics(
        self, ecs: EcsDeployments, service_id: str, namespace: str, interval: float
    ) -> AsyncGenerator[MetricSample, None]:
        while True:
            began = time.monotonic()
            yield await self._ecs_sample(ecs, service_id, namespace)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - began)))

    async def _ecs_sample(
        self, ecs: EcsDeployments, service_id: str, namespace: str
    ) -> MetricSample:
        now = datetime.now(UTC)
        try:
            status, ready_tasks = await self.run_blocking(ecs.observe, namespace, service_id)
            name = service_name(namespace, service_id)
            used = await self.run_blocking(utilization, self.clients, ecs.cluster, name)
        except (BackendUnavailableError, BackendTimeoutError) as exc:
            return MetricSample(
                service_id, namespace, self.provider_alias, now, 0, ok=False, error=exc.message
            )
        reserved = reserved_memory_bytes(ready_tasks)
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
            cpu_percent=used.cpu_percent or 0.0,
            memory_bytes=round((used.memory_percent or 0.0) / 100 * reserved),
            ok=not missing or status.ready_replicas == 0,
            error=f"no CloudWatch datapoint yet for AWS/ECS {', '.join(missing)}"
            if missing and status.ready_replicas
            else "",
            extra=extra,
        )
