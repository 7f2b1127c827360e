"""CloudWatch metrics through stream_metrics: data put into moto CloudWatch, read back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import pytest

from alphaswarm_controller.providers.aws import EcsProvider
from alphaswarm_controller.providers.aws.retry import RetryPolicy
from alphaswarm_controller.providers.aws.taskdef import service_name
from alphaswarm_core.providers.protocol import DeploymentSpec, MetricSample, Resources
from alphaswarm_core.testing import ready, unique_name, wait_for
from tests.fakes.faults import Kind
from tests.fakes.moto_server import IMAGE, EcsTestBed, ecs_test_bed

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def bed() -> Iterator[EcsTestBed]:
    with ecs_test_bed(publish_metrics=False) as test_bed:  # this module puts its own data
        yield test_bed


@pytest.fixture
async def service(provider: EcsProvider) -> tuple[str, str]:
    namespace, name = unique_name("ns"), unique_name()
    spec = DeploymentSpec(
        name, namespace, image=IMAGE, replicas=2, resources=Resources(cpu="1", memory="2Gi")
    )
    await provider.start(spec)
    await wait_for(provider, name, namespace, ready(2))
    return namespace, name


def put(bed: EcsTestBed, service: str, cpu: float, memory: float) -> None:
    dimensions = [
        {"Name": "ClusterName", "Value": bed.cluster},
        {"Name": "ServiceName", "Value": service},
    ]
    bed.aws.client("cloudwatch").put_metric_data(
        Namespace="AWS/ECS",
        MetricData=[
            {
                "MetricName": "CPUUtilization",
                "Dimensions": dimensions,
                "Value": cpu,
                "Unit": "Percent",
                "Timestamp": datetime.now(UTC),
            },
            {
                "MetricName": "MemoryUtilization",
                "Dimensions": dimensions,
                "Value": memory,
                "Unit": "Percent",
                "Timestamp": datetime.now(UTC),
            },
        ],
    )


async def take(stream: AsyncIterator[MetricSample], count: int) -> list[MetricSample]:
    samples: list[MetricSample] = []
    try:
        async with asyncio.timeout(30):
            async for sample in stream:
                samples.append(sample)
                if len(samples) == count:
                    break
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    return samples


async def test_cloudwatch_data_read_back_through_the_stream(
    provider: EcsProvider, bed: EcsTestBed, service: tuple[str, str]
) -> None:
    namespace, name = service
    [before] = await take(
        provider.stream_metrics(name, namespace=namespace, interval_seconds=0.1), 1
    )
    assert not before.ok and "no CloudWatch datapoint" in before.error
    assert before.replicas == 2

    put(bed, service_name(namespace, name), cpu=42.0, memory=50.0)
    samples = await take(
        provider.stream_metrics(name, namespace=namespace, interval_seconds=0.1), 2
    )
    last = samples[-1]
    assert last.ok, last.error
    assert last.replicas == 2
    # MetricSample.cpu_percent is percent of one core summed over replicas: 42 % of the
    # 1 vCPU each of 2 tasks reserves is 0.84 cores, 84.
    assert last.cpu_percent == pytest.approx(84.0)
    assert last.extra["cpu_utilization_percent"] == pytest.approx(42.0)
    assert last.memory_bytes == 2048 * MIB  # 50% of 2 tasks x 2 GiB reserved
    assert last.extra["memory_utilization_percent"] == pytest.approx(50.0)
    assert last.extra["running_tasks"] == 2.0


async def test_stream_honours_the_interval(
    provider: EcsProvider, bed: EcsTestBed, service: tuple[str, str]
) -> None:
    namespace, name = service
    put(bed, service_name(namespace, name), cpu=1.0, memory=1.0)
    samples = await take(
        provider.stream_metrics(name, namespace=namespace, interval_seconds=0.5), 3
    )
    # Samples are due at fixed times from the first (Cadence): a late one is followed by
    # a shorter gap, so only the time since the first has a bound a loaded machine cannot
    # break (was: each gap >= 0.45 s, 0.4497 s once beside a CPU hog). A stream that
    # ignores the interval sends them back to back and fails it.
    since_first = [(s.timestamp - samples[0].timestamp).total_seconds() for s in samples]
    assert all(t >= k * 0.5 - 0.01 for k, t in enumerate(since_first)), since_first


async def test_transient_error_marks_the_sample_and_the_stream_goes_on(
    provider: EcsProvider, bed: EcsTestBed, service: tuple[str, str]
) -> None:
    namespace, name = service
    put(bed, service_name(namespace, name), cpu=5.0, memory=10.0)
    provider.clients.policy = RetryPolicy(max_attempts=2, base_seconds=0.01, cap_seconds=0.02)
    before = bed.faults.count("cloudwatch:GetMetricData")
    # CloudWatch throttles every GetMetricData of the first two samples (2 attempts each).
    bed.faults.inject("cloudwatch:GetMetricData", Kind.THROTTLED, times=4)
    samples = await take(
        provider.stream_metrics(name, namespace=namespace, interval_seconds=0.1), 3
    )
    assert [s.ok for s in samples] == [False, False, True], [s.error for s in samples]
    assert "throttled" in samples[0].error
    sent = bed.faults.count("cloudwatch:GetMetricData") - before
    assert sent == 2 + 2 + 1, "one bounded retry per sample, then the next interval"
