"""The real ``alphaswarm-server`` process: off by default costs nothing; JSON logs carry the
request id of the response headers; /metrics on a logged port; OTLP export from OTEL_*."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from tests.e2e.server_process import ServerProcess, start_server
from tests.observability.conftest import Samples, scrape, value
from tests.waiting import until_sync

pytestmark = pytest.mark.e2e

SERVICE = "alphaswarm.provider.v1.ProviderService"
METRICS_PORT = re.compile(r"serving Prometheus metrics at http://\S+:(\d+)/metrics")

PROBE = textwrap.dedent(
    """
    import asyncio, json, os, sys
    import grpc, psutil
    from alphaswarm.provider.v1 import provider_service_pb2 as pb
    from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
    from alphaswarm_controller.server import start_server
    from alphaswarm_controller.settings import ServerSettings

    async def main():
        running = await start_server(ServerSettings.from_env())
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.ProviderServiceStub(channel)
            # (Not ListProviders: it imports every installed provider's SDK, and
            # google-api-core, under the gcp extra, imports opentelemetry-api itself.)
            await stub.CheckHealth(pb.CheckHealthRequest())
            await stub.ListDeployments(pb.ListDeploymentsRequest())
        local = running.pool.opened()["local"]
        listening = sorted(
            c.laddr.port for c in psutil.Process().net_connections("tcp")
            if c.status == psutil.CONN_LISTEN
        )
        report = {
            "grpc_port": running.port,
            "listening": listening,
            "modules": sorted({m.split(".")[0] for m in sys.modules}),
            "wrapped": sorted(vars(local).keys() & {"start", "status", "health"}),
        }
        await running.stop()
        print(json.dumps(report))

    asyncio.run(main())
    """
)


def test_off_by_default_costs_nothing(tmp_path: Path) -> None:
    env = {
        key: value
        for key, value in __import__("os").environ.items()
        if not key.startswith(("ALPHASWARM_", "OTEL_"))
    }
    env |= {"ALPHASWARM_CP_LISTEN": "127.0.0.1:0", "ALPHASWARM_CP_STATE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["listening"] == [report["grpc_port"]]  # no /metrics port
    assert "opentelemetry" not in report["modules"]
    assert "prometheus_client" not in report["modules"]
    assert report["wrapped"] == []  # provider methods untouched


@pytest.fixture
def json_server(tmp_path: Path) -> Iterator[ServerProcess]:
    running = start_server(
        tmp_path / "state",
        {
            "ALPHASWARM_CP_LOG_FORMAT": "json",
            "ALPHASWARM_CP_LOG_LEVEL": "DEBUG",
            "ALPHASWARM_CP_METRICS_LISTEN": "127.0.0.1:0",
        },
    )
    try:
        yield running
    finally:
        code = running.terminate()
        assert code == 0, running.log


def test_json_logs_and_metrics_of_the_real_server(json_server: ServerProcess) -> None:
    found = METRICS_PORT.search(json_server.log)
    assert found, json_server.log
    metrics_port = int(found.group(1))
    with grpc.insecure_channel(json_server.address) as channel:
        stub = pb_grpc.ProviderServiceStub(channel)
        _, ok = stub.CheckHealth.with_call(pb.CheckHealthRequest())
        healthy_id = request_id_of(ok.trailing_metadata())
        with pytest.raises(grpc.RpcError) as failed:
            stub.StopDeployment(pb.StopDeploymentRequest(service_id="ghost"))
        error = failed.value
        assert error.code() is grpc.StatusCode.NOT_FOUND
        failed_id = request_id_of(error.trailing_metadata())
    assert healthy_id != failed_id

    labels = {"grpc_service": SERVICE, "grpc_type": "unary"}

    def handled(samples: Samples) -> float:
        return value(samples, "grpc_server_handled_total", **labels,
                     grpc_method="StopDeployment", grpc_code="NotFound")  # fmt: skip

    # The status reaches the caller before the server's layers count it: poll, bounded.
    samples = until_sync(
        lambda: scrape(metrics_port),
        "the call counted",
        holds=lambda samples: handled(samples) >= 1,
        within=10,
        every=0.05,
    )
    assert handled(samples) == 1
    assert value(samples, "alphaswarm_backend_call_seconds_count", provider="local",
                 method="health") >= 1  # fmt: skip

    json_server.terminate()
    lines = [json.loads(line) for line in json_server.log_lines if line.strip()]  # all JSON
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    of_failure = [line for line in lines if line.get("request_id") == failed_id]
    assert {line["logger"] for line in of_failure} >= {
        "alphaswarm.audit",
        "alphaswarm_controller.errors",
        "alphaswarm.access",
    }
    audit = next(line for line in of_failure if line["logger"] == "alphaswarm.audit")
    assert (audit["rpc"], audit["outcome"]) == ("StopDeployment", "NOT_FOUND")
    assert any(line.get("request_id") == healthy_id for line in lines)


def request_id_of(metadata: Any) -> str:
    return str(dict(metadata)["x-request-id"])


class Collector(otlp_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver: what a collector gets from the server's exporter."""

    def __init__(self) -> None:
        self.requests: list[otlp.ExportTraceServiceRequest] = []
        self.received = threading.Event()

    def Export(  # the generated servicer's method name
        self, request: otlp.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> otlp.ExportTraceServiceResponse:
        self.requests.append(request)
        self.received.set()
        return otlp.ExportTraceServiceResponse()


def test_traces_export_over_otlp_from_the_otel_environment(tmp_path: Path) -> None:
    collector = Collector()
    receiver = grpc.server(futures.ThreadPoolExecutor(2))
    otlp_grpc.add_TraceServiceServicer_to_server(collector, receiver)  # type: ignore[no-untyped-call]
    port = receiver.add_insecure_port("127.0.0.1:0")
    receiver.start()
    try:
        server = start_server(
            tmp_path / "state",
            {
                "ALPHASWARM_CP_TRACING": "otel",
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                "OTEL_SERVICE_NAME": "cp-under-test",
            },
        )
        try:
            with grpc.insecure_channel(server.address) as channel:
                stub = pb_grpc.ProviderServiceStub(channel)
                stub.CheckHealth(pb.CheckHealthRequest(provider="local"))
        finally:
            assert server.terminate() == 0, server.log  # shutdown flushes the batch
        deadline = time.monotonic() + 10
        while not collector.received.wait(0.1) and time.monotonic() < deadline:
            pass
    finally:
        receiver.stop(None)

    spans: dict[str, list[Span]] = {}
    service_names = set()
    for request in collector.requests:
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    service_names.add(attribute.value.string_value)
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    spans.setdefault(span.name, []).append(span)
    assert service_names == {"cp-under-test"}
    (rpc,) = spans[f"{SERVICE}/CheckHealth"]
    # The health reporter probes too (root spans of their own); one probe is the RPC's child.
    (backend,) = [span for span in spans["local.health"] if span.trace_id == rpc.trace_id]
    assert backend.parent_span_id == rpc.span_id
    attributes = {a.key: a.value for a in rpc.attributes}
    assert attributes["rpc.system"].string_value == "grpc"
    assert attributes["rpc.method"].string_value == "CheckHealth"
    assert "tracing with OpenTelemetry: exporters otlp" in server.log
