"""Cloud Monitoring v3 ``MetricService`` emulator: ListTimeSeries and CreateTimeSeries.

Time series a test writes with CreateTimeSeries are served back by
ListTimeSeries (filter ``key = "value" AND ...`` on metric.type, resource.type,
resource.labels.* and metric.labels.*; points inside the requested interval).
For a Cloud Run service of the Run emulator that has no written series of a
metric type, the emulator emits what Cloud Run would: instance_count (the
serving instances), CPU/memory utilisation distributions and request_count.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import grpc
from google.api import (  # type: ignore[import-untyped]
    distribution_pb2,
    metric_pb2,
    monitored_resource_pb2,
)
from google.cloud import monitoring_v3
from google.protobuf import empty_pb2, timestamp_pb2

from .gcp_common import CallLog, EmulatorError, Handler, generic_handler
from .gcp_run import CloudRunEmulator

_CLAUSE = re.compile(r'^\s*([\w.]+)\s*=\s*"([^"]*)"\s*$')

INSTANCE_COUNT = "run.googleapis.com/container/instance_count"
CPU_UTILIZATIONS = "run.googleapis.com/container/cpu/utilizations"
MEMORY_UTILIZATIONS = "run.googleapis.com/container/memory/utilizations"
REQUEST_COUNT = "run.googleapis.com/request_count"

SYNTHETIC_CPU = 0.25
SYNTHETIC_MEMORY = 0.4


def _parse_filter(text: str) -> dict[str, str]:
    clauses: dict[str, str] = {}
    for part in re.split(r"\s+AND\s+", text.strip()):
        match = _CLAUSE.match(part)
        if match is None:
            raise EmulatorError(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported filter: {part!r}")
        clauses[match.group(1)] = match.group(2)
    return clauses


def _field(series: monitoring_v3.TimeSeries, key: str) -> str:
    if key == "metric.type":
        return str(series.metric.type)
    if key == "resource.type":
        return str(series.resource.type)
    if key.startswith("resource.labels."):
        return str(series.resource.labels.get(key.removeprefix("resource.labels."), ""))
    if key.startswith("metric.labels."):
        return str(series.metric.labels.get(key.removeprefix("metric.labels."), ""))
    raise EmulatorError(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported filter field {key}")


def _seconds(stamp: object) -> float:
    # proto-plus hands Timestamps over as datetimes; raw messages keep seconds/nanos.
    if isinstance(stamp, datetime):
        return stamp.timestamp()
    assert isinstance(stamp, timestamp_pb2.Timestamp)
    return stamp.seconds + stamp.nanos / 1e9


class MonitoringEmulator:
    def __init__(self, log: CallLog, run: CloudRunEmulator) -> None:
        self.log = log
        self.run = run
        self.written: list[monitoring_v3.TimeSeries] = []

    def _synthetic(self, project: str) -> Iterable[monitoring_v3.TimeSeries]:
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        start = timestamp_pb2.Timestamp(seconds=now.seconds - 60, nanos=now.nanos)
        for name, service in self.run.services.items():
            if not name.startswith(f"projects/{project}/") or not service.latest_ready_revision:
                continue
            count = service.scaling.manual_instance_count if not service.reconciling else 0
            if count <= 0:
                continue
            location = name.split("/")[3]
            resource = monitored_resource_pb2.MonitoredResource(
                type="cloud_run_revision",
                labels={
                    "project_id": project,
                    "location": location,
                    "service_name": name.rsplit("/", 1)[1],
                    "revision_name": service.latest_ready_revision.rsplit("/", 1)[1],
                    "configuration_name": name.rsplit("/", 1)[1],
                },
            )

            def series(
                metric_type: str,
                value: monitoring_v3.TypedValue,
                resource: monitored_resource_pb2.MonitoredResource = resource,
                **labels: str,
            ) -> monitoring_v3.TimeSeries:
                return monitoring_v3.TimeSeries(
                    metric=metric_pb2.Metric(type=metric_type, labels=labels),
                    resource=resource,
                    points=[
                        monitoring_v3.Point(
                            interval=monitoring_v3.TimeInterval(start_time=start, end_time=now),
                            value=value,
                        )
                    ],
                )

            def dist(mean: float, count: int = count) -> monitoring_v3.TypedValue:
                return monitoring_v3.TypedValue(
                    distribution_value=distribution_pb2.Distribution(count=count, mean=mean)
                )

            yield series(
                INSTANCE_COUNT, monitoring_v3.TypedValue(int64_value=count), state="active"
            )
            yield series(CPU_UTILIZATIONS, dist(SYNTHETIC_CPU))
            yield series(MEMORY_UTILIZATIONS, dist(SYNTHETIC_MEMORY))
            yield series(
                REQUEST_COUNT,
                monitoring_v3.TypedValue(int64_value=10 * count),
                response_code_class="2xx",
            )

    async def list_time_series(
        self, request: monitoring_v3.ListTimeSeriesRequest, context: object
    ) -> monitoring_v3.ListTimeSeriesResponse:
        project = request.name.removeprefix("projects/")
        clauses = _parse_filter(request.filter)
        begin = _seconds(request.interval.start_time) if "start_time" in request.interval else 0.0
        end = _seconds(request.interval.end_time)

        def matches(series: monitoring_v3.TimeSeries) -> bool:
            return all(_field(series, key) == value for key, value in clauses.items())

        written = [s for s in self.written if matches(s)]
        chosen = written or [s for s in self._synthetic(project) if matches(s)]
        found = []
        for series in chosen:
            points = [p for p in series.points if begin <= _seconds(p.interval.end_time) <= end + 1]
            if points:
                copy = monitoring_v3.TimeSeries(series)
                copy.points = sorted(points, key=lambda p: -_seconds(p.interval.end_time))
                found.append(copy)
        return monitoring_v3.ListTimeSeriesResponse(time_series=found)

    async def create_time_series(
        self, request: monitoring_v3.CreateTimeSeriesRequest, context: object
    ) -> empty_pb2.Empty:
        for series in request.time_series:
            self.written.append(monitoring_v3.TimeSeries(series))
        return empty_pb2.Empty()

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        methods: dict[str, tuple[Handler, Callable[[bytes], Any]]] = {
            "ListTimeSeries": (
                self.list_time_series,
                monitoring_v3.ListTimeSeriesRequest.deserialize,
            ),
            "CreateTimeSeries": (
                self.create_time_series,
                monitoring_v3.CreateTimeSeriesRequest.deserialize,
            ),
        }
        return generic_handler("google.monitoring.v3.MetricService", self.log, methods)
