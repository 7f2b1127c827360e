"""CloudWatch metrics through stream_metrics: data put into moto CloudWatch, read back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import pytest

from alphaswarm_controller.providers.aws import AwsProvider
from alphaswarm_controller.providers.aws.errors import translate
from alphaswarm_controller.providers.aws.taskdef import service_name
from alphaswarm_core.providers.protocol import DeploymentSpec, MetricSample, Resources
from alphaswarm_core.testing import ready, unique_name, wait_for
from tests.fakes.moto_server import IMAGE, EcsTestBed, ecs_test_bed

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def bed() -> Iterator[EcsTestBed]:
    with ecs_test_bed(publish_metrics=False) as test_bed:  # this module puts its own data
        yield test_bed


@pytest.fixture
async def service(provider: AwsProvider) -> tuple[str, str]:
    namespace, name = unique_name("ns"), unique_name()
    spec = DeploymentSpec(
        name, namespace, image=IMAGE, replicas=2, resources=Resources(cpu="500m", memory="1Gi")
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
    provider: AwsProvider, bed: EcsTestBed, service: tuple[str, str]
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
    assert last.cpu_percent == pytest.approx(42.0)
    assert last.memory_bytes == 1024 * MIB  # 50% of 2 tasks x 1 GiB reserved
    assert last.extra["memory_utilization_percent"] == pytest.approx(50.0)
    assert last.extra["running_tasks"] == 2.0


async def test_stream_honours_the_interval(
    provider: AwsProvider, bed: EcsTestBed, service: tuple[str, str]
) -> None:
    namespace, name = service
    put(bed, service_name(namespace, name), cpu=1.0, memory=1.0)
    samples = await take(
        provider.stream_metrics(name, namespace=namespace, interval_seconds=0.5), 3
    )
    gaps = [(b.timestamp - a.timestamp).total_seconds() for a, b in pairwise(samples)]
    assert all(gap >= 0.45 for gap in gaps), gaps


async def test_transient_error_marks_the_sample_and_the_stream_goes_on(
    provider: AwsProvider,
    bed: EcsTestBed,
    service: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from botocore.exceptions import ClientError  # type: ignore[import-untyped]

    namespace, name = service
    put(bed, service_name(namespace, name), cpu=5.0, memory=10.0)
    original = provider.clients.call
    failures = {"left": 1}

    def flaky(service_: str, operation: str, /, **kwargs: Any) -> Any:
        if operation == "GetMetricData" and failures["left"]:
            failures["left"] -= 1
            error = ClientError(
                {
                    "Error": {"Code": "Throttling", "Message": "Rate exceeded"},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                "GetMetricData",
            )
            raise translate(error, "cloudwatch", "GetMetricData")
        return original(service_, operation, **kwargs)

    monkeypatch.setattr(provider.clients, "call", flaky)
    samples = await take(
        provider.stream_metrics(name, namespace=namespace, interval_seconds=0.1), 2
    )
    assert not samples[0].ok
    assert "throttled" in samples[0].error
    assert samples[1].ok, samples[1].error
