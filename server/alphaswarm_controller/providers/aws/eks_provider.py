"""``EksProvider``: the ``aws`` alias in EKS mode, a ``KubernetesProvider`` on an EKS cluster.

Everything a service is on the cluster (Deployments, ConfigMaps, the native
watch, metrics.k8s.io) is the kubernetes provider's, inherited; this class adds
where the cluster is and who the controller is, through the kubernetes
provider's one hook for that, ``_discover_connection``: on first use, off the
event loop, EKS DescribeCluster (endpoint, CA) and a ``TokenSource`` that mints
presigned-STS bearer tokens (``eks.py``) become the ``ClusterConnection``; a
caller that already has a connection passes it (``EksProvider.from_connection``)
and no EKS call is made.

Settings: ``ALPHASWARM_AWS_EKS_CLUSTER`` (required), ``ALPHASWARM_AWS_REGION``
(else ``AWS_REGION``/``AWS_DEFAULT_REGION``); the cluster-side settings keep
the kubernetes provider's names (``ALPHASWARM_KUBERNETES_PAGE_SIZE``,
``_TIMEOUT``, ``_WATCH_TIMEOUT``, ``_CREATE_NAMESPACES``, ``_NAMESPACE``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from alphaswarm_controller.providers.kubernetes import ClusterConnection, KubernetesProvider
from alphaswarm_core.providers.concurrency import BlockingRunner
from alphaswarm_core.providers.protocol import ProviderHealth, ProviderKind

from .account import AwsAccount
from .eks import eks_connection

#: Settings this class reads under ALPHASWARM_AWS_*; every other one is a cluster-side
#: setting of the kubernetes provider, read under ALPHASWARM_KUBERNETES_*.
AWS_SETTINGS = frozenset({"MODE", "EKS_CLUSTER", "REGION"})


class EksProvider(KubernetesProvider):
    """Services as Deployments on the EKS cluster ``ALPHASWARM_AWS_EKS_CLUSTER``."""

    provider_kind: ClassVar[ProviderKind | str] = ProviderKind.AWS
    provider_alias: ClassVar[str] = "aws"

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        runner: BlockingRunner | None = None,
        connection: ClusterConnection | None = None,
        alias: str | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(
            env=env,
            runner=runner,
            connection=connection,
            alias=alias or self.provider_alias,
            kind=kind or ProviderKind.AWS.value,
        )
        self.account = AwsAccount(self.env)
        self._finds_cluster = connection is None
        """Whether this instance finds its cluster through EKS (else it was given one)."""

    @classmethod
    def from_connection(
        cls,
        connection: ClusterConnection,
        *,
        env: Mapping[str, str] | None = None,
        alias: str = "aws",
        kind: str | None = None,
        runner: BlockingRunner | None = None,
    ) -> EksProvider:
        return cls(env=env, runner=runner, connection=connection, alias=alias, kind=kind)

    def setting_name(self, name: str) -> str:
        prefix = "AWS" if name.upper() in AWS_SETTINGS else "KUBERNETES"
        return f"ALPHASWARM_{prefix}_{name.upper()}"

    @property
    def cluster_name(self) -> str:
        return self.setting_required("EKS_CLUSTER")

    def _check_credentials(self) -> None:
        if self._finds_cluster:  # a given connection carries its own credentials
            self.account.check_region()
            self.account.check_credentials()

    async def _discover_connection(self) -> ClusterConnection:
        """DescribeCluster (endpoint, CA) and a token source for the cluster (blocking: off
        the event loop)."""
        self.account.check_region()
        return await self.run_blocking(eks_connection, self.account.clients, self.cluster_name)

    async def health(self) -> ProviderHealth:
        if not self._finds_cluster:
            return await super().health()
        cluster = self.cluster_name
        self.account.check_region()
        await self.run_blocking(self.account.check_credentials)
        identity = await self.run_blocking(self.account.identity)
        inner = await super().health()
        details = {"mode": "eks", **identity, "eks_cluster": cluster}
        details.update({f"kubernetes.{k}": v for k, v in inner.details.items()})
        return ProviderHealth(
            alias=self.alias,
            kind=ProviderKind.AWS.value,
            healthy=inner.healthy,
            message=f"EKS cluster {cluster}: {inner.message}",
            details=details,
        )
