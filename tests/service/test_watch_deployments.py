"""WatchDeployments over the wire: one shared backend poll per namespace and interval,
whatever the number of watchers; every watcher gets the snapshot, then each change."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

import grpc

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_core.providers.models import DeploymentSpec
from tests.service.conftest import Harness

SERVICES = 50
WATCHERS = 20
#: The polling watch's interval (InfrastructureProvider.watch_deployments' default).
POLL_INTERVAL = 2.0


Stream = grpc.aio.UnaryStreamCall[pb.WatchDeploymentsRequest, pb.WatchDeploymentsResponse]


async def next_event(stream: Stream) -> pb.WatchDeploymentsResponse:
    event = await asyncio.wait_for(stream.read(), 30)
    assert isinstance(event, pb.WatchDeploymentsResponse), "the watch ended"
    return event


async def snapshot(stream: Stream) -> set[str]:
    """The services of the initial snapshot, read up to its end marker."""
    names: set[str] = set()
    while True:
        event = await next_event(stream)
        if event.event == types.DEPLOYMENT_EVENT_INITIAL_SNAPSHOT_DONE:
            return names
        assert event.event == types.DEPLOYMENT_EVENT_ADDED
        names.add(event.status.service_id)


async def test_fifty_services_twenty_watchers_one_poll_per_interval(harness: Harness) -> None:
    memory = await harness.provider()
    for index in range(SERVICES):
        await memory.start(DeploymentSpec(f"svc-{index}", "shop", image="memory/app:1"))
    await memory.start(DeploymentSpec("elsewhere", "other", image="memory/app:1"))
    streams = [
        harness.stub.WatchDeployments(pb.WatchDeploymentsRequest(namespace="shop"))
        for _ in range(WATCHERS)
    ]
    try:
        expected = {f"svc-{index}" for index in range(SERVICES)}
        before = memory.calls.count("list_deployments")
        started = time.monotonic()
        for stream in streams:
            assert await snapshot(stream) == expected, "every watcher sees the whole namespace"

        await memory.scale("svc-7", 3, namespace="shop")
        for stream in streams:
            event = await next_event(stream)
            assert (event.event, event.status.service_id) == (
                types.DEPLOYMENT_EVENT_MODIFIED,
                "svc-7",
            )
            assert event.status.desired_replicas == 3
        await memory.delete("svc-8", namespace="shop")
        for stream in streams:
            event = await next_event(stream)
            assert (event.event, event.status.service_id) == (
                types.DEPLOYMENT_EVENT_DELETED,
                "svc-8",
            )
        polls = memory.calls.count("list_deployments") - before
        elapsed = time.monotonic() - started
    finally:
        for stream in streams:
            stream.cancel()
    # One shared poll per interval (plus the first), not one per watcher or service: a
    # loaded machine can only make fewer, never more.
    assert 1 <= polls <= math.ceil(elapsed / POLL_INTERVAL) + 1, (polls, elapsed)


async def test_the_last_watcher_leaving_stops_the_poll(harness: Harness) -> None:
    memory = await harness.provider()
    await memory.start(DeploymentSpec("web", "shop", image="memory/app:1"))
    stream = harness.stub.WatchDeployments(pb.WatchDeploymentsRequest(namespace="shop"))
    assert await snapshot(stream) == {"web"}
    stream.cancel()
    with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
        await stream.read()
    # The server notices the cancelled call, then the feed ends with its last subscriber:
    # the polls stop (two intervals without one), within a bound.
    deadline = time.monotonic() + 30
    while True:
        seen = memory.calls.count("list_deployments")
        await asyncio.sleep(POLL_INTERVAL * 2)
        if memory.calls.count("list_deployments") == seen:
            break
        assert time.monotonic() < deadline, "the shared poll outlived its last watcher"
