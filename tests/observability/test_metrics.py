"""/metrics over HTTP after real RPCs: counts by code, latency histograms, open streams,
backend (provider) call latency and errors by provider."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm_controller.observability.metrics import parse_listen
from alphaswarm_core.providers.errors import BackendUnavailableError
from tests.observability.conftest import (
    Samples,
    ServeFactory,
    scrape,
    scraped_when,
    spec,
    value,
)

SERVICE = "alphaswarm.provider.v1.ProviderService"


def rpc(method: str, kind: str = "unary") -> dict[str, str]:
    return {"grpc_service": SERVICE, "grpc_method": method, "grpc_type": kind}


async def test_rpc_and_backend_metrics_by_label(serve: ServeFactory) -> None:
    served = await serve(metrics_listen="127.0.0.1:0")
    port = served.running.metrics_port
    assert port is not None and port > 0
    stub = served.stub

    await stub.ListProviders(pb.ListProvidersRequest())
    await stub.StartDeployment(pb.StartDeploymentRequest(spec=spec("api", replicas=2)))
    await stub.StartDeployment(pb.StartDeploymentRequest(spec=spec("api", replicas=2)))
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetDeploymentStatus(pb.GetDeploymentStatusRequest(service_id="nope"))
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    memory = await served.memory()
    memory.failures["status"] = BackendUnavailableError("backend blinked")
    with pytest.raises(grpc.aio.AioRpcError) as blinked:
        await stub.GetDeploymentStatus(pb.GetDeploymentStatusRequest(service_id="api"))
    assert blinked.value.code() is grpc.StatusCode.UNAVAILABLE

    status = rpc("GetDeploymentStatus")
    during = await scraped_when(
        port,
        lambda samples: all(
            value(samples, "grpc_server_handled_total", **status, grpc_code=code)
            for code in ("NotFound", "Unavailable")
        ),
    )
    start = rpc("StartDeployment")
    assert value(during, "grpc_server_started_total", **start) == 2
    assert value(during, "grpc_server_handled_total", **start, grpc_code="OK") == 2
    assert value(during, "grpc_server_handling_seconds_count", **start) == 2
    assert value(during, "grpc_server_handling_seconds_bucket", **start, le="+Inf") == 2
    assert value(during, "grpc_server_handling_seconds_sum", **start) > 0
    assert value(during, "grpc_server_handled_total", **status, grpc_code="NotFound") == 1
    assert value(during, "grpc_server_handled_total", **status, grpc_code="Unavailable") == 1
    assert value(during, "grpc_server_handled_total", **rpc("ListProviders"), grpc_code="OK") == 1
    # One request message per call, as go-grpc-prometheus counts them.
    assert value(during, "grpc_server_msg_received_total", **start) == 2
    assert value(during, "grpc_server_msg_received_total", **status) == 2
    # No *_created series (the Go exporters have none); the build is labelled.
    assert not [name for name, _ in during if name.endswith("_created")]
    build = [dict(labels) for name, labels in during if name == "alphaswarm_build_info"]
    assert len(build) == 1 and build[0]["version"] and build[0]["grpcio_version"]
    assert value(during, "alphaswarm_build_info", **build[0]) == 1

    # Backend calls, by provider and method; errors by reason.
    assert (
        value(during, "alphaswarm_backend_call_seconds_count", provider="memory", method="start")
        == 2
    )
    assert (
        value(during, "alphaswarm_backend_call_seconds_count", provider="memory", method="status")
        == 2
    )
    assert (
        value(
            during,
            "alphaswarm_backend_call_errors_total",
            provider="memory",
            method="status",
            reason="DEPLOYMENT_NOT_FOUND",
        )
        == 1
    )
    assert (
        value(
            during,
            "alphaswarm_backend_call_errors_total",
            provider="memory",
            method="status",
            reason="BACKEND_UNAVAILABLE",
        )
        == 1
    )
    # The process collectors are on the same endpoint.
    assert any(name == "process_resident_memory_bytes" for name, _ in during)


async def test_open_streams_and_their_end(serve: ServeFactory) -> None:
    served = await serve(metrics_listen="127.0.0.1:0")
    port = served.running.metrics_port
    assert port is not None
    await served.stub.StartDeployment(pb.StartDeploymentRequest(spec=spec("api")))
    request = pb.StreamMetricsRequest(service_id="api")
    request.interval.FromMilliseconds(100)
    stream = served.stub.StreamMetrics(request)
    received = 0
    async for _ in stream:
        received += 1
        if received == 3:
            break
    during = await asyncio.to_thread(scrape, port)
    stream.cancel()

    # The stream is open while scraped.
    metrics_stream = rpc("StreamMetrics", "server_stream")
    assert value(during, "grpc_server_started_total", **metrics_stream) == 1
    assert (
        value(during, "alphaswarm_open_streams", grpc_service=SERVICE, grpc_method="StreamMetrics")
        == 1
    )
    assert value(during, "grpc_server_msg_sent_total", **metrics_stream) >= 3
    assert (
        value(during, "alphaswarm_backend_streams_open", provider="memory", method="stream_metrics")
        == 1
    )

    # Once the caller cancels, the stream is over: gauges back to 0, CANCELLED counted.
    after = await scraped_when(
        port,
        lambda samples: bool(
            value(samples, "grpc_server_handled_total", **metrics_stream, grpc_code="Canceled")
        ),
    )
    assert value(after, "grpc_server_handled_total", **metrics_stream, grpc_code="Canceled") == 1
    assert (
        value(after, "alphaswarm_open_streams", grpc_service=SERVICE, grpc_method="StreamMetrics")
        == 0
    )

    def backend_open(samples: Samples) -> float:
        return value(
            samples, "alphaswarm_backend_streams_open", provider="memory", method="stream_metrics"
        )

    after = await scraped_when(port, lambda samples: not backend_open(samples))
    assert backend_open(after) == 0


async def test_rejected_calls_count_with_their_code(serve: ServeFactory) -> None:
    served = await serve(metrics_listen="127.0.0.1:0", max_streams=0)
    port = served.running.metrics_port
    assert port is not None
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async for _ in served.stub.StreamMetrics(pb.StreamMetricsRequest(service_id="x")):
            pass
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    labels = rpc("StreamMetrics", "server_stream")
    samples = await scraped_when(
        port,
        lambda samples: bool(
            value(samples, "grpc_server_handled_total", **labels, grpc_code="ResourceExhausted")
        ),
    )
    assert value(samples, "grpc_server_handled_total", **labels, grpc_code="ResourceExhausted") == 1
    assert (
        value(samples, "alphaswarm_open_streams", grpc_service=SERVICE, grpc_method="StreamMetrics")
        == 0
    )


async def test_metrics_endpoint_closes_with_the_server(serve: ServeFactory) -> None:
    served = await serve(metrics_listen="127.0.0.1:0")
    port = served.running.metrics_port
    assert port is not None
    await asyncio.to_thread(scrape, port)
    await served.running.stop()
    with pytest.raises(OSError):
        await asyncio.to_thread(scrape, port)


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:9464") == ("127.0.0.1", 9464)
    assert parse_listen("[::]:0") == ("::", 0)
    for bad in ("9464", ":9464", "host:", "host:99999", "host:http"):
        with pytest.raises(ValueError):
            parse_listen(bad)


async def test_a_taken_metrics_port_stops_the_start(serve: ServeFactory) -> None:
    first = await serve(metrics_listen="127.0.0.1:0")
    with pytest.raises(SystemExit, match=r"cannot serve metrics on 127\.0\.0\.1:"):
        await serve(metrics_listen=f"127.0.0.1:{first.running.metrics_port}")
