"""One gRPC server on 127.0.0.1 (port 0) serving every GCP emulator the provider uses.

A plain threaded ``grpc.server``, independent of the test's event loop; the emulators
share one lock and one fault plan (``faults``, tests/fakes/faults.py). Lifecycle as for
every emulator: ``start()`` returns self, ``stop()``, or use it as a context manager.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

import grpc

from .faults import Faults
from .gcp_common import Operations, Plumbing
from .gcp_container import ClusterManagerEmulator
from .gcp_logging import LoggingEmulator
from .gcp_monitoring import MonitoringEmulator
from .gcp_run import CloudRunEmulator
from .gcp_secrets import SecretManagerEmulator

#: How long a long-running operation takes by default: non-zero, as on the real service.
OPERATION_SECONDS = 0.25


class GcpEmulator:
    """Cloud Run v2 (Services, Revisions), Secret Manager, Cloud Monitoring, Cloud Logging
    and GKE ClusterManager on one port."""

    def __init__(
        self,
        *,
        operation_seconds: float = OPERATION_SECONDS,
        max_page_size: int = 100,
        log_interval: float = 0.5,
    ) -> None:
        self.faults = Faults()
        self.plumbing = Plumbing(self.faults)
        self.operations = Operations(self.plumbing, seconds=operation_seconds)
        self.secrets = SecretManagerEmulator(self.plumbing)
        self.run = CloudRunEmulator(
            self.plumbing,
            self.operations,
            max_page_size=max_page_size,
            secret_exists=self.secrets.exists,
            log_interval=log_interval,
        )
        self.logging = LoggingEmulator(self.plumbing, self.run)
        self.monitoring = MonitoringEmulator(self.plumbing, self.run)
        self.container = ClusterManagerEmulator(self.plumbing)
        self.address = ""
        self._server: grpc.Server | None = None
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> GcpEmulator:
        self._executor = ThreadPoolExecutor(16, thread_name_prefix="gcp-emulator")
        server = grpc.server(self._executor)
        server.add_generic_rpc_handlers(
            [
                self.operations.handler(),
                self.run.handler(),
                self.run.revisions_handler(),
                self.secrets.handler(),
                self.monitoring.handler(),
                self.logging.handler(),
                self.container.handler(),
            ]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        self.address = f"127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(10)
            self._server = None
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> GcpEmulator:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()
