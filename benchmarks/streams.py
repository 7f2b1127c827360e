"""Metric fan-out and memory per open stream, against the full server.

Every sample of the in-memory provider carries a provider-wide poll number (the count
of polls it made, across services) and the time of its poll, so the client side can
count how many backend polls served all subscribers: the difference of the last poll
numbers made before each end of the window. Counting the distinct polls whose samples
arrived in the window, as this did before, also counted polls made before it, for
subscribers that far behind (the client falls behind unevenly with thousands of
streams): 1.13-1.25 per service and second arrived where 0.87-1.00 were made, in the
same runs. Samples made in the window are collected for a while after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import grpc

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from benchmarks.harness import now, server

# Channels to one address share a connection unless told otherwise, and one
# connection carries at most ALPHASWARM_CP_MAX_STREAMS_PER_CONNECTION streams.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
#: How long after the window samples made in it are still collected.
DRAIN_SECONDS = 3.0


async def _subscribe(
    stub: pb_grpc.ProviderServiceAsyncStub,
    service_id: str,
    interval_ms: int,
    polls: dict[int, float],
    counter: list[int],
    *,
    arrived: set[int] | None = None,
) -> None:
    """One subscriber. gRPC's client cancels a few streams of a burst of thousands
    before they start (seen with a bare grpc.aio server too): those re-subscribe."""
    request = pb.StreamMetricsRequest(service_id=service_id)
    request.interval.FromMilliseconds(interval_ms)
    received = False
    while not received:
        try:
            async for response in stub.StreamMetrics(request):
                received = True
                made = response.sample.timestamp
                poll = int(response.sample.extra["poll"])
                polls[poll] = made.seconds + made.nanos / 1e9
                if arrived is not None:
                    arrived.add(poll)
                counter[0] += 1
            return
        except grpc.aio.AioRpcError as error:
            if error.code() is not grpc.StatusCode.CANCELLED:
                raise
            await asyncio.sleep(0.1)


def _last_poll_before(polls: dict[int, float], moment: float) -> int:
    return max((poll for poll, at in polls.items() if at < moment), default=0)


async def _fanout(
    address: str, services: int, per_service: int, seconds: float, channels: int
) -> dict[str, float]:
    opened = [grpc.aio.insecure_channel(address, options=OWN_CONNECTION) for _ in range(channels)]
    stubs = [pb_grpc.ProviderServiceStub(c) for c in opened]
    polls: dict[int, float] = {}
    arrived: set[int] = set()  # the polls whose samples arrived in the window, made when not
    counter = [0]
    tasks = [
        asyncio.create_task(
            _subscribe(
                stubs[i % channels], f"svc-{i % services}", 1000, polls, counter, arrived=arrived
            )
        )
        for i in range(services * per_service)
    ]
    await asyncio.sleep(2.0)  # every subscriber connected and served its first sample
    counter[0] = 0
    arrived.clear()
    # The provider stamps its samples with the wall clock, as this does.
    window_start, started = time.time(), now()
    await asyncio.sleep(seconds)
    window_end, elapsed = time.time(), now() - started
    delivered, arrivals = counter[0], len(arrived)
    await asyncio.sleep(DRAIN_SECONDS)
    # Poll numbers count every poll the provider made, delivered or not (a subscriber
    # far behind drops the oldest samples): the last number before each end of the
    # window tells how many were made within it.
    made = _last_poll_before(polls, window_end) - _last_poll_before(polls, window_start)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for channel in opened:
        await channel.close(None)
    return {
        "subscribers": services * per_service,
        "polls_per_interval": made / (window_end - window_start),
        "polls_arrived_per_interval": arrivals / elapsed,
        "messages_per_second": delivered / elapsed,
        "seconds": elapsed,
    }


def fanout(services: int, per_service: int, seconds: float) -> dict[str, float]:
    with server("full", services=services) as target:
        cpu_before, started = target.cpu_seconds(), now()
        rss_before = target.rss()
        result = asyncio.run(_fanout(target.address, services, per_service, seconds, 16))
        result["server_cpu_cores"] = (target.cpu_seconds() - cpu_before) / (now() - started)
        result["server_rss_per_stream_kib"] = (
            (target.rss() - rss_before) / 1024 / max(1, services * per_service)
        )
    return result


async def _idle(address: str, streams: int, measure: Callable[[], None]) -> None:
    opened = [grpc.aio.insecure_channel(address, options=OWN_CONNECTION) for _ in range(4)]
    stubs = [pb_grpc.ProviderServiceStub(c) for c in opened]
    polls: dict[int, float] = {}
    counter = [0]
    tasks = [
        asyncio.create_task(_subscribe(stubs[i % 4], "svc-0", 3_600_000, polls, counter))
        for i in range(streams)
    ]
    # Each stream got its first (latest) sample: all are open.
    while counter[0] < streams:  # noqa: ASYNC110 - counting arrivals from many tasks
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    measure()
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for channel in opened:
        await channel.close(None)


def idle_stream_memory(streams: int) -> dict[str, float]:
    with server("full") as target:
        before = target.rss()
        after: list[int] = []
        asyncio.run(_idle(target.address, streams, lambda: after.append(target.rss())))
    return {"streams": streams, "rss_per_stream_kib": (after[0] - before) / 1024 / streams}
