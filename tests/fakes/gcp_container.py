"""GKE ``ClusterManager`` v1 emulator: GetCluster for clusters a test registers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.cloud import container_v1

from .gcp_common import CallLog, EmulatorError, Handler, generic_handler


class ClusterManagerEmulator:
    def __init__(self, log: CallLog) -> None:
        self.log = log
        self.clusters: dict[str, container_v1.Cluster] = {}

    def add_cluster(
        self, project: str, location: str, name: str, *, endpoint: str, ca_pem: bytes
    ) -> None:
        """Register a cluster whose API server is at ``endpoint`` (host[:port], as GKE reports)."""
        import base64

        full = f"projects/{project}/locations/{location}/clusters/{name}"
        self.clusters[full] = container_v1.Cluster(
            name=name,
            endpoint=endpoint,
            location=location,
            status=container_v1.Cluster.Status.RUNNING,
            master_auth=container_v1.MasterAuth(
                cluster_ca_certificate=base64.b64encode(ca_pem).decode()
            ),
        )

    async def get_cluster(
        self, request: container_v1.GetClusterRequest, context: object
    ) -> container_v1.Cluster:
        cluster = self.clusters.get(request.name)
        if cluster is None:
            raise EmulatorError(grpc.StatusCode.NOT_FOUND, f"Not found: {request.name}.")
        return container_v1.Cluster(cluster)

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        methods: dict[str, tuple[Handler, Callable[[bytes], Any]]] = {
            "GetCluster": (self.get_cluster, container_v1.GetClusterRequest.deserialize),
        }
        return generic_handler("google.container.v1.ClusterManager", self.log, methods)
