"""The ``azure`` provider: Azure Container Instances (default) or AKS.

Container Instances mode keeps no state of its own: a replica is a container
group, its tags say which service, ordinal, spec and config version it carries,
and a stopped service is its ordinal-0 group kept stopped (ACI's ``stop``) and
tagged ``alphaswarm-stopped`` so that it stays known and ``start``/``scale``
bring it back. AKS mode fetches the cluster's user credentials and delegates to
the kubernetes provider. Settings and design: the package docstring.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.core.paging import ItemPaged
from azure.mgmt.containerinstance import models as aci_models

from alphaswarm_core.providers.concurrency import BlockingRunner, remaining_timeout
from alphaswarm_core.providers.models import masked_config
from alphaswarm_core.providers.protocol import (
    DEFAULT_NAMESPACE,
    BackendRejectedError,
    ConfigMapPatch,
    ConfigVersionConflict,
    DeploymentNotFoundError,
    DeploymentSpec,
    DeploymentStatus,
    InfrastructureProvider,
    InfrastructureProviderError,
    MetricSample,
    ProviderHealth,
    ProviderKind,
    ServiceConfig,
)
from alphaswarm_core.providers.reasons import ErrorReason

from . import aci, config
from .aks import fetch_credentials
from .clients import MANAGEMENT_SCOPE, AzureClients, AzureSettings, default_credential
from .errors import azure_errors, credentials_missing
from .gateway import AciGateway, timeouts
from .metrics import GroupMetrics, aggregate, read_group_metrics
from .status import deployment_status


def _secrets_unreadable(keys: Sequence[str], what: str) -> BackendRejectedError:
    return BackendRejectedError(
        f"cannot {what}: Azure never returns secure environment values, so the secret config "
        f"keys {', '.join(keys)} cannot be copied into a new container group; remove them "
        "with apply_config, do this, then set them again",
        reason=ErrorReason.SECRET_VALUES_UNREADABLE,
        metadata={"keys": ",".join(keys)},
    )


class AzureProvider(InfrastructureProvider):
    provider_kind = ProviderKind.AZURE
    provider_alias = "azure"

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        runner: BlockingRunner | None = None,
        credential: TokenCredential | None = None,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        """``credential`` replaces azure-identity's default chain; ``client_options`` go to
        every azure-mgmt client (transport, retry_total, per_call_policies...)."""
        super().__init__(env=env, runner=runner)
        prefix = f"ALPHASWARM_{self.provider_alias.upper()}_"
        self.settings = AzureSettings.from_env(prefix, self.env)
        self._credential = credential
        self._client_options = dict(client_options or {})
        self._clients: AzureClients | None = None
        self._gateway: AciGateway | None = None
        self._kube: InfrastructureProvider | None = None
        self._kube_lock = asyncio.Lock()

    # -- plumbing ------------------------------------------------------------------------------

    def _check_credentials(self) -> None:
        self.settings.require(self.provider_alias)

    @property
    def clients(self) -> AzureClients:
        if self._clients is None:
            self._check_credentials()
            credential = self._credential or default_credential()
            self._clients = AzureClients(self.settings, credential, self._client_options)
        return self._clients

    @property
    def gateway(self) -> AciGateway:
        if self._gateway is None:
            self._gateway = AciGateway(self, self.clients, self.settings)
        return self._gateway

    async def close(self) -> None:
        if self._kube is not None:
            await self._kube.close()
        if self._clients is not None:
            self._clients.close()
            owned = self._clients.credential if self._credential is None else None
            closer = getattr(owned, "close", None)
            if callable(closer):
                closer()

    async def _aks(self) -> InfrastructureProvider | None:
        """The kubernetes provider driving the AKS cluster (AKS mode), connected once."""
        if self.settings.mode != "aks":
            return None
        async with self._kube_lock:
            if self._kube is None:
                self._kube = await self._connect_aks()
        return self._kube

    async def _connect_aks(self) -> InfrastructureProvider:
        clients = self.clients
        with azure_errors(alias=self.provider_alias, resource_group=self.settings.resource_group):
            creds = await self.run_blocking(
                fetch_credentials,
                clients.aks,
                self.settings.resource_group,
                self.settings.aks_cluster,
                remaining_timeout(),
            )
        from alphaswarm_controller.providers.kubernetes import (
            ClusterConnection,
            KubernetesProvider,
        )

        connection = ClusterConnection(
            endpoint=creds.endpoint,
            ca_data=creds.ca_pem,
            token=creds.token,
            description=f"AKS cluster {self.settings.aks_cluster}",
        )
        kube = KubernetesProvider.from_connection(
            connection, env=self.env, alias=self.provider_alias, kind=ProviderKind.AZURE.value
        )
        await kube.open()
        return kube

    async def _replicas(self, service_id: str, namespace: str) -> list[aci.Replica]:
        groups = await self.gateway.list_groups()
        return aci.group_replicas(groups, namespace).get((namespace, service_id), [])

    async def _found(self, service_id: str, namespace: str) -> list[aci.Replica]:
        replicas = await self._replicas(service_id, namespace)
        if not replicas:
            raise DeploymentNotFoundError(service_id, namespace)
        return replicas

    async def _observe(self, service_id: str, namespace: str) -> DeploymentStatus:
        replicas = await self._found(service_id, namespace)
        views = await self.gateway.views([r for r in replicas if not r.stopped])
        return deployment_status(self.provider_alias, namespace, service_id, replicas, views)

    @staticmethod
    def _newest(replicas: Sequence[aci.Replica]) -> aci.Replica:
        """The replica with the latest config version (the one a rollout finished last)."""
        return max(replicas, key=lambda r: (r.config_version, -r.ordinal))

    async def _create_all(
        self, groups: Mapping[str, aci_models.ContainerGroup], *, wait: bool = False
    ) -> None:
        """Create ``groups`` concurrently; on any failure delete those created, re-raise."""
        gateway = self.gateway

        async def create(name: str) -> None:
            await gateway.create(name, groups[name], wait=wait)

        outcomes = await gateway.bounded(list(groups), create)
        errors = [error for _, error in outcomes if error is not None]
        if errors:
            created = [name for name, error in outcomes if error is None]
            await gateway.bounded(created, gateway.delete)
            raise errors[0]

    async def _delete_all(self, replicas: Sequence[aci.Replica]) -> None:
        gateway = self.gateway

        async def delete(replica: aci.Replica) -> None:
            await gateway.delete(replica.name)

        for _, error in await gateway.bounded(replicas, delete):
            if error is not None:
                raise error

    # -- required ------------------------------------------------------------------------------

    async def health(self) -> ProviderHealth:
        self._check_credentials()
        clients = self.clients
        # Any credential failure (no source, or a source that refuses) reads as "missing";
        # network errors towards Entra ID are UNAVAILABLE.
        with azure_errors(alias=self.provider_alias, resource_group=self.settings.resource_group):
            try:
                await self.run_blocking(clients.credential.get_token, MANAGEMENT_SCOPE)
            except ClientAuthenticationError as error:
                raise credentials_missing(self.provider_alias) from error
        details = {
            "mode": self.settings.mode,
            "subscription_id": self.settings.subscription_id,
            "resource_group": self.settings.resource_group,
            "arm_endpoint": self.settings.arm_endpoint,
        }
        kube = await self._aks()
        if kube is not None:
            inner = await kube.health()
            details.update({"aks_cluster": self.settings.aks_cluster, **inner.details})
            return ProviderHealth(
                self.provider_alias,
                ProviderKind.AZURE.value,
                inner.healthy,
                f"AKS cluster {self.settings.aks_cluster}: {inner.message}",
                details,
            )
        ops = clients.aci.container_groups

        def probe() -> None:
            listing = ops.list_by_resource_group(self.settings.resource_group, **timeouts())
            pages = cast(ItemPaged[aci_models.ContainerGroup], listing).by_page()
            next(iter(pages), None)

        await self.gateway.call(probe)
        details["location"] = self.settings.location
        return ProviderHealth(
            self.provider_alias,
            ProviderKind.AZURE.value,
            True,
            f"Container Instances in resource group {self.settings.resource_group}",
            details,
        )

    async def start(self, spec: DeploymentSpec) -> DeploymentStatus:
        kube = await self._aks()
        if kube is not None:
            return await kube.start(spec)
        aci.check_spec(spec)
        namespace, service = spec.namespace, spec.service_id
        groups = await self.gateway.list_groups()
        wanted = max(spec.replicas, 1)
        names = {aci.group_name(namespace, service, i) for i in range(wanted)}
        for group in groups:
            owner = aci.as_replica(group)
            if group.name in names and (
                owner is None or (owner.namespace, owner.service_id) != (namespace, service)
            ):
                raise BackendRejectedError(
                    f"container group {group.name!r} already exists and belongs to "
                    f"{'another service' if owner else 'something alphaswarm did not create'}",
                    reason=ErrorReason.NAME_TAKEN,
                    metadata={"container_group": str(group.name)},
                )
        replicas = aci.group_replicas(groups, namespace).get((namespace, service), [])
        data: dict[str, str] = {}
        version = "0"
        if replicas:
            newest = self._newest(replicas)
            data, version = config.read_config(newest.group), str(newest.config_version)
        target = aci.spec_hash(spec)
        by_ordinal = {r.ordinal: r for r in replicas}
        stale = [r for r in replicas if r.ordinal < wanted and r.spec_hash != target]
        missing = [i for i in range(wanted) if i not in by_ordinal]
        if (stale or missing) and config.unreadable_secrets(data):
            raise _secrets_unreadable(config.unreadable_secrets(data), "create container groups")
        environment = config.environment(spec.env, data)

        def build(ordinal: int) -> aci_models.ContainerGroup:
            return aci.build_group(
                spec,
                ordinal=ordinal,
                location=self.settings.location,
                environment=environment,
                config_version=version,
            )

        await self._delete_all([r for r in replicas if r.ordinal >= wanted] + stale)
        rebuilt = [r.ordinal for r in stale]
        await self._create_all(
            {aci.group_name(namespace, service, i): build(i) for i in missing + rebuilt},
            wait=spec.replicas == 0,
        )
        fresh = await self._replicas(service, namespace)
        if spec.replicas == 0:
            await self._stop_keeping_first(fresh)
        else:
            restart = [r for r in fresh if r.stopped and r.ordinal < wanted]
            for _, error in await self.gateway.bounded(restart, self.gateway.start):
                if error is not None:
                    raise error
        return await self._observe(service, namespace)

    async def _stop_keeping_first(self, replicas: Sequence[aci.Replica]) -> None:
        """Delete every replica but the first, and keep that one stopped."""
        keep, *rest = sorted(replicas, key=lambda r: r.ordinal)
        await self._delete_all(rest)
        await self.gateway.stop(keep)

    async def stop(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        kube = await self._aks()
        if kube is not None:
            return await kube.stop(service_id, namespace=namespace)
        ns = namespace
        await self._stop_keeping_first(await self._found(service_id, ns))
        return await self._observe(service_id, ns)

    async def scale(
        self, service_id: str, replicas: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        kube = await self._aks()
        if kube is not None:
            return await kube.scale(service_id, replicas, namespace=namespace)
        ns = namespace
        aci.check_group_names(ns, service_id, replicas, field="replicas")
        current = await self._found(service_id, ns)
        active = [r for r in current if not r.stopped]
        if len(active) == replicas:
            return await self._observe(service_id, ns)
        if replicas == 0:
            await self._stop_keeping_first(current)
            return await self._observe(service_id, ns)
        template = self._newest(current)
        by_ordinal = {r.ordinal: r for r in current}
        missing = [i for i in range(replicas) if i not in by_ordinal]
        secrets = config.unreadable_secrets(config.read_config(template.group))
        if missing and secrets:
            raise _secrets_unreadable(secrets, f"scale to {replicas}")
        await self._create_all(
            {
                aci.group_name(ns, service_id, i): aci.clone_group(template.group, ordinal=i)
                for i in missing
            }
        )
        restart = [r for r in current if r.stopped and r.ordinal < replicas]
        for _, error in await self.gateway.bounded(restart, self.gateway.start):
            if error is not None:
                raise error
        await self._delete_all([r for r in current if r.ordinal >= replicas])
        return await self._observe(service_id, ns)

    async def status(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        kube = await self._aks()
        if kube is not None:
            return await kube.status(service_id, namespace=namespace)
        return await self._observe(service_id, namespace)

    async def list_deployments(self, *, namespace: str | None = None) -> list[DeploymentStatus]:
        kube = await self._aks()
        if kube is not None:
            return await kube.list_deployments(namespace=namespace)
        grouped = aci.group_replicas(await self.gateway.list_groups(), namespace)
        return [
            deployment_status(self.provider_alias, ns, service, replicas)
            for (ns, service), replicas in sorted(grouped.items())
        ]

    # -- config --------------------------------------------------------------------------------

    async def get_config(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> ServiceConfig:
        kube = await self._aks()
        if kube is not None:
            return await kube.get_config(service_id, namespace=namespace)
        ns = namespace
        newest = self._newest(await self._found(service_id, ns))
        return ServiceConfig(
            service_id, ns, config.read_config(newest.group), str(newest.config_version)
        )

    async def apply_config(self, patch: ConfigMapPatch) -> ServiceConfig:
        kube = await self._aks()
        if kube is not None:
            return await kube.apply_config(patch)
        config.check_patch_values(patch.set)
        ns, service = patch.namespace, patch.service_id
        replicas = await self._found(service, ns)
        newest = self._newest(replicas)
        version = str(newest.config_version)
        if patch.expected_version and patch.expected_version != version:
            raise ConfigVersionConflict(
                service, ns, expected=patch.expected_version, actual=version
            )
        merged = patch.applied_to(config.read_config(newest.group))
        secrets = config.unreadable_secrets(merged)
        if secrets:
            raise _secrets_unreadable(secrets, "roll the replicas onto the new config")
        new_version = str(newest.config_version + 1)
        environment = config.environment(config.spec_environment(newest.group), merged)
        for replica in replicas:  # one at a time: the others keep serving
            group = aci.clone_group(
                replica.group,
                ordinal=replica.ordinal,
                environment=environment,
                config_version=new_version,
            )
            await self.gateway.delete(replica.name)
            await self.gateway.create(replica.name, group, wait=replica.stopped)
            if replica.stopped:
                fresh = await self._replicas(service, ns)
                await self.gateway.stop(next(r for r in fresh if r.name == replica.name))
        shown = masked_config(merged)
        return ServiceConfig(service, ns, shown, new_version)

    # -- metrics -------------------------------------------------------------------------------

    async def stream_metrics(
        self,
        service_id: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        interval_seconds: float = 10.0,
    ) -> AsyncGenerator[MetricSample, None]:
        interval = interval_seconds
        kube = await self._aks()
        if kube is not None:
            async for sample in kube.stream_metrics(
                service_id, namespace=namespace, interval_seconds=interval
            ):
                yield sample
            return
        await self._found(service_id, namespace)
        while True:
            yield await self._sample(service_id, namespace)
            await asyncio.sleep(interval)

    async def _sample(self, service_id: str, namespace: str) -> MetricSample:
        now = datetime.now(UTC)
        try:
            replicas = [r for r in await self._replicas(service_id, namespace) if not r.stopped]
            readings: list[GroupMetrics] = []

            async def read(replica: aci.Replica) -> None:
                readings.append(
                    await self.gateway.call(
                        read_group_metrics,
                        self.clients.monitor,
                        str(replica.group.id),
                        remaining_timeout(),
                    )
                )

            for _, error in await self.gateway.bounded(replicas, read):
                if error is not None:
                    raise error
        except InfrastructureProviderError as error:
            return MetricSample(
                service_id, namespace, self.provider_alias, now, 0, ok=False, error=str(error)
            )
        total = aggregate(readings)
        return MetricSample(
            service_id,
            namespace,
            self.provider_alias,
            now,
            len(replicas),
            cpu_percent=total.cpu_percent,
            memory_bytes=total.memory_bytes,
            extra={"reporting_replicas": float(total.reporting)},
        )
