"""Limits and injected faults: deadlines free threads, dying streams end cleanly, caps hold."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_controller.server import RunningServer, start_server
from alphaswarm_core.providers.models import DeploymentSpec
from alphaswarm_core.providers.registry import Registry
from tests.fakes.fault_provider import FaultProvider
from tests.security.conftest import ServerFactory
from tests.service.conftest import settings
from tests.service.rich_status import details


@pytest.fixture
async def faulty(tmp_path: Path) -> AsyncIterator[tuple[RunningServer, FaultProvider]]:
    registry = Registry(builtins=())
    registry.register("faulty", FaultProvider)
    running = await start_server(
        settings(tmp_path, default_provider="faulty", providers=("faulty",)),
        env={},
        registry=registry,
    )
    provider = await running.pool.get("faulty")
    assert isinstance(provider, FaultProvider)
    await provider.start(DeploymentSpec("web", command=("sleep", "1"), replicas=2))
    yield running, provider
    await running.stop()


async def test_deadline_ends_a_hanging_backend_call_and_frees_its_thread(
    faulty: tuple[RunningServer, FaultProvider],
) -> None:
    running, provider = faulty
    provider.blocking_hang_seconds = 30.0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = pb_grpc.ProviderServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetDeploymentStatus(
                pb.GetDeploymentStatusRequest(service_id="web"), timeout=0.5
            )
        assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        async with asyncio.timeout(3):  # far less than the 30 s hang
            while provider.active_blocking_calls:  # noqa: ASYNC110 - thread state
                await asyncio.sleep(0.05)
        provider.blocking_hang_seconds = 0
        ok = await stub.GetDeploymentStatus(pb.GetDeploymentStatusRequest(service_id="web"))
        assert ok.status.ready_replicas == 2


async def test_stream_whose_backend_dies_ends_unavailable_with_retry(
    faulty: tuple[RunningServer, FaultProvider],
) -> None:
    running, provider = faulty
    provider.stream_fail_after = 2
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = pb_grpc.ProviderServiceStub(channel)
        request = pb.StreamMetricsRequest(service_id="web")
        request.interval.FromMilliseconds(100)
        received = 0
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stub.StreamMetrics(request):
                received += 1
        assert received == 2
        found = details(caught.value)
        assert found.code is grpc.StatusCode.UNAVAILABLE
        assert found.retry_info is not None
        assert found.retry_info.retry_delay.seconds == 3
    assert provider.open_streams == 0


async def test_cancelled_clients_leave_no_task_behind(
    faulty: tuple[RunningServer, FaultProvider],
) -> None:
    running, provider = faulty
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = pb_grpc.ProviderServiceStub(channel)
        request = pb.StreamMetricsRequest(service_id="web")
        request.interval.FromMilliseconds(100)
        calls = [stub.StreamMetrics(request) for _ in range(20)]
        watches = [
            stub.WatchDeployment(pb.WatchDeploymentRequest(service_id="web")) for _ in range(20)
        ]
        for call in calls + watches:
            await call.read()
        for call in calls + watches:
            call.cancel()
    # The server's own count of open streams, and the backend's: both back to zero.
    async with asyncio.timeout(30):
        while (running.streams and running.streams.open) or provider.open_streams:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_total_stream_cap(make_server: ServerFactory) -> None:
    running = await make_server(max_streams=3)
    memory = await running.pool.get("memory")
    await memory.start(DeploymentSpec("web", command=("sleep", "1")))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = pb_grpc.ProviderServiceStub(channel)
        request = pb.WatchDeploymentRequest(service_id="web")
        open_calls = [stub.WatchDeployment(request) for _ in range(3)]
        for call in open_calls:
            await call.read()
        extra = stub.WatchDeployment(request)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await extra.read()
        found = details(caught.value)
        assert found.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert found.error_info is not None and found.error_info.reason == "STREAM_LIMIT"
        open_calls[0].cancel()
        async with asyncio.timeout(30):
            while running.streams and running.streams.open > 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        again = stub.WatchDeployment(request)
        assert isinstance(await again.read(), pb.WatchDeploymentResponse)
        for call in [*open_calls, again]:
            call.cancel()


async def test_oversized_message_is_refused(make_server: ServerFactory) -> None:
    running = await make_server(max_message_bytes=64 * 1024)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = pb_grpc.ProviderServiceStub(channel)
        spec = types.DeploymentSpec(service_id="web", command=["x" * (100 * 1024)])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.StartDeployment(pb.StartDeploymentRequest(spec=spec))
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
