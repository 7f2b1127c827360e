"""Human renderings: aligned tables and readable units."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from alphaswarm.provider.v1 import types_pb2
from alphaswarm_client import output, render


def test_table_aligns_columns() -> None:
    text = render.table(["A", "LONGER", "LAST"], [["xxxx", "y", "z z"], ["", "yy", ""]])
    assert text.splitlines() == [
        "A     LONGER  LAST",
        "xxxx  y       z z",
        "      yy",
    ]


def test_sizes() -> None:
    assert [render.size(n) for n in (0, 1023, 1024, 1536, 5 * 1024**3)] == [
        "0B",
        "1023B",
        "1KiB",
        "1.5KiB",
        "5GiB",
    ]


def test_deployment_row_and_state_names() -> None:
    status = types_pb2.DeploymentStatus(
        service_id="web",
        namespace="default",
        provider="local",
        state=types_pb2.DEPLOYMENT_STATE_RUNNING,
        desired_replicas=3,
        ready_replicas=2,
        image="sleep 300",
    )
    lines = render.deployments([status]).splitlines()
    assert lines[0].split() == [
        "NAMESPACE",
        "SERVICE",
        "PROVIDER",
        "STATE",
        "READY",
        "RESTARTS",
        "AGE",
    ]
    assert lines[1].split() == ["default", "web", "local", "RUNNING", "2/3", "0", "-"]
    wide = render.deployments([status], wide=True).splitlines()
    assert wide[0].split()[7:] == ["IMAGE", "CHANGED", "MESSAGE"]
    assert wide[1].split()[7:9] == ["sleep", "300"]
    assert render.deployments([]) == "no deployments"


def test_metrics_lines_have_fixed_columns() -> None:
    sample = types_pb2.MetricSample(
        timestamp=timestamp_pb2.Timestamp(seconds=3600 * 14 + 61),
        replicas=2,
        cpu_percent=12.345,
        memory_bytes=3 * 1024 * 1024,
        ok=True,
        extra={"requests": 4.0},
    )
    header, line = render.metrics_header_line(), render.metrics_line(sample)
    assert line.split() == ["14:01:01", "2", "12.3", "3MiB", "0B", "0B", "ok", "requests=4"]
    # The column starts of header and row agree, so piped output stays readable.
    assert header.index("CPU%") == line.index("12.3")
    failed = types_pb2.MetricSample(replicas=1, ok=False, error="backend down")
    assert render.metrics_line(failed).endswith("error: backend down")


def test_json_is_the_proto3_mapping_with_default_fields() -> None:
    status = types_pb2.DeploymentStatus(service_id="web", state=types_pb2.DEPLOYMENT_STATE_STOPPED)
    data = output.to_dict(status)
    assert data["serviceId"] == "web"
    assert data["state"] == "DEPLOYMENT_STATE_STOPPED"
    assert data["readyReplicas"] == 0
    assert "\n" not in output.to_json(status, compact=True)
    # int64 fields are strings in the proto3 JSON mapping, as grpcurl prints them.
    assert output.to_dict(types_pb2.MetricSample(memory_bytes=5))["memoryBytes"] == "5"
