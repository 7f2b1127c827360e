"""``GkeProvider``: the ``gcp`` alias with ALPHASWARM_GCP_MODE=gke, a ``KubernetesProvider``.

As Libcloud's GKE driver subclasses its Kubernetes driver, this class is the kubernetes
provider bound to one GKE cluster, so GKE mode gets everything Kubernetes does, its
native ``watch`` included. What it adds is how the cluster is found:
``ALPHASWARM_GCP_GKE_CLUSTER`` names it (``projects/p/locations/l/clusters/c``, or
``c`` in ``ALPHASWARM_GCP_GKE_LOCATION``, default the region); GetCluster (container
API) gives the API server endpoint and CA; the bearer token is the controller's Google
access token (GKE accepts it for principals with roles/container.developer), refreshed
by google-auth whenever it is about to expire, so a long-running controller never sends
a stale one. The lookup happens once, on first use (the constructor does no I/O), and
yields the ``ClusterConnection`` that ``KubernetesProvider.from_connection`` takes; a
caller that already knows the cluster builds the class through ``from_connection``.

Settings: the ``ALPHASWARM_GCP_*`` ones in ``settings.NAMES`` (project, region, cluster,
endpoints...) keep their names; every other setting the Kubernetes machinery reads is its
documented ``ALPHASWARM_KUBERNETES_*`` (page size, timeouts, CREATE_NAMESPACES).
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import ClassVar

import google.auth.credentials
import google.auth.exceptions
from google.api_core import exceptions as gexc
from google.cloud import container_v1

from alphaswarm_controller.providers.kubernetes import ClusterConnection, KubernetesProvider
from alphaswarm_core.providers.concurrency import BlockingRunner, remaining_timeout
from alphaswarm_core.providers.protocol import (
    InfrastructureProviderUnavailable,
    ProviderHealth,
    ProviderKind,
)
from alphaswarm_core.providers.reasons import ErrorReason

from . import retry
from .clients import GcpClients, load_credentials
from .errors import api_errors, credentials_missing
from .settings import NAMES, PREFIX, GcpSettings

KUBERNETES_PREFIX = "ALPHASWARM_KUBERNETES_"
#: Cluster states with a serving control plane (container_v1.Cluster.Status).
_SERVING = (container_v1.Cluster.Status.RUNNING, container_v1.Cluster.Status.RECONCILING)


def token_source(credentials: google.auth.credentials.Credentials) -> Callable[[], str]:
    """A blocking callable returning a valid access token, refreshing it when needed."""
    lock = threading.Lock()

    def token() -> str:
        import google.auth.transport.requests

        with lock:
            if not credentials.valid:
                try:
                    credentials.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call]
                except google.auth.exceptions.RefreshError as exc:
                    raise credentials_missing("the access token could not be refreshed") from exc
            return str(credentials.token or "")

    return token


async def get_cluster(clients: GcpClients, name: str) -> container_v1.Cluster:
    with api_errors("container"):
        try:
            cluster = await clients.container().get_cluster(
                name=name, retry=retry.policy(), timeout=remaining_timeout()
            )
        except gexc.NotFound as exc:
            raise InfrastructureProviderUnavailable(
                f"GKE cluster {name} not found; check ALPHASWARM_GCP_GKE_CLUSTER",
                reason=ErrorReason.CLUSTER_NOT_FOUND,
                metadata={"setting": "ALPHASWARM_GCP_GKE_CLUSTER", "cluster": name},
            ) from exc
    if cluster.status not in _SERVING or not cluster.endpoint:
        raise InfrastructureProviderUnavailable(
            f"GKE cluster {name} is {cluster.status.name}; its API server is not serving",
            reason=ErrorReason.CLUSTER_NOT_READY,
            metadata={"cluster": name, "status": cluster.status.name},
        )
    return cluster


class GkeProvider(KubernetesProvider):
    """Services as Deployments on one GKE cluster, found through the container API."""

    provider_kind: ClassVar[ProviderKind | str] = ProviderKind.GCP
    provider_alias: ClassVar[str] = "gcp"

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
            kind=kind or ProviderKind.GCP.value,
        )
        self.settings = GcpSettings.load(self)
        self._project = ""
        self._cluster_path = ""

    def setting_name(self, name: str) -> str:
        # The GKE lookup's settings are the gcp provider's; the rest belong to the
        # Kubernetes machinery this class inherits, under their documented names.
        prefix = PREFIX if name.upper() in NAMES else KUBERNETES_PREFIX
        return f"{prefix}{name.upper()}"

    def _check_credentials(self) -> None:
        if self.connection is not None and not self._cluster_path:
            return  # built through from_connection: the caller vouched for the cluster
        self.settings.validate_gke()
        path = self.env.get("GOOGLE_APPLICATION_CREDENTIALS", "")
        if path and not os.path.isfile(path):
            raise credentials_missing("GOOGLE_APPLICATION_CREDENTIALS names no readable file")

    async def _discover_connection(self) -> ClusterConnection:
        """KubernetesProvider's hook: GetCluster, then a connection with the cluster's CA and
        a Google token source."""
        self._check_credentials()
        credentials, project = await self.run_blocking(load_credentials, self.env, self.settings)
        name = self.settings.cluster_path(project)
        clients = GcpClients(self.settings, credentials)
        try:
            cluster = await get_cluster(clients, name)
        finally:
            await clients.close()
        tokens = token_source(clients.credentials)
        await self.run_blocking(tokens)  # fail now, with a clear error, not on first use
        endpoint = cluster.endpoint
        if not endpoint.startswith(("https://", "http://")):
            endpoint = f"https://{endpoint}"
        ca_text = cluster.master_auth.cluster_ca_certificate
        self._project, self._cluster_path = project, name
        return ClusterConnection(
            endpoint=endpoint,
            ca_data=base64.b64decode(ca_text) if ca_text else None,
            token_provider=tokens,
            description=f"GKE cluster {name}",
        )

    async def health(self) -> ProviderHealth:
        cluster = await super().health()
        details = {**cluster.details, "mode": "gke"}
        if self._cluster_path:
            details.update(project=self._project, cluster=self._cluster_path)
        return replace(cluster, details=details)
