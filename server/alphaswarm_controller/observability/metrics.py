"""Prometheus metrics of the server: RPCs, open streams, backend (provider) calls.

Imported only when ``ALPHASWARM_CP_METRICS_LISTEN`` is set. The RPC metrics
follow the names of go-grpc-prometheus / grpc-ecosystem, which existing
dashboards and alerts already use. Label values come from bounded sets only
(registered methods, status codes, opened providers, error reasons), never
from request fields, so a caller cannot blow up the series count.

Each server gets its own ``CollectorRegistry`` (with the process and Python
collectors), so several servers in one process (tests) do not collide.

``grpc_code`` values are the canonical CamelCase names the Go exporters write
(``OK``, ``NotFound``, ``Canceled``...), so their dashboards work unchanged. The
``*_created`` series prometheus-client adds to counters and histograms by default
are turned off (process-wide): the Go exporters have none, and they double the
series count. ``alphaswarm_build_info`` is 1, with the version labels.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import threading
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    gc_collector,
    platform_collector,
    process_collector,
    start_http_server,
)

log = logging.getLogger(__name__)

#: Seconds; RPCs range from sub-millisecond reads to cloud roll-outs of minutes.
LATENCY_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)

RPC_LABELS = ("grpc_service", "grpc_method", "grpc_type")

#: grpc_code label values: the names Go's codes.Code.String() gives, as go-grpc-prometheus
#: and grpc-ecosystem/go-grpc-middleware write them (note Go's spelling "Canceled").
GO_CODE_NAMES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class RpcMetrics:
    """The server's metric families, registered in ``self.registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]
        if registry is None:
            registry = CollectorRegistry()
            process_collector.ProcessCollector(registry=registry)
            platform_collector.PlatformCollector(registry=registry)
            gc_collector.GCCollector(registry=registry)
        self.registry = registry
        self.started = Counter(
            "grpc_server_started",
            "RPCs started on the server.",
            RPC_LABELS,
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by status code.",
            (*RPC_LABELS, "grpc_code"),
            registry=registry,
        )
        self.handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time from receiving an RPC to its status (for streams: the stream's lifetime).",
            RPC_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.msg_received = Counter(
            "grpc_server_msg_received",
            "Request messages received (one per call: every method takes a single request).",
            RPC_LABELS,
            registry=registry,
        )
        self.msg_sent = Counter(
            "grpc_server_msg_sent",
            "Response messages sent (one per unary success; one per item of a stream).",
            RPC_LABELS,
            registry=registry,
        )
        self.open_streams = Gauge(
            "alphaswarm_open_streams",
            "Server-streaming RPCs open now.",
            ("grpc_service", "grpc_method"),
            registry=registry,
        )
        self.backend_seconds = Histogram(
            "alphaswarm_backend_call_seconds",
            "Duration of provider (backend) calls, successful or not.",
            ("provider", "method"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.backend_errors = Counter(
            "alphaswarm_backend_call_errors",
            "Provider (backend) calls that raised, by error reason.",
            ("provider", "method", "reason"),
            registry=registry,
        )
        self.build_info = Gauge(
            "alphaswarm_build_info",
            "Always 1; the labels say which build serves.",
            ("version", "python_version", "grpcio_version", "protobuf_version"),
            registry=registry,
        )
        self.build_info.labels(
            _version("alphaswarm-controller"),
            platform.python_version(),
            _version("grpcio"),
            _version("protobuf"),
        ).set(1)
        self.backend_streams = Gauge(
            "alphaswarm_backend_streams_open",
            "Provider streams (stream_metrics, watch) open now; shared metric streams count once.",
            ("provider", "method"),
            registry=registry,
        )

    @staticmethod
    def code_label(code: grpc.StatusCode) -> str:
        return GO_CODE_NAMES[code]


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::]:9464`` for IPv6) -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected host:port, e.g. 127.0.0.1:9464, not {listen!r}")
    return host.strip("[]"), int(port)


class MetricsServer:
    """prometheus-client's HTTP server (a daemon thread) serving ``/metrics``."""

    def __init__(self, metrics: RpcMetrics, listen: str) -> None:
        self._metrics = metrics
        self._listen = listen
        self._httpd: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> int:
        host, port = parse_listen(self._listen)
        try:
            self._httpd, self._thread = start_http_server(
                port, addr=host, registry=self._metrics.registry
            )
        except OSError as exc:
            raise SystemExit(f"cannot serve metrics on {self._listen}: {exc}") from exc
        self.port = self._httpd.server_port
        shown = f"[{host}]" if ":" in host else host
        log.info("serving Prometheus metrics at http://%s:%d/metrics", shown, self.port)
        return self.port

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
