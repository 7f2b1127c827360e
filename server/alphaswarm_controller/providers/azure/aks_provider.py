"""``AksProvider``: the ``azure`` alias on an AKS cluster (mode ``aks``).

It *is* a ``KubernetesProvider`` (as Libcloud's GKE driver is its Kubernetes
driver): every operation, the native ``watch`` included, is the kubernetes
provider's own code. What AKS adds is where the cluster connection comes from:
``managedClusters/listClusterUserCredential`` (one ARM call, on first use) gives
the API server, its CA and the cluster user's token, which become the
``ClusterConnection`` that ``KubernetesProvider.from_connection`` takes.
``AksProvider.from_connection`` skips that call when the connection is known.

Settings: the ARM ones are ``ALPHASWARM_AZURE_*`` (subscription, resource group,
``AKS_CLUSTER``, ``ARM_ENDPOINT``...); the cluster-side ones stay
``ALPHASWARM_KUBERNETES_*`` (page size, timeouts, namespace creation), as for the
kubernetes provider itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from azure.core.credentials import TokenCredential

from alphaswarm_controller.providers.kubernetes import ClusterConnection, KubernetesProvider
from alphaswarm_core.providers.concurrency import BlockingRunner, remaining_timeout
from alphaswarm_core.providers.protocol import (
    ProviderHealth,
    ProviderKind,
    ResourceNotFoundError,
    SettingInvalid,
)

from .aks import fetch_credentials
from .clients import AzureAccess
from .settings import AzureSettings

#: Settings read as ALPHASWARM_AZURE_*; every other name is a kubernetes provider setting.
AZURE_SETTINGS = frozenset(
    {
        "SUBSCRIPTION_ID",
        "RESOURCE_GROUP",
        "LOCATION",
        "MODE",
        "AKS_CLUSTER",
        "ARM_ENDPOINT",
        "ARM_SCOPE",
        "MAX_PARALLEL",
        "POLL_INTERVAL",
        "READY_TIMEOUT",
    }
)


class AksProvider(KubernetesProvider):
    """The kubernetes provider on an AKS cluster, reporting itself as ``azure``."""

    provider_kind: ClassVar[ProviderKind | str] = ProviderKind.AZURE
    provider_alias: ClassVar[str] = "azure"

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        runner: BlockingRunner | None = None,
        connection: ClusterConnection | None = None,
        alias: str | None = None,
        kind: str | None = None,
        credential: TokenCredential | None = None,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        """No I/O: the cluster connection is fetched from ARM on first use unless given.

        ``alias`` and ``kind`` exist for ``from_connection``; this class always reports
        ``azure``. ``credential`` and ``client_options`` as for ``AciProvider``.
        """
        for name, value in (("alias", alias), ("kind", kind)):
            if value not in (None, "azure"):
                raise ValueError(f"AksProvider reports {name} 'azure', not {value!r}")
        super().__init__(
            env=env,
            runner=runner,
            connection=connection,
            alias=self.provider_alias,
            kind=ProviderKind.AZURE.value,
        )
        self.access = AzureAccess(self, "aks", credential, client_options)
        self._via_arm = connection is None
        """Whether the connection comes from ARM (the registry's way) or was given."""

    @classmethod
    def from_connection(
        cls,
        connection: ClusterConnection,
        *,
        env: Mapping[str, str] | None = None,
        alias: str = "azure",
        kind: str | None = None,
        runner: BlockingRunner | None = None,
    ) -> AksProvider:
        """An AKS provider bound to a known cluster connection (no ARM call for it)."""
        return cls(env=env, runner=runner, connection=connection, alias=alias, kind=kind)

    def setting_name(self, name: str) -> str:
        prefix = "AZURE" if name.upper() in AZURE_SETTINGS else "KUBERNETES"
        return f"ALPHASWARM_{prefix}_{name.upper()}"

    @property
    def settings(self) -> AzureSettings:
        return self.access.settings

    def _check_credentials(self) -> None:
        if self._via_arm:
            self.access.settings  # noqa: B018 - reading them raises SettingInvalid

    async def _discover_connection(self) -> ClusterConnection:
        """KubernetesProvider's hook: the connection, learnt from ARM on first use."""
        return await self.run_blocking(self._fetch_connection)

    def _fetch_connection(self) -> ClusterConnection:
        """One ARM call (blocking, on the runner): the cluster user's kubeconfig."""
        settings = self.settings
        try:
            with self.access.errors():
                creds = fetch_credentials(
                    self.access.clients.aks,
                    settings.resource_group,
                    settings.aks_cluster,
                    remaining_timeout(),
                )
        except ResourceNotFoundError as error:
            # A missing cluster is the operator's setting, not a missing deployment (the
            # kubernetes code reads NOT_FOUND from its own calls as "no such object").
            if "resource_group" in error.metadata:
                raise SettingInvalid(
                    self.setting_name("RESOURCE_GROUP"), f"names no resource group: {error.message}"
                ) from error
            raise SettingInvalid(
                self.setting_name("AKS_CLUSTER"),
                f"is {settings.aks_cluster!r}, which is not an AKS cluster in resource group "
                f"{settings.resource_group!r} ({error.message})",
            ) from error
        return ClusterConnection(
            endpoint=creds.endpoint,
            ca_data=creds.ca_pem,
            token=creds.token,
            description=f"AKS cluster {settings.aks_cluster}",
        )

    async def health(self) -> ProviderHealth:
        """An ARM token and the cluster user credential, then the kubernetes checks."""
        details: dict[str, str] = {}
        if self._via_arm:
            self._check_credentials()
            await self.access.probe_token()
            details = {**self.access.details(), "aks_cluster": self.settings.aks_cluster}
        inner = await super().health()
        cluster = details.get("aks_cluster") or inner.details.get("endpoint", "")
        return ProviderHealth(
            self.provider_alias,
            ProviderKind.AZURE.value,
            inner.healthy,
            f"AKS cluster {cluster}: {inner.message}",
            {**details, **inner.details},
        )

    async def close(self) -> None:
        await super().close()
        self.access.close()
