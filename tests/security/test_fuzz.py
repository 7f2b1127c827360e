"""Thousands of random and malformed requests to every RPC of a running server.

Whatever arrives, the server answers with a deliberate status: never INTERNAL,
never a crash, and every INVALID_ARGUMENT names the offending field.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_controller.server import RunningServer, start_server
from tests.service.conftest import make_registry
from tests.service.conftest import settings as server_settings
from tests.service.rich_status import details

SERVICE = "/alphaswarm.provider.v1.ProviderService/"
UNARY = {
    "ListProviders": pb.ListProvidersRequest,
    "CheckHealth": pb.CheckHealthRequest,
    "StartDeployment": pb.StartDeploymentRequest,
    "StopDeployment": pb.StopDeploymentRequest,
    "ScaleDeployment": pb.ScaleDeploymentRequest,
    "GetDeploymentStatus": pb.GetDeploymentStatusRequest,
    "ListDeployments": pb.ListDeploymentsRequest,
    "GetServiceConfig": pb.GetServiceConfigRequest,
    "ApplyConfig": pb.ApplyConfigRequest,
}
STREAMS = {"StreamMetrics": pb.StreamMetricsRequest, "WatchDeployment": pb.WatchDeploymentRequest}
# Codes a well-behaved server may answer random input with (never INTERNAL/UNKNOWN).
DELIBERATE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}

text = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["", "web", "default", "a" * 64, "Ünïcødé", "-x-", "x" * 5000, "\x00"]),
)
numbers = st.one_of(
    st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, 1, 500, 501, -1, 2**31 - 1])
)
string_maps = st.dictionaries(text, text, max_size=4)


@st.composite
def specs(draw: st.DrawFn) -> types.DeploymentSpec:
    return types.DeploymentSpec(
        service_id=draw(text),
        namespace=draw(text),
        image=draw(text),
        command=draw(st.lists(text, max_size=4)),
        env=draw(string_maps),
        replicas=draw(numbers),
        labels=draw(string_maps),
        ports=[
            types.PortSpec(
                container_port=draw(numbers), host_port=draw(numbers), protocol=draw(text)
            )
            for _ in range(draw(st.integers(0, 2)))
        ],
        resources=types.Resources(cpu=draw(text), memory=draw(text)),
        provider_options=draw(string_maps),
    )


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """A method and request bytes: a well-typed random message, or plain garbage."""
    name = draw(st.sampled_from(sorted({**UNARY, **STREAMS})))
    if draw(st.integers(0, 9)) == 0:
        return name, draw(st.binary(max_size=200))
    message: Any = {**UNARY, **STREAMS}[name]()
    for field in message.DESCRIPTOR.fields:
        if field.name == "provider":
            message.provider = draw(st.sampled_from(["", "memory", "configless", "ghost", "x"]))
        elif field.name == "spec":
            message.spec.CopyFrom(draw(specs()))
        elif field.name == "patch":
            message.patch.CopyFrom(
                types.ConfigMapPatch(
                    service_id=draw(text),
                    namespace=draw(text),
                    set=draw(string_maps),
                    remove=draw(st.lists(text, max_size=3)),
                    expected_version=draw(text),
                )
            )
        elif field.name == "interval":
            message.interval.seconds = draw(st.integers(-10, 10_000))
            message.interval.nanos = draw(st.integers(0, 999_999_999))
        elif field.type == field.TYPE_STRING:
            setattr(message, field.name, draw(text))
        elif field.type == field.TYPE_INT32:
            setattr(message, field.name, draw(numbers))
    return name, message.SerializeToString()


class ServerThread:
    """The server runs on its own loop so that hypothesis can drive it synchronously."""

    def __init__(self, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.running: RunningServer = asyncio.run_coroutine_threadsafe(
            start_server(
                server_settings(tmp, call_timeout_seconds=2.0), env={}, registry=make_registry()
            ),
            self.loop,
        ).result(30)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.running.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    server = ServerThread(tmp_path_factory.mktemp("fuzz"))
    with grpc.insecure_channel(f"127.0.0.1:{server.running.port}") as opened:
        yield opened
    server.stop()


def call(channel: Any, name: str, raw: bytes) -> tuple[grpc.StatusCode, Any]:
    """Raw bytes in (no serializer), so that garbage reaches the server as sent."""
    try:
        if name in STREAMS:
            stream = channel.unary_stream(SERVICE + name)(raw, timeout=2)
            for _ in zip(range(1), stream, strict=False):
                pass
            stream.cancel()
        else:
            channel.unary_unary(SERVICE + name)(raw, timeout=5)
    except grpc.RpcError as error:
        return error.code(), error
    return grpc.StatusCode.OK, None


@settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
@given(requests())
def test_random_requests_get_deliberate_answers(
    channel: grpc.Channel, case: tuple[str, bytes]
) -> None:
    name, raw = case
    code, error = call(channel, name, raw)
    if code is grpc.StatusCode.CANCELLED:  # our own cancel after the first stream message
        return
    assert code in DELIBERATE, f"{name}: {code} {error}"
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        found = details(error)
        assert found.bad_request is not None and found.fields, f"{name}: {found.message}"
