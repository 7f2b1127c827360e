"""Many metric subscribers on one service share one backend stream."""

from __future__ import annotations

import asyncio
import contextlib

import grpc

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_controller.fanout import MetricsFanout
from alphaswarm_core.providers.models import MetricSample
from tests.fakes.memory_provider import MemoryProvider
from tests.service.conftest import Harness


async def started(provider: MemoryProvider, service_id: str, replicas: int = 2) -> None:
    from alphaswarm_core.providers.models import DeploymentSpec

    await provider.start(DeploymentSpec(service_id, command=("sleep", "1"), replicas=replicas))


async def test_one_backend_stream_for_a_thousand_subscribers() -> None:
    provider = MemoryProvider(env={})
    await started(provider, "web")
    fanout: MetricsFanout[MetricSample] = MetricsFanout()

    async def first_two() -> list[int]:
        seen = []
        async with contextlib.aclosing(fanout.subscribe(provider, "web", "default", 0.1)) as feed:
            async for sample in feed:
                seen.append(sample.replicas)
                if len(seen) == 2:
                    break
        return seen

    results = await asyncio.gather(*(first_two() for _ in range(1000)))
    assert all(r == [2, 2] for r in results)
    assert provider.calls.count("stream_metrics") == 1
    assert fanout.feeds() == 0 and provider.open_streams == 0, "last subscriber closes it"


async def test_intervals_and_services_get_their_own_feeds() -> None:
    provider = MemoryProvider(env={})
    await started(provider, "a")
    await started(provider, "b")
    fanout: MetricsFanout[MetricSample] = MetricsFanout()
    streams = [
        fanout.subscribe(provider, "a", "default", 0.1),
        fanout.subscribe(provider, "a", "default", 0.2),
        fanout.subscribe(provider, "b", "default", 0.1),
        fanout.subscribe(provider, "a", "default", 0.1),
    ]
    for stream in streams:
        await anext(stream)
    assert fanout.feeds() == 3
    assert provider.open_streams == 3
    for stream in streams:
        await stream.aclose()
    assert fanout.feeds() == 0 and provider.open_streams == 0


async def test_backend_error_reaches_every_subscriber_and_feed_is_not_reused() -> None:
    provider = MemoryProvider(env={})
    fanout: MetricsFanout[MetricSample] = MetricsFanout()
    outcomes = await asyncio.gather(
        *(anext(fanout.subscribe(provider, "missing", "default", 0.1)) for _ in range(3)),
        return_exceptions=True,
    )
    assert all(type(o).__name__ == "DeploymentNotFoundError" for o in outcomes)
    assert fanout.feeds() == 0


async def test_grpc_subscribers_share_one_feed(harness: Harness) -> None:
    await harness.stub.StartDeployment(
        pb.StartDeploymentRequest(
            spec=types.DeploymentSpec(service_id="web", command=["sleep", "1"], replicas=1)
        )
    )
    memory = await harness.provider()
    request = pb.StreamMetricsRequest(service_id="web")
    request.interval.FromMilliseconds(100)
    calls = [harness.stub.StreamMetrics(request) for _ in range(200)]
    firsts = await asyncio.gather(*(call.read() for call in calls))
    assert all(isinstance(f, pb.StreamMetricsResponse) and f.sample.ok for f in firsts)
    assert memory.calls.count("stream_metrics") == 1
    assert memory.open_streams == 1
    for call in calls:
        call.cancel()
    async with asyncio.timeout(10):
        while memory.open_streams:  # noqa: ASYNC110 - the server closes it asynchronously
            await asyncio.sleep(0.05)
    assert await calls[0].code() == grpc.StatusCode.CANCELLED
