"""ECS service metrics from CloudWatch (``AWS/ECS`` CPUUtilization / MemoryUtilization).

ECS publishes both per service (dimensions ClusterName + ServiceName) as a
percentage of what the service's tasks reserve, once a minute (Amazon ECS
developer guide, "Amazon ECS service utilization": used CPU units of the
service's tasks over the CPU units they reserve, times 100). A sample takes the
newest datapoint of each from one GetMetricData call and converts both with
what the service's ready tasks reserve:

* ``cpu_percent`` is MetricSample's unit, percent of one core summed over
  replicas: utilisation x reserved vCPUs (task CPU units / 1024) of the ready
  tasks. Two tasks of 1 vCPU at 40 % report 80.
* ``memory_bytes`` is utilisation x reserved memory of the ready tasks.

The replica count is the ready task count the status read just saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .clients import Clients, JsonDict

WINDOW = timedelta(minutes=10)
PERIOD_SECONDS = 60
MIB = 1024 * 1024
CPU_UNITS_PER_VCPU = 1024


@dataclass(frozen=True, slots=True)
class Utilization:
    cpu_percent: float | None
    memory_percent: float | None


def queries(cluster: str, service: str) -> list[JsonDict]:
    dimensions = [
        {"Name": "ClusterName", "Value": cluster},
        {"Name": "ServiceName", "Value": service},
    ]
    return [
        {
            "Id": query_id,
            "MetricStat": {
                "Metric": {"Namespace": "AWS/ECS", "MetricName": metric, "Dimensions": dimensions},
                "Period": PERIOD_SECONDS,
                "Stat": "Average",
            },
            "ReturnData": True,
        }
        for query_id, metric in (("cpu", "CPUUtilization"), ("mem", "MemoryUtilization"))
    ]


def utilization(clients: Clients, cluster: str, service: str) -> Utilization:
    now = datetime.now(UTC)
    result = clients.call(
        "cloudwatch",
        "GetMetricData",
        MetricDataQueries=queries(cluster, service),
        StartTime=now - WINDOW,
        EndTime=now + timedelta(seconds=PERIOD_SECONDS),
        ScanBy="TimestampDescending",
    )
    newest: dict[str, float] = {}
    for series in result.get("MetricDataResults", []):
        points = sorted(
            zip(series.get("Timestamps", []), series.get("Values", []), strict=False),
            reverse=True,
        )
        if points:
            newest[str(series["Id"])] = float(points[0][1])
    return Utilization(newest.get("cpu"), newest.get("mem"))


def reserved_memory_bytes(tasks: list[JsonDict]) -> int:
    """Memory the given tasks reserve (task-level size, else the sum of their containers)."""
    total = 0
    for task in tasks:
        size = task.get("memory")
        if size:
            total += int(size) * MIB
            continue
        total += sum(int(c.get("memory") or 0) for c in task.get("containers", [])) * MIB
    return total


def reserved_vcpus(tasks: list[JsonDict]) -> float:
    """vCPUs the given tasks reserve (task-level size, else the sum of their containers)."""
    units = 0
    for task in tasks:
        size = task.get("cpu")
        if size:
            units += int(size)
            continue
        units += sum(int(c.get("cpu") or 0) for c in task.get("containers", []))
    return units / CPU_UNITS_PER_VCPU


def cpu_percent_of_one_core(utilization_percent: float, tasks: list[JsonDict]) -> float:
    """ECS CPUUtilization (percent of the reserved CPU) in percent of one core, summed."""
    return utilization_percent * reserved_vcpus(tasks)
