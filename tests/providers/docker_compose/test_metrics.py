"""Metrics: shared stats streams, the proto's CPU unit, surviving the engine going away."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

import pytest

from alphaswarm_controller.providers.docker_compose import DockerComposeProvider
from alphaswarm_core.providers.protocol import (
    DeploymentNotFoundError,
    Resources,
)
from alphaswarm_core.testing import SpecFactory, ready, wait_for
from tests.providers.docker_compose.support import (
    EngineProxy,
    engine_socket_path,
    provider_env,
)

# -- metrics --------------------------------------------------------------------------------


async def test_metrics_share_one_stats_stream_per_container(
    provider: DockerComposeProvider, spec_factory: SpecFactory, namespace: str
) -> None:
    await provider.start(spec_factory("m", namespace, replicas=2))
    settled = await wait_for(provider, "m", namespace, ready(2))
    first = provider.stream_metrics("m", namespace=namespace, interval_seconds=0.2)
    second = provider.stream_metrics("m", namespace=namespace, interval_seconds=0.2)
    a = await anext(first)
    b = await anext(second)
    assert a.ok and b.ok, (a.error, b.error)
    assert a.replicas == b.replicas == 2 and a.memory_bytes > 0
    streams = provider.stats.open_streams()
    assert len(streams) == 2 and set(streams.values()) == {2}
    assert {cid[:12] for cid in streams} == {i.instance_id for i in settled.instances}

    await first.aclose()
    assert set(provider.stats.open_streams().values()) == {1}
    await second.aclose()
    assert provider.stats.open_streams() == {}
    # The engine streams are really closed: their reader threads end.
    for _ in range(50):
        if not [t for t in threading.enumerate() if t.name.startswith("docker-stats-")]:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("stats reader threads outlived their last subscriber")


async def test_metrics_survive_the_engine_going_away(
    spec_factory: SpecFactory, namespace: str
) -> None:
    proxy = EngineProxy(engine_socket_path())
    provider = DockerComposeProvider(env=provider_env(DOCKER_HOST=proxy.docker_host))
    try:
        await provider.start(spec_factory("m", namespace, replicas=1))
        await wait_for(provider, "m", namespace, ready(1))
        stream = provider.stream_metrics("m", namespace=namespace, interval_seconds=0.1)
        first = await anext(stream)
        assert first.ok, first.error
        proxy.cut()
        after = [await anext(stream) for _ in range(3)]
        assert all(not sample.ok for sample in after), "failed reads are marked, not hidden"
        assert "DOCKER_HOST" in after[-1].error
        await stream.aclose()
        assert provider.stats.open_streams() == {}
    finally:
        await provider.close()
        proxy.close()


async def test_metrics_of_unknown_service_is_not_found(
    provider: DockerComposeProvider, namespace: str
) -> None:
    stream = provider.stream_metrics("ghost", namespace=namespace, interval_seconds=0.2)
    with pytest.raises(DeploymentNotFoundError):
        await anext(stream)


async def test_cpu_percent_is_percent_of_one_core_from_the_first_sample(
    provider: DockerComposeProvider, spec_factory: SpecFactory, namespace: str
) -> None:
    # One replica spinning under a limit of half a core: the kernel's CFS quota keeps
    # it at or below 50 % of one core, and any machine gives a busy loop more than
    # 5 %. Before the fix the first sample divided CPU time since the container
    # started by host time since boot (the stream's first frame has no previous
    # reading) and reported about 0.001.
    busy = replace(
        spec_factory("busy", namespace),
        command=("/bin/sh", "-c", "while :; do :; done"),
        resources=Resources(cpu="500m"),
    )
    await provider.start(busy)
    await wait_for(provider, "busy", namespace, ready(1))
    stream = provider.stream_metrics("busy", namespace=namespace, interval_seconds=1.0)
    try:
        samples = [await anext(stream) for _ in range(3)]
    finally:
        await stream.aclose()
    for sample in samples:
        assert sample.ok, sample.error
        assert 5.0 < sample.cpu_percent <= 50.0 * 1.2, samples
