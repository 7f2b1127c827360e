"""Metrics from Cloud Monitoring: the unit of cpu_percent, a stream that survives errors."""

from __future__ import annotations

import time
from dataclasses import replace

import grpc
import pytest
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports import (
    MetricServiceGrpcAsyncIOTransport,
)
from google.protobuf import timestamp_pb2

from alphaswarm_controller.providers.gcp import CloudRunProvider
from alphaswarm_controller.providers.gcp.cloudrun import cloud_run_name
from alphaswarm_controller.providers.gcp.metrics import (
    CPU_UTILIZATIONS,
    INSTANCE_COUNT,
    MEMORY_UTILIZATIONS,
    RECEIVED_BYTES,
    REQUEST_COUNT,
)
from alphaswarm_controller.providers.gcp.retry import MAX_ATTEMPTS
from alphaswarm_core.providers.protocol import DeploymentNotFoundError, Resources
from alphaswarm_core.testing import SpecFactory
from tests.fakes.faults import Kind
from tests.fakes.gcp_auth import PROJECT
from tests.fakes.gcp_server import GcpEmulator

from .conftest import REGION


async def _write_series(
    emulator: GcpEmulator, short: str, metric: str, value: monitoring_v3.TypedValue
) -> None:
    client = monitoring_v3.MetricServiceAsyncClient(
        transport=MetricServiceGrpcAsyncIOTransport(
            channel=grpc.aio.insecure_channel(emulator.address)
        )
    )
    point = monitoring_v3.Point(
        interval=monitoring_v3.TimeInterval(
            end_time=timestamp_pb2.Timestamp(seconds=int(time.time()) - 30)
        ),
        value=value,
    )
    series = monitoring_v3.TimeSeries(
        metric={"type": metric},
        resource={
            "type": "cloud_run_revision",
            "labels": {"service_name": short, "location": REGION},
        },
        points=[point],
    )
    try:
        await client.create_time_series(name=f"projects/{PROJECT}", time_series=[series])
    finally:
        await client.transport.close()  # type: ignore[no-untyped-call]


async def test_cpu_percent_is_percent_of_one_core_summed_over_instances(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    namespace: str,
    cloud_run_specs: SpecFactory,
) -> None:
    spec = replace(cloud_run_specs("met", namespace, replicas=2), resources=Resources("2", "1Gi"))
    await cloud_run.start(spec)
    emulator.faults.clear()  # the writes below are the test's, not the provider's
    short = cloud_run_name(namespace, "met")
    typed = monitoring_v3.TypedValue
    await _write_series(emulator, short, INSTANCE_COUNT, typed(int64_value=3))
    await _write_series(
        emulator, short, CPU_UTILIZATIONS, typed(distribution_value={"count": 3, "mean": 0.5})
    )
    await _write_series(
        emulator, short, MEMORY_UTILIZATIONS, typed(distribution_value={"count": 3, "mean": 0.25})
    )
    await _write_series(emulator, short, REQUEST_COUNT, typed(int64_value=42))
    await _write_series(emulator, short, RECEIVED_BYTES, typed(int64_value=1000))

    stream = cloud_run.stream_metrics("met", namespace=namespace, interval_seconds=0.05)
    try:
        sample = await anext(stream)
    finally:
        await stream.aclose()
    assert sample.ok, sample.error
    assert sample.replicas == 3
    # Cloud Run's utilisation is of each instance's 2 vCPU: three instances half busy are
    # three cores in use, 300 in MetricSample.cpu_percent's unit (issue 17).
    assert sample.cpu_percent == pytest.approx(300.0)
    assert sample.extra["cpu_utilization"] == pytest.approx(0.5)
    assert sample.memory_bytes == 3 * 2**30 // 4
    assert sample.extra["request_count"] == 42
    assert (sample.network_rx_bytes, sample.network_tx_bytes) == (1000, 0)


async def test_metrics_stream_survives_an_outage_with_bounded_requests(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    namespace: str,
    cloud_run_specs: SpecFactory,
) -> None:
    await cloud_run.start(cloud_run_specs("flaky", namespace, replicas=2))
    emulator.faults.clear()
    emulator.faults.inject("monitoring:ListTimeSeries", Kind.UNAVAILABLE, times=0)
    stream = cloud_run.stream_metrics("flaky", namespace=namespace, interval_seconds=0.05)
    try:
        first = await anext(stream)
        # Six series per sample, each tried at most MAX_ATTEMPTS times: no spinning.
        assert emulator.faults.count("monitoring:ListTimeSeries") <= 6 * MAX_ATTEMPTS
        emulator.faults.clear()
        second = await anext(stream)
    finally:
        await stream.aclose()
    assert not first.ok and "Cloud Monitoring" in first.error
    assert second.ok and second.replicas == 2 and second.memory_bytes > 0


async def test_metrics_of_unknown_service_are_not_found(
    cloud_run: CloudRunProvider, namespace: str
) -> None:
    stream = cloud_run.stream_metrics("ghost", namespace=namespace)
    try:
        with pytest.raises(DeploymentNotFoundError):
            await anext(stream)
    finally:
        await stream.aclose()
