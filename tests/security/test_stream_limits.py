"""Every open stream is counted, and every refused one ends RESOURCE_EXHAUSTED with a reason.

grpc.health.v1 Watch needs no token and used to be outside the server-wide cap
(2,384 watches opened against ALPHASWARM_CP_MAX_STREAMS=50). Bursts of new
streams used to end CANCELLED (grpc core's pending-call backlog) or UNAVAILABLE
(HTTP/2 REFUSED_STREAM) instead of the cap's clean refusal.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2_grpc

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm_controller.server import RunningServer
from alphaswarm_core.providers.models import DeploymentSpec
from tests.security.conftest import ServerFactory
from tests.service.rich_status import details

# Long enough that no stream of a burst ends by its deadline on a loaded machine.
DEADLINE = 120.0


async def limited(make_server: ServerFactory, **settings: Any) -> RunningServer:
    running = await make_server(**settings)
    memory = await running.pool.get("memory")
    await memory.start(DeploymentSpec("web", command=("sleep", "1")))
    return running


def channel_to(running: RunningServer) -> grpc.aio.Channel:
    """A channel on a connection of its own (channels share connections by default)."""
    return grpc.aio.insecure_channel(
        f"127.0.0.1:{running.port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )


async def first_message(call: Any) -> str:
    """ "OK" when the stream delivered its first message, else how it ended (and why)."""
    try:
        await call.read()
    except grpc.aio.AioRpcError as error:
        if error.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
            return error.code().name
        found = details(error)
        assert found.error_info is not None and found.error_info.reason == "STREAM_LIMIT"
        return f"RESOURCE_EXHAUSTED:{found.error_info.metadata['scope']}"
    return "OK"


async def refusal_scope(call: Any) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    found = details(caught.value)
    assert found.code is grpc.StatusCode.RESOURCE_EXHAUSTED, found.message
    assert found.error_info is not None and found.error_info.reason == "STREAM_LIMIT"
    assert found.error_info.metadata["limit"] and "retry" in found.message
    return str(found.error_info.metadata["scope"])


@pytest.fixture
async def cleanup() -> AsyncIterator[list[Any]]:
    opened: list[Any] = []
    yield opened
    for item in opened:
        if isinstance(item, grpc.aio.Channel):
            await item.close(None)
        else:
            item.cancel()


async def test_health_watches_are_capped_and_counted(
    make_server: ServerFactory, cleanup: list[Any]
) -> None:
    running = await limited(make_server, max_streams=50)  # watches: a tenth, 5
    channel = channel_to(running)
    cleanup.append(channel)
    health = health_pb2_grpc.HealthStub(channel)
    watches = [health.Watch(health_pb2.HealthCheckRequest(), timeout=DEADLINE) for _ in range(5)]
    cleanup.extend(watches)
    for watch in watches:
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    extra = health.Watch(health_pb2.HealthCheckRequest(service="memory"), timeout=DEADLINE)
    cleanup.append(extra)
    assert await refusal_scope(extra) == "standard_services"

    # Reflection streams share the standard services' cap. The refused stream sends no
    # message: one written after the refusal arrived fails in grpc core, and the client
    # then reports INTERNAL instead of the server's status (see test_auth.refused_code).
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter(()), timeout=DEADLINE
    )
    cleanup.append(reflection)
    assert await refusal_scope(reflection) == "standard_services"

    # ProviderService streams fill the rest of the server-wide cap, watches included.
    stub = pb_grpc.ProviderServiceStub(channel)
    request = pb.WatchDeploymentRequest(service_id="web")
    streams = [stub.WatchDeployment(request, timeout=DEADLINE) for _ in range(45)]
    cleanup.extend(streams)
    assert collections.Counter(await asyncio.gather(*map(first_message, streams))) == {"OK": 45}
    over = stub.WatchDeployment(request, timeout=DEADLINE)
    cleanup.append(over)
    assert await refusal_scope(over) == "server"

    # A closed watch frees its place.
    watches[0].cancel()
    async with asyncio.timeout(30):
        while True:
            again = health.Watch(health_pb2.HealthCheckRequest(), timeout=DEADLINE)
            cleanup.append(again)
            if await first_message(again) == "OK":
                break
            await asyncio.sleep(0.05)


async def test_health_watch_of_an_absurd_service_name_is_refused(
    make_server: ServerFactory, cleanup: list[Any]
) -> None:
    running = await make_server()
    channel = channel_to(running)
    cleanup.append(channel)
    health = health_pb2_grpc.HealthStub(channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service="x" * 100_000), timeout=DEADLINE)
    cleanup.append(watch)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await watch.read()
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as checked:
        await health.Check(health_pb2.HealthCheckRequest(service="x" * 100_000), timeout=DEADLINE)
    assert checked.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_burst_on_one_connection_is_refused_cleanly(
    make_server: ServerFactory, cleanup: list[Any]
) -> None:
    """1,500 streams opened at once on one connection (cap: 1,000 per connection)."""
    running = await limited(make_server, max_streams=10_000, max_streams_per_connection=1000)
    channel = channel_to(running)
    cleanup.append(channel)
    stub = pb_grpc.ProviderServiceStub(channel)
    request = pb.WatchDeploymentRequest(service_id="web")
    calls = [stub.WatchDeployment(request, timeout=DEADLINE) for _ in range(1500)]
    cleanup.extend(calls)
    ended = collections.Counter(await asyncio.gather(*map(first_message, calls)))
    assert ended == {"OK": 1000, "RESOURCE_EXHAUSTED:connection": 500}


async def test_a_burst_over_several_connections_is_refused_cleanly(
    make_server: ServerFactory, cleanup: list[Any]
) -> None:
    """1,500 streams opened at once over three connections (cap: 1,000 in all)."""
    running = await limited(make_server, max_streams=1000)
    channels = [channel_to(running) for _ in range(3)]
    cleanup.extend(channels)
    stubs = [pb_grpc.ProviderServiceStub(channel) for channel in channels]
    request = pb.WatchDeploymentRequest(service_id="web")
    calls = [stubs[i % 3].WatchDeployment(request, timeout=DEADLINE) for i in range(1500)]
    cleanup.extend(calls)
    ended = collections.Counter(await asyncio.gather(*map(first_message, calls)))
    assert ended == {"OK": 1000, "RESOURCE_EXHAUSTED:server": 500}
