"""Cloud Monitoring v3 ``MetricService`` emulator: ListTimeSeries and CreateTimeSeries.

Time series a test writes with CreateTimeSeries are served back by
ListTimeSeries (filter ``key = "value" AND ...`` on metric.type, resource.type,
resource.labels.* and metric.labels.*; points inside the requested interval).
For a Cloud Run service of the Run emulator that has no written series of a
metric type, the emulator emits what Cloud Run would: instance_count (the
serving instances), CPU/memory utilisation distributions (per instance, a fraction
of the instance's limit) and request_count.

Rules of ListTimeSeries (google/monitoring/v3/metric_service.proto, common.proto):
``name`` is REQUIRED (``projects/[PROJECT_ID_OR_NUMBER]``, organizations/, folders/);
``filter`` is REQUIRED and "must specify a single metric type"; ``interval`` is
REQUIRED with an end time, which must not be earlier than the start time; ``order_by``
"must be left blank"; points come "in reverse time order (most recent to oldest)".
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

from .gcp_common import Method, Plumbing, generic_handler, invalid
from .gcp_run import CloudRunEmulator

_CLAUSE = re.compile(r'^\s*([\w.]+)\s*=\s*"([^"]*)"\s*$')
_NAME = re.compile(r"(projects|organizations|folders)/[a-z0-9][-a-z0-9.:]*")

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
            raise invalid(f"unsupported filter: {part!r}")
        if match.group(1) in clauses:
            raise invalid(f"filter names {match.group(1)} twice")
        clauses[match.group(1)] = match.group(2)
    if "metric.type" not in clauses:
        raise invalid("The filter must specify a single metric type (metric.type = ...)")
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
    raise invalid(f"unsupported filter field {key}")


def _seconds(stamp: object) -> float:
    # proto-plus hands Timestamps over as datetimes; raw messages keep seconds/nanos.
    if isinstance(stamp, datetime):
        return stamp.timestamp()
    assert isinstance(stamp, timestamp_pb2.Timestamp)
    return stamp.seconds + stamp.nanos / 1e9


class MonitoringEmulator:
    def __init__(self, plumbing: Plumbing, run: CloudRunEmulator) -> None:
        self.plumbing = plumbing
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

    def list_time_series(
        self, request: monitoring_v3.ListTimeSeriesRequest
    ) -> monitoring_v3.ListTimeSeriesResponse:
        if not _NAME.fullmatch(request.name):
            raise invalid(f"name {request.name!r}: projects/[PROJECT_ID_OR_NUMBER]")
        if not request.filter:
            raise invalid("filter is required")
        if "interval" not in request or "end_time" not in request.interval:
            raise invalid("interval.end_time is required")
        if request.order_by:
            raise invalid("order_by is unsupported and must be left blank")
        project = request.name.removeprefix("projects/")
        clauses = _parse_filter(request.filter)
        end = _seconds(request.interval.end_time)
        begin = _seconds(request.interval.start_time) if "start_time" in request.interval else end
        if end < begin:
            raise invalid("The end time of the interval must not be earlier than the start time")

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

    def create_time_series(self, request: monitoring_v3.CreateTimeSeriesRequest) -> empty_pb2.Empty:
        # CreateTimeSeriesRequest.time_series: "The maximum number of TimeSeries objects
        # per Create request is 200", each with exactly one point.
        if not 1 <= len(request.time_series) <= 200:
            raise invalid("time_series: 1 to 200 per request")
        if any(len(series.points) != 1 for series in request.time_series):
            raise invalid("each time series must contain exactly one point")
        for series in request.time_series:
            self.written.append(monitoring_v3.TimeSeries(series))
        return empty_pb2.Empty()

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        methods: dict[str, tuple[Method, Callable[[bytes], Any]]] = {
            "ListTimeSeries": (
                self.list_time_series,
                monitoring_v3.ListTimeSeriesRequest.deserialize,
            ),
            "CreateTimeSeries": (
                self.create_time_series,
                monitoring_v3.CreateTimeSeriesRequest.deserialize,
            ),
        }
        return generic_handler(
            "google.monitoring.v3.MetricService", "monitoring", self.plumbing, methods
        )
