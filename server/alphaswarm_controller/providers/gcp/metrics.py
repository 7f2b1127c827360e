"""One MetricSample from Cloud Monitoring's Cloud Run time series.

Cloud Run writes, per revision, ``container/instance_count`` (by state),
``container/cpu/utilizations`` and ``container/memory/utilizations``
(distributions of the fraction of each instance's limit in use),
``request_count`` and the container network byte counts. A sample reads them
(six concurrent queries) over a window and takes:

* replicas: the newest instance count of each series, summed over revisions and states;
* cpu_percent: in the unit MetricSample.cpu_percent defines (percent of one core, summed
  over replicas). Cloud Run's utilisation is the fraction of each instance's allocated
  CPU in use, so the sum is mean utilisation x CPU limit in cores x instances x 100:
  three instances of 2 vCPU each half busy report 300;
* memory_bytes: mean memory utilisation x the memory limit x instances (the
  service's total);
* network bytes and ``extra["request_count"]``: summed over the window;
* ``extra``: the raw instance count and utilisations.

Cloud Monitoring samples every 60 s and lags by up to a few minutes, so a
window (ALPHASWARM_GCP_METRICS_WINDOW, default 300 s) is read, not an instant.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from google.cloud import monitoring_v3
from google.protobuf import timestamp_pb2

from alphaswarm_core.providers.concurrency import remaining_timeout
from alphaswarm_core.providers.protocol import MetricSample

from . import retry
from .errors import api_errors

INSTANCE_COUNT = "run.googleapis.com/container/instance_count"
CPU_UTILIZATIONS = "run.googleapis.com/container/cpu/utilizations"
MEMORY_UTILIZATIONS = "run.googleapis.com/container/memory/utilizations"
REQUEST_COUNT = "run.googleapis.com/request_count"
RECEIVED_BYTES = "run.googleapis.com/container/network/received_bytes_count"
SENT_BYTES = "run.googleapis.com/container/network/sent_bytes_count"
METRICS = (
    INSTANCE_COUNT,
    CPU_UTILIZATIONS,
    MEMORY_UTILIZATIONS,
    REQUEST_COUNT,
    RECEIVED_BYTES,
    SENT_BYTES,
)


def _stamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _when(stamp: object) -> float:
    """proto-plus hands Timestamps over as datetimes (its stubs say Timestamp)."""
    if isinstance(stamp, datetime):
        return stamp.timestamp()
    assert isinstance(stamp, timestamp_pb2.Timestamp)
    return stamp.seconds + stamp.nanos / 1e9


class CloudRunMetrics:
    def __init__(
        self,
        client: monitoring_v3.MetricServiceAsyncClient,
        project: str,
        region: str,
        window_seconds: float,
        read_timeout: float = 10.0,
    ) -> None:
        self.client = client
        self.project = project
        self.region = region
        self.window = window_seconds
        self.read_timeout = read_timeout

    async def _series(self, metric: str, service_name: str) -> list[monitoring_v3.TimeSeries]:
        now = time.time()
        request = monitoring_v3.ListTimeSeriesRequest(
            name=f"projects/{self.project}",
            filter=(
                f'metric.type = "{metric}" AND resource.type = "cloud_run_revision" '
                f'AND resource.labels.service_name = "{service_name}" '
                f'AND resource.labels.location = "{self.region}"'
            ),
            interval=monitoring_v3.TimeInterval(
                start_time=_stamp(now - self.window), end_time=_stamp(now)
            ),
            view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
        )
        with api_errors("monitoring"):
            # Transient errors are retried within the window of one sample (bounded by
            # the retry policy); past it the sample is marked not ok and the stream goes on.
            pager = await self.client.list_time_series(
                request=request, retry=retry.policy(self.read_timeout), timeout=remaining_timeout()
            )
            return [series async for series in pager]

    @staticmethod
    def _newest(series: monitoring_v3.TimeSeries) -> monitoring_v3.Point | None:
        points = list(series.points)
        return max(points, key=lambda p: _when(p.interval.end_time)) if points else None

    async def sample(
        self,
        service_name: str,
        *,
        service_id: str,
        namespace: str,
        alias: str,
        cpu_cores: float,
        memory_limit: int,
    ) -> MetricSample:
        found = await asyncio.gather(*(self._series(metric, service_name) for metric in METRICS))
        by_type = dict(zip(METRICS, found, strict=True))
        instances = 0
        for series in by_type[INSTANCE_COUNT]:
            point = self._newest(series)
            instances += int(point.value.int64_value) if point else 0
        cpu = self._mean(by_type[CPU_UTILIZATIONS])
        memory = self._mean(by_type[MEMORY_UTILIZATIONS])
        requests, received, sent = (
            sum(int(p.value.int64_value) for s in by_type[metric] for p in s.points)
            for metric in (REQUEST_COUNT, RECEIVED_BYTES, SENT_BYTES)
        )
        return MetricSample(
            service_id=service_id,
            namespace=namespace,
            provider=alias,
            timestamp=datetime.now(UTC),
            replicas=instances,
            cpu_percent=cpu * cpu_cores * instances * 100,
            memory_bytes=int(memory * memory_limit * instances),
            network_rx_bytes=received,
            network_tx_bytes=sent,
            extra={
                "instance_count": float(instances),
                "cpu_utilization": cpu,
                "memory_utilization": memory,
                "request_count": float(requests),
            },
        )

    def _mean(self, found: list[monitoring_v3.TimeSeries]) -> float:
        """Mean of the newest distribution of each series, weighted by its count."""
        total = weight = 0.0
        for series in found:
            point = self._newest(series)
            if point is None:
                continue
            dist = point.value.distribution_value
            count = max(int(dist.count), 1)
            total += float(dist.mean) * count
            weight += count
        return total / weight if weight else 0.0
