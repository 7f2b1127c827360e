"""paging and convert, pinned directly: page boundaries, token binding, every field
a status, health, provider, config and metric sample carries onto the wire."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from google.protobuf.duration_pb2 import Duration

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_controller import convert, paging
from alphaswarm_core.call import Caller
from alphaswarm_core.providers.errors import InvalidSpecError
from alphaswarm_core.providers.models import (
    SECRET_MASK,
    DeploymentState,
    DeploymentStatus,
    InstanceStatus,
    MetricSample,
    ProviderHealth,
    ServiceConfig,
)
from alphaswarm_core.providers.registry import ProviderDescription

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def status(namespace: str, service_id: str) -> DeploymentStatus:
    return DeploymentStatus(service_id, namespace, "memory", DeploymentState.RUNNING, 1, 1)


def keys(items: list[DeploymentStatus]) -> list[tuple[str, str]]:
    return [(s.namespace, s.service_id) for s in items]


def test_pages_are_ordered_by_namespace_then_name_and_resume_after_the_last_key() -> None:
    items = [status("b", "x"), status("a", "z"), status("a", "y"), status("b", "a")]
    first, after = paging.page(items, 2, None)
    assert keys(first) == [("a", "y"), ("a", "z")] and after == ("a", "z")
    second, after = paging.page(items, 2, after)
    assert keys(second) == [("b", "a"), ("b", "x")] and after is None  # exactly full: the end
    rest, after = paging.page(items, 3, ("a", "y"))
    assert keys(rest) == [("a", "z"), ("b", "a"), ("b", "x")] and after is None
    assert paging.page(items, 10, ("b", "x")) == ([], None)
    assert paging.page([], 1, None) == ([], None)


@pytest.mark.parametrize(("requested", "size"), [(0, 100), (1, 1), (1000, 1000)])
def test_page_sizes(requested: int, size: int) -> None:
    assert paging.page_size(requested) == size


@pytest.mark.parametrize("requested", [-1, 1001])
def test_page_sizes_out_of_range(requested: int) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        paging.page_size(requested)
    assert [(v.field, v.description) for v in caught.value.violations] == [
        ("page_size", "must be between 0 and 1000")
    ]


def test_a_token_resumes_only_the_query_it_came_from() -> None:
    token = paging.encode(("ns", "web"), "memory", "ns")
    assert "=" not in token and paging.decode(token, "memory", "ns", "ListDeployments") == (
        "ns",
        "web",
    )
    assert paging.decode("", "memory", "ns", "ListDeployments") is None
    for provider, namespace in (("other", "ns"), ("memory", "other"), ("memory", "")):
        with pytest.raises(InvalidSpecError) as caught:
            paging.decode(token, provider, namespace, "ListDeployments")
        assert [(v.field, v.description) for v in caught.value.violations] == [
            ("page_token", "not a token from a previous ListDeployments with the same query")
        ]
    # The query key covers both halves: "a\0bc" and "ab\0c" are different queries.
    assert paging.encode(("x", "y"), "a", "bc") != paging.encode(("x", "y"), "ab", "c")


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"after": ["a"], "q": "x"}',
        b'{"after": ["a", "b"]}',
        b'{"q": "x"}',
        b'{"after": 3, "q": "x"}',
    ],
)
def test_malformed_tokens_are_invalid_arguments(raw: bytes) -> None:
    token = base64.urlsafe_b64encode(raw).decode()
    with pytest.raises(InvalidSpecError):
        paging.decode(token, "memory", "ns", "ListDeployments")


def test_a_token_holds_the_key_and_a_query_hash_only() -> None:
    token = paging.encode(("ns", "web"), "memory", "ns")
    raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    assert raw["after"] == ["ns", "web"] and len(raw["q"]) == 16 and set(raw) == {"after", "q"}


def test_a_status_on_the_wire() -> None:
    made = convert.status_to_proto(
        DeploymentStatus(
            service_id="web",
            namespace="ns",
            provider="memory",
            state=DeploymentState.DEGRADED,
            desired_replicas=3,
            ready_replicas=2,
            message="one restarting",
            updated_at=NOW,
            restarts=4,
            instances=(InstanceStatus("web-1", "running", True, 1, "ok"),),
            image="busybox",
            labels={"app": "web"},
        )
    )
    assert made == types.DeploymentStatus(
        service_id="web",
        namespace="ns",
        provider="memory",
        state=types.DEPLOYMENT_STATE_DEGRADED,
        desired_replicas=3,
        ready_replicas=2,
        message="one restarting",
        updated_at=made.updated_at,
        restarts=4,
        instances=[
            types.InstanceStatus(
                instance_id="web-1", state="running", ready=True, restarts=1, message="ok"
            )
        ],
        image="busybox",
        labels={"app": "web"},
    )
    assert made.updated_at.ToDatetime(tzinfo=UTC) == NOW
    states = {
        DeploymentState.PENDING: types.DEPLOYMENT_STATE_PENDING,
        DeploymentState.RUNNING: types.DEPLOYMENT_STATE_RUNNING,
        DeploymentState.STOPPED: types.DEPLOYMENT_STATE_STOPPED,
        DeploymentState.FAILED: types.DEPLOYMENT_STATE_FAILED,
    }
    for state, wire in states.items():
        one = DeploymentStatus("w", "n", "p", state, 0, 0)
        assert convert.status_to_proto(one).state == wire


def test_health_details_are_for_admins_only() -> None:
    health = ProviderHealth("memory", "memory", False, "down", {"pid": "42"}, NOW)
    for role, details in ((3, {"pid": "42"}), (2, {}), (1, {})):
        made = convert.health_to_proto(health, Caller("c", role))
        assert (made.alias, made.kind, made.healthy, made.message) == (
            "memory",
            "memory",
            False,
            "down",
        )
        assert dict(made.details) == details
        assert made.checked_at.ToDatetime(tzinfo=UTC) == NOW


def test_provider_info_config_and_samples_on_the_wire() -> None:
    info = convert.provider_info_to_proto(
        ProviderDescription("aws", "aws", False, "builtin", ("start",), "pip install x", True)
    )
    assert info == types.ProviderInfo(
        alias="aws",
        kind="aws",
        is_default=True,
        installed=False,
        install_hint="pip install x",
        origin="builtin",
        capabilities=["start"],
    )
    config = convert.config_to_proto(
        ServiceConfig("web", "ns", {"secret.PW": "hunter2", "a": "1"}, "7")
    )
    assert config == types.ServiceConfig(
        service_id="web", namespace="ns", data={"secret.PW": SECRET_MASK, "a": "1"}, version="7"
    )
    sample = convert.sample_to_proto(
        MetricSample("web", "ns", "memory", NOW, 2, 1.5, 3, 4, 5, False, "late", {"x": 1.0})
    )
    assert sample == types.MetricSample(
        service_id="web",
        namespace="ns",
        provider="memory",
        timestamp=sample.timestamp,
        replicas=2,
        cpu_percent=1.5,
        memory_bytes=3,
        network_rx_bytes=4,
        network_tx_bytes=5,
        ok=False,
        error="late",
        extra={"x": 1.0},
    )
    assert sample.timestamp.ToDatetime(tzinfo=UTC) == NOW


def test_intervals_and_log_queries() -> None:
    assert convert.interval_seconds(Duration(), False) == convert.DEFAULT_INTERVAL_SECONDS
    assert convert.interval_seconds(Duration(seconds=2, nanos=500_000_000), True) == 2.5
    with pytest.raises(InvalidSpecError) as caught:
        convert.interval_seconds(Duration(), True)
    assert [(v.field, v.description) for v in caught.value.violations] == [
        ("interval", "must be between 0.1 s and 3600 s")
    ]
    query = convert.log_query_from_proto(
        pb.StreamLogsRequest(follow=True, tail_lines=7, instance_id="web-1")
    )
    assert (query.follow, query.tail_lines, query.since, query.instance_id) == (
        True,
        7,
        None,
        "web-1",
    )
    request = pb.StreamLogsRequest()
    request.since.FromDatetime(NOW)
    assert convert.log_query_from_proto(request).since == NOW
    bad = pb.StreamLogsRequest(tail_lines=-1, instance_id="-x")
    bad.since.seconds = 2**62
    with pytest.raises(InvalidSpecError) as caught:
        convert.log_query_from_proto(bad)
    assert [(v.field, v.description) for v in caught.value.violations] == [
        ("tail_lines", "must be between 0 and 10000"),
        ("instance_id", "not a replica id"),
        ("since", "not a valid time"),
    ]
    with pytest.raises(InvalidSpecError) as caught:
        convert.replicas(-1)
    assert [(v.field, v.description) for v in caught.value.violations] == [
        ("replicas", "must be between 0 and 500")
    ]
    assert convert.replicas(500) == 500


def test_tokens_round_trip_whatever_their_last_characters() -> None:
    tokens = {
        paging.encode((f"ns-{i}", f"svc-{i * 7}"), "memory", f"ns-{i}"): i for i in range(300)
    }
    # Every length base64 can end with once its "=" padding is stripped (0, 2 or 3 mod 4).
    assert {len(token) % 4 for token in tokens} == {0, 2, 3}
    for token, i in tokens.items():
        assert paging.decode(token, "memory", f"ns-{i}", "ListDeployments") == (
            f"ns-{i}",
            f"svc-{i * 7}",
        )
