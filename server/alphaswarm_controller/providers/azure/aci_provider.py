"""``AciProvider``: the ``azure`` alias on Azure Container Instances (mode ``aci``).

It keeps no state of its own: a replica is a container group, its tags say which
service, ordinal, spec and config version it carries, and a stopped service is
its ordinal-0 group kept stopped (ACI's ``stop``) and tagged
``alphaswarm-stopped`` so that it stays known and ``start``/``scale`` bring it
back. Delete removes every group of the service; logs are read per container from
ACI's logs API (``logs``). Settings and design: the package docstring.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from azure.core.credentials import TokenCredential
from azure.core.paging import ItemPaged
from azure.mgmt.containerinstance import models as aci_models

from alphaswarm_core.providers.cadence import Cadence
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
    LogEntry,
    LogQuery,
    MetricSample,
    ProviderHealth,
    ProviderKind,
    ServiceConfig,
)
from alphaswarm_core.providers.reasons import ErrorReason
from alphaswarm_core.providers.service_locks import ServiceLocks, one_change_at_a_time

from . import aci, config
from .clients import AzureAccess
from .gateway import AciGateway, timeouts
from .logs import LogFollower
from .metrics import GroupMetrics, aggregate, read_group_metrics
from .settings import AzureSettings
from .status import deployment_status


def secrets_unreadable(keys: Sequence[str], what: str) -> BackendRejectedError:
    return BackendRejectedError(
        f"cannot {what}: Azure never returns secure environment values, so the secret config "
        f"keys {', '.join(keys)} cannot be copied into a new container group; remove them "
        "with apply_config, do this, then set them again",
        reason=ErrorReason.SECRET_VALUES_UNREADABLE,
        metadata={"keys": ",".join(keys)},
    )


def check_owners(spec: DeploymentSpec, groups: Sequence[aci_models.ContainerGroup]) -> None:
    """NAME_TAKEN when a group name ``spec``'s replicas need belongs to something else."""
    namespace, service = spec.namespace, spec.service_id
    names = {aci.group_name(namespace, service, i) for i in range(max(spec.replicas, 1))}
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


class AciProvider(InfrastructureProvider):
    """Each replica a container group in ``ALPHASWARM_AZURE_RESOURCE_GROUP``."""

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
        every azure-mgmt client (transport, per_call_policies...). No I/O here: settings
        are read, and clients built, on first use."""
        super().__init__(env=env, runner=runner)
        self.access = AzureAccess(self, "aci", credential, client_options)
        self._gateway: AciGateway | None = None
        # ARM offers no compare-and-swap on a group and its tags: this controller's
        # changes of one service go one at a time (docs/providers.md, ACI).
        self.service_locks = ServiceLocks()

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def settings(self) -> AzureSettings:
        return self.access.settings

    def _check_credentials(self) -> None:
        self.access.settings  # noqa: B018 - reading them raises SettingInvalid naming the variable

    @property
    def gateway(self) -> AciGateway:
        if self._gateway is None:
            self._gateway = AciGateway(self, self.access)
        return self._gateway

    async def close(self) -> None:
        self.access.close()
        self._gateway = None

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
        await self.access.probe_token()
        ops = self.access.clients.aci.container_groups
        group = self.settings.resource_group

        def probe() -> None:
            listing = ops.list_by_resource_group(group, **timeouts())
            pages = cast(ItemPaged[aci_models.ContainerGroup], listing).by_page()
            next(iter(pages), None)

        await self.gateway.call(probe)
        return ProviderHealth(
            self.provider_alias,
            ProviderKind.AZURE.value,
            True,
            f"Container Instances in resource group {group}",
            {**self.access.details(), "location": self.settings.location},
        )

    @one_change_at_a_time
    async def start(self, spec: DeploymentSpec) -> DeploymentStatus:
        aci.check_spec(spec)
        namespace, service = spec.namespace, spec.service_id
        groups = await self.gateway.list_groups()
        wanted = max(spec.replicas, 1)
        check_owners(spec, groups)
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
            raise secrets_unreadable(config.unreadable_secrets(data), "create container groups")
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

    @one_change_at_a_time
    async def stop(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        await self._stop_keeping_first(await self._found(service_id, namespace))
        return await self._observe(service_id, namespace)

    @one_change_at_a_time
    async def scale(
        self, service_id: str, replicas: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
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
            raise secrets_unreadable(secrets, f"scale to {replicas}")
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
        return await self._observe(service_id, namespace)

    async def list_deployments(self, *, namespace: str | None = None) -> list[DeploymentStatus]:
        grouped = aci.group_replicas(await self.gateway.list_groups(), namespace)
        return [
            deployment_status(self.provider_alias, ns, service, replicas)
            for (ns, service), replicas in sorted(grouped.items())
        ]

    # -- config --------------------------------------------------------------------------------

    async def get_config(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> ServiceConfig:
        ns = namespace
        newest = self._newest(await self._found(service_id, ns))
        return ServiceConfig(
            service_id, ns, config.read_config(newest.group), str(newest.config_version)
        )

    @one_change_at_a_time
    async def apply_config(self, patch: ConfigMapPatch) -> ServiceConfig:
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
            raise secrets_unreadable(secrets, "roll the replicas onto the new config")
        new_version = str(newest.config_version + 1)
        environment = config.environment(config.spec_environment(newest.group), merged)
        for replica in replicas:
            group = aci.clone_group(
                replica.group,
                ordinal=replica.ordinal,
                environment=environment,
                config_version=new_version,
            )
            await self._replace(replica, group)
        shown = masked_config(merged)
        return ServiceConfig(service, ns, shown, new_version)

    async def _replace(self, replica: aci.Replica, group: aci_models.ContainerGroup) -> None:
        """Recreate one replica and wait until it runs (or, if it was stopped, is stopped
        again) before the caller touches the next: the others keep serving meanwhile.

        A replacement that fails to start ends the roll with that error; the replicas not
        reached yet keep the previous config (``status`` shows the failed one).
        """
        gateway = self.gateway
        await gateway.delete(replica.name)
        await gateway.create(replica.name, group, wait=True)
        if replica.stopped:
            fresh = await self._replicas(replica.service_id, replica.namespace)
            await gateway.stop(next(r for r in fresh if r.name == replica.name))
        else:
            await gateway.wait_running(replica.name, self.settings.ready_timeout)

    # -- delete and logs -----------------------------------------------------------------------

    @one_change_at_a_time
    async def delete(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE, allow_missing: bool = False
    ) -> bool:
        """Delete every container group of the service, waiting until each is gone.

        The groups are all the provider creates for a service: spec, config (plain and
        secure environment values) and bookkeeping live in their definitions and tags.
        """
        replicas = await self._replicas(service_id, namespace)
        if not replicas:
            if allow_missing:
                return False
            raise DeploymentNotFoundError(service_id, namespace)
        await self._delete_all(replicas)
        return True

    async def stream_logs(
        self, service_id: str, query: LogQuery, *, namespace: str = DEFAULT_NAMESPACE
    ) -> AsyncGenerator[LogEntry, None]:
        """Containers - List Logs of each running replica, polled when following (``logs``)."""
        replicas = await self._found(service_id, namespace)

        async def listing() -> list[aci.Replica]:
            return await self._replicas(service_id, namespace)

        follower = LogFollower(self.gateway, listing, query, self.settings.log_poll_interval)
        async for entry in follower.entries(replicas):
            yield entry

    # -- metrics -------------------------------------------------------------------------------

    async def stream_metrics(
        self,
        service_id: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        interval_seconds: float = 10.0,
    ) -> AsyncGenerator[MetricSample, None]:
        await self._found(service_id, namespace)
        cadence = Cadence(interval_seconds)
        while True:
            yield await self._sample(service_id, namespace)
            await cadence.wait()

    async def _sample(self, service_id: str, namespace: str) -> MetricSample:
        now = datetime.now(UTC)
        try:
            replicas = [r for r in await self._replicas(service_id, namespace) if not r.stopped]
            readings: list[GroupMetrics] = []

            async def read(replica: aci.Replica) -> None:
                readings.append(
                    await self.gateway.call(
                        read_group_metrics,
                        self.access.clients.monitor,
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
