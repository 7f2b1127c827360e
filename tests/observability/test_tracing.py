"""OpenTelemetry: a server span per RPC (rpc.* attributes, caller's trace continued) and a
child span per provider call, captured with the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm_controller.observability import Observability
from alphaswarm_controller.observability.tracing import Tracing
from tests.observability.conftest import ServeFactory, spec

SERVICE = "alphaswarm.provider.v1.ProviderService"
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def observability(exporter: InMemorySpanExporter) -> Observability:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Observability(tracing=Tracing(provider))


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


async def finished(
    exporter: InMemorySpanExporter, name: str, count: int
) -> tuple[ReadableSpan, ...]:
    """The finished spans once ``count`` named ``name`` are among them (or after 5 s). A
    server span ends once the RPC's status went out: the caller can have it first."""
    for _ in range(100):
        spans = exporter.get_finished_spans()
        if len(named(spans, name)) >= count:
            break
        await asyncio.sleep(0.05)
    return spans


async def test_server_span_with_a_child_per_backend_call(
    serve: ServeFactory, observability: Observability, exporter: InMemorySpanExporter
) -> None:
    served = await serve(observability=observability)
    traceparent = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
    call = served.stub.StartDeployment(
        pb.StartDeploymentRequest(spec=spec("api")),
        metadata=(("traceparent", traceparent), ("x-request-id", "req-42")),
    )
    await call

    spans = await finished(exporter, f"{SERVICE}/StartDeployment", 1)
    (server,) = named(spans, f"{SERVICE}/StartDeployment")
    (backend,) = named(spans, "memory.start")
    assert server.kind is SpanKind.SERVER
    assert server.attributes is not None
    assert (
        dict(server.attributes).items()
        >= {
            "rpc.system": "grpc",
            "rpc.service": SERVICE,
            "rpc.method": "StartDeployment",
            "rpc.grpc.status_code": 0,
            "alphaswarm.provider": "memory",
            "alphaswarm.request_id": "req-42",
            "network.peer.address": "127.0.0.1",
        }.items()
    )
    # The caller's trace continues: same trace id, the caller's span is the parent.
    assert server.context is not None and server.parent is not None
    assert format(server.context.trace_id, "032x") == CALLER_TRACE
    assert format(server.parent.span_id, "016x") == CALLER_SPAN
    # The provider call is a child of the server span.
    assert backend.parent is not None and backend.context is not None
    assert backend.parent.span_id == server.context.span_id
    assert backend.context.trace_id == server.context.trace_id
    assert backend.attributes is not None
    assert backend.attributes["alphaswarm.provider"] == "memory"
    assert backend.attributes["alphaswarm.provider.method"] == "start"
    assert backend.attributes["alphaswarm.provider.kind"] == "memory"
    assert backend.status.status_code is StatusCode.UNSET


async def test_span_status_follows_one_rule_for_server_and_backend_spans(
    serve: ServeFactory, observability: Observability, exporter: InMemorySpanExporter
) -> None:
    served = await serve(observability=observability)
    await served.stub.StartDeployment(pb.StartDeploymentRequest(spec=spec("api")))
    memory = await served.memory()
    memory.failures["status"] = RuntimeError("token=s3cr3t leaked by an SDK")
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await served.stub.GetDeploymentStatus(pb.GetDeploymentStatusRequest(service_id="api"))
    assert failed.value.code() is grpc.StatusCode.INTERNAL
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await served.stub.GetDeploymentStatus(pb.GetDeploymentStatusRequest(service_id="nope"))
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND

    spans = await finished(exporter, f"{SERVICE}/GetDeploymentStatus", 2)
    servers = named(spans, f"{SERVICE}/GetDeploymentStatus")
    backends = named(spans, "memory.status")
    assert len(servers) == 2 and len(backends) == 2
    internal, not_found = servers
    assert internal.attributes is not None and not_found.attributes is not None
    assert internal.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
    assert internal.status.status_code is StatusCode.ERROR
    # NOT_FOUND is the caller's problem: the server span is not an error (RPC conventions).
    assert not_found.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert not_found.status.status_code is StatusCode.UNSET
    unexpected, not_there = backends
    assert unexpected.status.status_code is StatusCode.ERROR
    assert unexpected.attributes is not None
    assert unexpected.attributes["error.type"] == "RuntimeError"
    # An unexpected exception's message may hold anything: it stays out of the span.
    assert "s3cr3t" not in repr(unexpected.to_json())
    assert not_there.attributes is not None
    assert not_there.attributes["alphaswarm.error.reason"] == "DEPLOYMENT_NOT_FOUND"
    # One rule for both spans: NOT_FOUND marks neither the server span nor its child.
    assert not_there.status.status_code is StatusCode.UNSET


async def test_stream_rpc_has_a_span_for_the_backend_stream(
    serve: ServeFactory, observability: Observability, exporter: InMemorySpanExporter
) -> None:
    served = await serve(observability=observability)
    await served.stub.StartDeployment(pb.StartDeploymentRequest(spec=spec("api")))
    request = pb.StreamMetricsRequest(service_id="api")
    request.interval.FromMilliseconds(100)
    stream = served.stub.StreamMetrics(request)
    async for _ in stream:
        break
    stream.cancel()
    # The server sees the cancel, ends the RPC span and, the last subscriber gone, the
    # shared backend stream and its span.
    for _ in range(100):
        spans = exporter.get_finished_spans()
        if named(spans, "memory.stream_metrics") and named(spans, f"{SERVICE}/StreamMetrics"):
            break
        await asyncio.sleep(0.05)
    (server,) = named(spans, f"{SERVICE}/StreamMetrics")
    (backend,) = named(spans, "memory.stream_metrics")
    assert server.context is not None and backend.parent is not None
    assert backend.parent.span_id == server.context.span_id
    assert server.attributes is not None
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
