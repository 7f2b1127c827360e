"""Azure Monitor metrics of container groups, summed over a service's replicas.

ACI publishes ``CpuUsage`` in millicores and ``MemoryUsage`` in bytes per
container group, at one-minute grain and with a delay of a minute or two, so
each read asks for the last few minutes and keeps each metric's newest point.
``CpuUsage`` ("CPU usage on all cores in millicores", Azure Monitor's metric
reference for Microsoft.ContainerInstance/containerGroups) converts directly to
MetricSample.cpu_percent's unit, percent of one core summed over replicas:
millicores / 10 (500 millicores on each of two replicas -> 100.0), whatever the
groups requested.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from azure.mgmt.monitor import MonitorManagementClient

METRIC_NAMES = ("CpuUsage", "MemoryUsage")
WINDOW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class GroupMetrics:
    cpu_millicores: float | None
    memory_bytes: float | None


def read_group_metrics(
    client: MonitorManagementClient, resource_id: str, timeout: float
) -> GroupMetrics:
    """One Azure Monitor request for one container group (blocking)."""
    end = datetime.now(UTC)
    response = client.metrics.list(
        resource_id.lstrip("/"),
        timespan=f"{(end - WINDOW).isoformat()}/{end.isoformat()}",
        interval="PT1M",
        metricnames=",".join(METRIC_NAMES),
        aggregation="Average",
        connection_timeout=timeout,
        read_timeout=timeout,
    )
    latest: dict[str, float] = {}
    for metric in response.value or []:
        name = metric.name.value if metric.name is not None else None
        if name is None:
            continue
        for series in metric.timeseries or []:
            for point in series.data or []:
                if point.average is not None:
                    latest[name] = point.average
    return GroupMetrics(latest.get("CpuUsage"), latest.get("MemoryUsage"))


@dataclass(frozen=True, slots=True)
class Aggregate:
    cpu_percent: float
    memory_bytes: int
    reporting: int


def aggregate(readings: list[GroupMetrics]) -> Aggregate:
    cpu = sum(r.cpu_millicores or 0.0 for r in readings)
    memory = sum(r.memory_bytes or 0.0 for r in readings)
    reporting = sum(
        1 for r in readings if r.cpu_millicores is not None or r.memory_bytes is not None
    )
    return Aggregate(round(cpu / 10, 3), int(memory), reporting)
