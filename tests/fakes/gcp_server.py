"""One grpc.aio server on 127.0.0.1 (port 0) serving every GCP emulator the provider uses."""

from __future__ import annotations

import grpc

from .gcp_common import CallLog, Operations
from .gcp_container import ClusterManagerEmulator
from .gcp_monitoring import MonitoringEmulator
from .gcp_run import CloudRunEmulator
from .gcp_secrets import SecretManagerEmulator


class GcpEmulator:
    """Cloud Run v2, Secret Manager, Cloud Monitoring and GKE ClusterManager on one port.

    ``log`` records every call (method name) and injects faults (``log.inject``).
    """

    def __init__(self, *, operation_polls: int = 1, max_page_size: int = 100) -> None:
        self.log = CallLog()
        self.operations = Operations(self.log, polls=operation_polls)
        self.run = CloudRunEmulator(self.log, self.operations, max_page_size=max_page_size)
        self.secrets = SecretManagerEmulator(self.log)
        self.monitoring = MonitoringEmulator(self.log, self.run)
        self.container = ClusterManagerEmulator(self.log)
        self.address = ""
        self._server: grpc.aio.Server | None = None

    async def start(self) -> str:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            [
                self.operations.handler(),
                self.run.handler(),
                self.secrets.handler(),
                self.monitoring.handler(),
                self.container.handler(),
            ]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server
        self.address = f"127.0.0.1:{port}"
        return self.address

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None
