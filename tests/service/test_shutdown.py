"""Graceful stop: NOT_SERVING first, unary calls finish, streams end UNAVAILABLE, nothing left."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_controller.server import start_server
from tests.fakes.memory_provider import MemoryProvider
from tests.service.conftest import make_registry, settings
from tests.service.rich_status import details


async def test_graceful_stop(tmp_path: Path) -> None:
    baseline = set(asyncio.all_tasks())
    running = await start_server(settings(tmp_path), env={}, registry=make_registry())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    stub = pb_grpc.ProviderServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    memory = await running.pool.get("memory")
    assert isinstance(memory, MemoryProvider)

    await stub.StartDeployment(
        pb.StartDeploymentRequest(
            spec=types.DeploymentSpec(service_id="web", command=["sleep", "1"], replicas=1)
        )
    )
    request = pb.StreamMetricsRequest(service_id="web")
    request.interval.FromMilliseconds(100)
    streams = [stub.StreamMetrics(request) for _ in range(100)]
    for stream in streams:
        await stream.read()
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

    memory.hang_seconds = 1.0
    calls_before = memory.calls.count("status")
    in_flight = asyncio.gather(
        *(
            stub.GetDeploymentStatus(pb.GetDeploymentStatusRequest(service_id="web"))
            for _ in range(10)
        )
    )
    async with asyncio.timeout(30):  # all 10 reached the provider before the stop begins
        while memory.calls.count("status") < calls_before + 10:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    stopping = asyncio.ensure_future(running.stop())

    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()
    finished = await in_flight
    assert [f.status.service_id for f in finished] == ["web"] * 10, "in-flight calls complete"
    for stream in streams:
        try:
            while True:
                message = await stream.read()
                assert message is not grpc.aio.EOF  # type: ignore[attr-defined]
        except grpc.aio.AioRpcError as error:
            found = details(error)
            assert found.code is grpc.StatusCode.UNAVAILABLE
            assert found.error_info is not None
            assert found.error_info.reason == "SERVER_SHUTTING_DOWN"
            assert found.retry_info is not None
    await stopping
    await channel.close(None)

    assert memory.closed, "providers are closed"
    assert memory.open_streams == 0, "backend streams released"

    def leftover() -> set[asyncio.Task[object]]:
        return {t for t in asyncio.all_tasks() - baseline if t is not asyncio.current_task()}

    async with asyncio.timeout(10):  # finished tasks leave the loop's set at their next step
        while leftover():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_idle_streams_end_unavailable_at_once(tmp_path: Path) -> None:
    """Streams waiting on their source (a 1-hour metrics interval) end with
    SERVER_SHUTTING_DOWN when the stop begins, not when the 60 s grace runs out."""
    running = await start_server(
        settings(tmp_path, shutdown_grace_seconds=60.0), env={}, registry=make_registry()
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    stub = pb_grpc.ProviderServiceStub(channel)
    await stub.StartDeployment(
        pb.StartDeploymentRequest(
            spec=types.DeploymentSpec(service_id="web", command=["sleep", "1"], replicas=1)
        )
    )
    request = pb.StreamMetricsRequest(service_id="web")
    request.interval.FromSeconds(3600)
    streams = [stub.StreamMetrics(request) for _ in range(20)]
    for stream in streams:
        await stream.read()  # the latest sample; the next is an hour away
    stopping = asyncio.ensure_future(running.stop())
    async with asyncio.timeout(20):  # a third of the grace: only the interruption ends them
        for stream in streams:
            try:
                await stream.read()
                raise AssertionError("an idle stream got a sample while the server stopped")
            except grpc.aio.AioRpcError as error:
                found = details(error)
                assert found.code is grpc.StatusCode.UNAVAILABLE
                assert found.error_info is not None
                assert found.error_info.reason == "SERVER_SHUTTING_DOWN"
        await stopping
    await channel.close(None)
    memory = running.pool.opened()["memory"]
    assert isinstance(memory, MemoryProvider) and memory.open_streams == 0
