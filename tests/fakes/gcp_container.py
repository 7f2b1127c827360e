"""GKE ``ClusterManager`` v1 emulator: GetCluster for clusters a test registers.

GetClusterRequest.name is "in the format ``projects/*/locations/*/clusters/*``"
(google/container/v1/cluster_service.proto); an unknown cluster is NOT_FOUND.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

import grpc
from google.cloud import container_v1

from .gcp_common import EmulatorError, Method, Plumbing, generic_handler, invalid

_NAME = re.compile(r"projects/[^/]+/locations/[^/]+/clusters/[^/]+")


class ClusterManagerEmulator:
    def __init__(self, plumbing: Plumbing) -> None:
        self.plumbing = plumbing
        self.clusters: dict[str, container_v1.Cluster] = {}

    def add_cluster(
        self,
        project: str,
        location: str,
        name: str,
        *,
        endpoint: str,
        ca_pem: bytes,
        status: int = container_v1.Cluster.Status.RUNNING,
    ) -> None:
        """Register a cluster whose API server is at ``endpoint`` (host[:port], as GKE reports)."""
        full = f"projects/{project}/locations/{location}/clusters/{name}"
        self.clusters[full] = container_v1.Cluster(
            name=name,
            endpoint=endpoint,
            location=location,
            status=container_v1.Cluster.Status(status),
            master_auth=container_v1.MasterAuth(
                cluster_ca_certificate=base64.b64encode(ca_pem).decode()
            ),
        )

    def get_cluster(self, request: container_v1.GetClusterRequest) -> container_v1.Cluster:
        if not _NAME.fullmatch(request.name):
            raise invalid(f"name {request.name!r}: projects/*/locations/*/clusters/*")
        cluster = self.clusters.get(request.name)
        if cluster is None:
            raise EmulatorError(grpc.StatusCode.NOT_FOUND, f"Not found: {request.name}.")
        return container_v1.Cluster(cluster)

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        methods: dict[str, tuple[Method, Callable[[bytes], Any]]] = {
            "GetCluster": (self.get_cluster, container_v1.GetClusterRequest.deserialize),
        }
        return generic_handler(
            "google.container.v1.ClusterManager", "container", self.plumbing, methods
        )
