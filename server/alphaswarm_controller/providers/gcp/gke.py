"""GKE mode: find the cluster with the container API, then drive it as the kubernetes provider.

``ALPHASWARM_GCP_GKE_CLUSTER`` names the cluster (a full
``projects/p/locations/l/clusters/c`` name, or just ``c`` in
``ALPHASWARM_GCP_GKE_LOCATION``, default the region). GetCluster gives the
API server endpoint and the cluster CA; the bearer token is the controller's
Google access token (GKE accepts it for principals with roles/container.developer),
refreshed by google-auth whenever it is about to expire, so a long-running
controller never sends a stale one.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import google.auth.credentials
import google.auth.exceptions
from google.api_core import exceptions as gexc

from alphaswarm_core.providers.concurrency import remaining_timeout
from alphaswarm_core.providers.protocol import (
    InfrastructureProvider,
    InfrastructureProviderUnavailable,
)
from alphaswarm_core.providers.reasons import ErrorReason

from .clients import GcpClients, GcpSettings
from .errors import api_errors, credentials_missing

if TYPE_CHECKING:
    from google.cloud import container_v1


def cluster_name(settings: GcpSettings, project: str) -> str:
    if settings.gke_cluster.startswith("projects/"):
        return settings.gke_cluster
    location = settings.gke_location or settings.region
    return f"projects/{project}/locations/{location}/clusters/{settings.gke_cluster}"


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
            return await clients.container().get_cluster(name=name, timeout=remaining_timeout())
        except gexc.NotFound as exc:
            raise InfrastructureProviderUnavailable(
                f"GKE cluster {name} not found; check ALPHASWARM_GCP_GKE_CLUSTER",
                reason=ErrorReason.CLUSTER_NOT_FOUND,
                metadata={"env": "ALPHASWARM_GCP_GKE_CLUSTER", "cluster": name},
            ) from exc


async def connect_gke(
    provider: InfrastructureProvider, clients: GcpClients, project: str
) -> InfrastructureProvider:
    """A kubernetes provider (alias ``gcp``) connected to the configured GKE cluster."""
    from alphaswarm_controller.providers.kubernetes import ClusterConnection, KubernetesProvider

    name = cluster_name(clients.settings, project)
    cluster = await get_cluster(clients, name)
    endpoint = cluster.endpoint
    if not endpoint.startswith(("https://", "http://")):
        endpoint = f"https://{endpoint}"
    ca_text = cluster.master_auth.cluster_ca_certificate
    tokens = token_source(clients.credentials)
    await provider.run_blocking(tokens)  # fail now, with a clear error, not on first use
    connection = ClusterConnection(
        endpoint=endpoint,
        ca_data=base64.b64decode(ca_text) if ca_text else None,
        token_provider=tokens,
        description=f"GKE cluster {name}",
    )
    kube: InfrastructureProvider = KubernetesProvider.from_connection(
        connection, env=provider.env, alias="gcp", kind="gcp"
    )
    await kube.open()
    return kube
