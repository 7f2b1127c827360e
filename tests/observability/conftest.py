"""In-process servers (memory providers, port 0) with chosen observability, and helpers."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_controller.observability import Observability
from alphaswarm_controller.server import RunningServer, start_server
from tests.fakes.memory_provider import MemoryProvider
from tests.service.conftest import make_registry, settings


@dataclass
class Served:
    running: RunningServer
    channel: grpc.aio.Channel
    stub: pb_grpc.ProviderServiceAsyncStub

    async def memory(self) -> MemoryProvider:
        instance = await self.running.pool.get("memory")
        assert isinstance(instance, MemoryProvider)
        return instance


ServeFactory = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve(tmp_path: object) -> AsyncIterator[ServeFactory]:
    """``await serve(observability=..., **settings_overrides)`` -> a connected server."""
    started: list[Served] = []

    async def factory(observability: Observability | None = None, **overrides: object) -> Served:
        running = await start_server(
            settings(tmp_path, **overrides),  # type: ignore[arg-type]
            env={},
            registry=make_registry(),
            observability=observability,
        )
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        served = Served(running, channel, pb_grpc.ProviderServiceStub(channel))
        started.append(served)
        return served

    yield factory
    for served in started:
        await served.channel.close(None)
        await served.running.stop()


def spec(service_id: str, replicas: int = 1) -> types.DeploymentSpec:
    return types.DeploymentSpec(service_id=service_id, command=["sleep", "300"], replicas=replicas)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    """GET /metrics over HTTP and index every sample by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample ``name`` with exactly ``labels``; 0 when absent (not yet observed)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scraped_when(port: int, done: Callable[[Samples], bool], within: float = 10.0) -> Samples:
    """Scrape until ``done`` holds (bounded by ``within`` seconds) and return the last one.
    A call's end is counted after the caller has its status (grpc aio's abort sends the
    status first; a cancelled stream ends on the server later): poll for it."""
    deadline = time.monotonic() + within
    samples = await asyncio.to_thread(scrape, port)
    while not done(samples) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        samples = await asyncio.to_thread(scrape, port)
    return samples
