"""Pure translation helpers of the kubernetes provider: no server involved."""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from alphaswarm_controller.providers.kubernetes.connection import ClusterConnection
from alphaswarm_controller.providers.kubernetes.errors import request_field
from alphaswarm_controller.providers.kubernetes.logs import entry_parser, parse_time
from alphaswarm_controller.providers.kubernetes.manifests import (
    deployment_manifest,
    service_manifest,
)
from alphaswarm_controller.providers.kubernetes.metrics import quantity
from alphaswarm_controller.providers.kubernetes.reflector import Backoff
from alphaswarm_controller.providers.kubernetes.revisions import (
    REVISION_HISTORY_LIMIT,
    spec_annotation,
)
from alphaswarm_controller.providers.kubernetes.status import deployment_status
from alphaswarm_controller.providers.kubernetes.watch import LineTooLong, split_lines
from alphaswarm_core.providers.models import MAX_LOG_LINE_BYTES
from alphaswarm_core.providers.protocol import (
    DeploymentSpec,
    DeploymentState,
    PortSpec,
    Resources,
)

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("250m", Decimal("0.25")),
        ("25000000n", Decimal("0.025")),
        ("1500u", Decimal("0.0015")),
        ("2", Decimal(2)),
        ("12Mi", Decimal(12 * 1024**2)),
        ("1024Ki", Decimal(1024**2)),
        ("1G", Decimal(10**9)),
    ],
)
def test_quantities(text: str, value: Decimal) -> None:
    assert quantity(text) == value


def test_a_bad_quantity_is_an_error() -> None:
    with pytest.raises(ValueError, match="quantity"):
        quantity("12 bananas")


def _deployment(
    replicas: int = 2, status: dict[str, Any] | None = None, generation: int = 1, **meta: Any
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web",
            "namespace": "prod",
            "generation": generation,
            "labels": {"team": "a", "app.kubernetes.io/managed-by": "alphaswarm"},
            **meta,
        },
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"containers": [{"name": "main", "image": "nginx:1"}]}},
        },
        "status": status or {},
    }


def test_running_needs_the_current_generation_observed() -> None:
    settled = {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2}
    assert deployment_status(_deployment(status=settled, generation=2), "k").state is (
        DeploymentState.RUNNING
    )
    stale = {**settled, "observedGeneration": 1}
    status = deployment_status(_deployment(status=stale, generation=2), "k")
    assert status.state is DeploymentState.PENDING
    assert status.labels == {"team": "a"} and status.image == "nginx:1"


def test_progress_deadline_is_failed_with_the_reason() -> None:
    observed = {
        "observedGeneration": 1,
        "replicas": 2,
        "conditions": [
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": 'ReplicaSet "web-1" has timed out progressing.',
            },
        ],
    }
    status = deployment_status(_deployment(status=observed), "k")
    assert status.state is DeploymentState.FAILED
    assert "ProgressDeadlineExceeded" in status.message and "timed out" in status.message


def test_crashing_pods_beside_ready_ones_are_degraded() -> None:
    observed = {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1}
    pods: list[dict[str, Any]] = [
        {
            "metadata": {"name": "web-a"},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"restartCount": 0, "state": {"running": {}}}],
            },
        },
        {
            "metadata": {"name": "web-b"},
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {
                        "restartCount": 4,
                        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                    }
                ],
            },
        },
        {
            "metadata": {"name": "web-old", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {},
        },
    ]
    status = deployment_status(_deployment(status=observed), "k", pods)
    assert status.state is DeploymentState.DEGRADED
    assert "CrashLoopBackOff" in status.message
    assert status.restarts == 4
    assert [i.instance_id for i in status.instances] == ["web-a", "web-b"], "terminating pods"


def test_zero_replicas_is_stopped_and_says_whether_it_was_stopped() -> None:
    scaled = deployment_status(_deployment(replicas=0), "k")
    assert (scaled.state, scaled.message) == (DeploymentState.STOPPED, "scaled to zero")
    stopped = deployment_status(
        _deployment(replicas=0, annotations={"alphaswarm.dev/state": "stopped"}), "k"
    )
    assert (stopped.state, stopped.message) == (DeploymentState.STOPPED, "stopped")


def test_manifests_carry_everything_the_spec_says() -> None:
    spec = DeploymentSpec(
        service_id="api",
        namespace="prod",
        image="registry/api:2",
        command=("serve", "--port", "8080"),
        env={"B": "2", "A": "1"},
        replicas=3,
        labels={"team": "core"},
        ports=(PortSpec(8080), PortSpec(53, host_port=5353, protocol="udp")),
        resources=Resources(cpu="500m", memory="256Mi"),
        provider_options={"service_account": "api-sa", "image_pull_policy": "Always"},
    ).validate()
    deployment = deployment_manifest(spec, "hash1", {"kubernetes.io/change-cause": "why"})
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["selector"] == {"matchLabels": {"alphaswarm.dev/service": "api"}}
    assert pod["metadata"]["labels"]["team"] == "core"
    assert pod["metadata"]["annotations"] == {
        "alphaswarm.dev/config-hash": "hash1",
        "alphaswarm.dev/spec": spec_annotation(spec),
    }
    assert deployment["metadata"]["annotations"]["kubernetes.io/change-cause"] == "why"
    assert deployment["spec"]["progressDeadlineSeconds"] == 600
    assert deployment["spec"]["revisionHistoryLimit"] == REVISION_HISTORY_LIMIT
    assert container["command"] == ["serve", "--port", "8080"]
    assert [e["name"] for e in container["env"]] == ["A", "B"]
    assert container["resources"] == {"limits": {"cpu": "500m", "memory": "256Mi"}}
    assert container["imagePullPolicy"] == "Always"
    assert pod["spec"]["serviceAccountName"] == "api-sa"
    assert container["ports"] == [
        {"containerPort": 8080, "protocol": "TCP"},
        {"containerPort": 53, "protocol": "UDP"},
    ]
    service = service_manifest(spec)
    assert service["spec"]["ports"][1] == {
        "name": "udp-5353",
        "port": 5353,
        "targetPort": 53,
        "protocol": "UDP",
    }


def test_connection_repr_hides_the_token() -> None:
    connection = ClusterConnection(endpoint="https://k8s", token="s3cr3t-token")
    assert "s3cr3t-token" not in repr(connection)


# -- issue 17: the model's quantity syntax, the client floor, the reflector's backoff -----------


@pytest.mark.parametrize(("memory", "ok"), [("256k", True), ("256K", False), ("1Gi", True)])
def test_the_model_accepts_exactly_kubernetes_memory_suffixes(memory: str, ok: bool) -> None:
    spec = DeploymentSpec(service_id="web", image="app:1", resources=Resources(memory=memory))
    assert (not spec.violations()) is ok
    if ok:
        assert spec.resources.memory_bytes() == quantity(memory)


def test_every_kubernetes_requirement_is_at_least_the_client_the_transport_needs() -> None:
    """transport.py uses ApiClient.param_serialize and ApiException.from_response, which
    exist from kubernetes 37 on: every extra that pulls the client must say so."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    floors = [
        requirement
        for requirements in extras.values()
        for requirement in requirements
        if re.match(r"kubernetes\b(?!-)", requirement)
    ]
    assert floors, "no extra names the kubernetes client"
    assert all(re.fullmatch(r"kubernetes>=(3[7-9]|[4-9]\d)(\.\d+)*", f) for f in floors), floors
    from kubernetes.client import ApiClient
    from kubernetes.client.exceptions import ApiException

    assert hasattr(ApiClient, "param_serialize") and hasattr(ApiException, "from_response")


def test_backoff_doubles_to_its_cap_with_jitter_and_resets_after_a_healthy_stretch() -> None:
    now = [0.0]
    backoff = Backoff(initial=0.5, cap=30.0, reset_after=60.0, clock=lambda: now[0])
    delays = [backoff.failed() for _ in range(10)]
    ceilings = [min(30.0, 0.5 * 2**n) for n in range(10)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True)), delays
    assert backoff.failed(retry_after=45.0) == 30.0, "Retry-After is honoured up to the cap"
    assert backoff.failed(retry_after=20.0) >= 20.0
    now[0] += 61.0
    assert backoff.failed() <= 0.5, "a healthy minute resets the ramp"


@pytest.mark.parametrize(
    ("field", "request_field_name"),
    [
        ("spec.template.spec.containers[0].resources.limits.memory", "spec.resources.memory"),
        ("spec.template.spec.serviceAccountName", "spec.provider_options['service_account']"),
        ("metadata.labels", "spec.labels"),
        ("data[..x]", "patch.set[..x]"),
        ("spec.template.spec.containers[0].env[0].name", "spec.env[0].name"),
        ("spec.somethingElse", "kubernetes:spec.somethingElse"),
    ],
)
def test_api_validation_fields_name_the_request_field(field: str, request_field_name: str) -> None:
    assert request_field(field) == request_field_name


# -- pod logs: lines, times, bounds -----------------------------------------------------------


def test_log_lines_are_split_with_a_bound_on_their_length() -> None:
    chunks = iter([b"ab\ncd", b"ef\n\n", b"0123456789abc", b"def\nxy\n", b"tail"])
    assert list(split_lines(chunks, 8, cut=True)) == [
        b"ab",
        b"cdef",
        b"",
        b"012345678",  # cut at limit + 1: marked truncated further on
        b"xy",
        b"tail",
    ]
    with pytest.raises(LineTooLong):
        list(split_lines(iter([b"0123456789"]), 8, cut=False))


def test_a_timestamped_log_line_becomes_an_entry() -> None:
    parse = entry_parser("web-1")
    entry = parse(b"2026-12-02T13:42:08.123456789Z hello world")
    assert entry is not None
    assert (entry.instance_id, entry.text, entry.truncated) == ("web-1", "hello world", False)
    assert entry.time == datetime(2026, 12, 2, 13, 42, 8, 123456, tzinfo=UTC)
    long = parse(b"2026-12-02T13:42:08Z " + b"x" * (MAX_LOG_LINE_BYTES + 1))
    assert long is not None and long.truncated and len(long.text) == MAX_LOG_LINE_BYTES
    assert parse(b"unable to retrieve container logs") is None
    assert parse_time("2026-12-02T13:42:08+02:00") == datetime(2026, 12, 2, 11, 42, 8, tzinfo=UTC)
