"""scope.resolve, the stream caps and the transport settings, pinned directly.

The server tests reach these through real calls; here each branch is checked on its
own: which namespace a method gets when the request names none, what is cleared on
a refusal, what each stream cap says, how the counts come back down, and the
transport options the server is built with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_controller.methods import MethodInfo, provider_service_methods
from alphaswarm_controller.scope import resolve
from alphaswarm_controller.security.limits import StreamLimit, StreamLimitExceeded, server_options
from alphaswarm_controller.security.tls import server_credentials
from alphaswarm_core.call import CallContext
from alphaswarm_core.providers.errors import InvalidSpecError
from tests.service.conftest import settings

METHODS: dict[str, MethodInfo] = {m.name: m for m in provider_service_methods()}


def resolved(name: str, request: Any) -> CallContext:
    call = CallContext(name, "r-1", "peer")
    resolve(METHODS[name], request, call, "memory")
    return call


def where(call: CallContext) -> tuple[str, str, str]:
    return call.alias, call.namespace, call.service_id


def test_each_scope_fills_what_it_addresses() -> None:
    assert where(resolved("ListProviders", pb.ListProvidersRequest())) == ("", "", "")
    assert where(resolved("CheckHealth", pb.CheckHealthRequest())) == ("memory", "", "")
    assert where(resolved("CheckHealth", pb.CheckHealthRequest(provider="aws"))) == (
        "aws",
        "",
        "",
    )
    status = pb.GetDeploymentStatusRequest(service_id="web")
    assert where(resolved("GetDeploymentStatus", status)) == ("memory", "default", "web")
    status.namespace = "team-a"
    assert where(resolved("GetDeploymentStatus", status)) == ("memory", "team-a", "web")
    # Namespace-wide calls: no namespace is every namespace, not "default".
    assert where(resolved("ListDeployments", pb.ListDeploymentsRequest())) == ("memory", "", "")
    listed = pb.ListDeploymentsRequest(namespace="team-a")
    assert where(resolved("ListDeployments", listed)) == ("memory", "team-a", "")
    spec = types.DeploymentSpec(service_id="web", namespace="team-b", command=["x"])
    started = resolved("StartDeployment", pb.StartDeploymentRequest(spec=spec))
    assert where(started) == ("memory", "team-b", "web")
    patch = types.ConfigMapPatch(service_id="api")
    assert where(resolved("ApplyConfig", pb.ApplyConfigRequest(patch=patch))) == (
        "memory",
        "default",
        "api",
    )


def test_a_refused_request_names_every_bad_field_and_resolves_nothing() -> None:
    call = CallContext("StartDeployment", "r-1", "peer")
    spec = types.DeploymentSpec(service_id="Web", namespace="B", replicas=-1)
    with pytest.raises(InvalidSpecError) as caught:
        resolve(
            METHODS["StartDeployment"],
            pb.StartDeploymentRequest(provider="X", spec=spec),
            call,
            "memory",
        )
    assert [v.field for v in caught.value.violations] == [
        "provider",
        "spec.namespace",
        "spec.service_id",
        "spec.replicas",
        "spec.image",
    ]
    assert where(call) == ("", "", "")
    # A spec without a namespace is in "default": only what is wrong is named.
    call = CallContext("StartDeployment", "r-1", "peer")
    unnamed = types.DeploymentSpec(service_id="Web", command=["x"])
    with pytest.raises(InvalidSpecError) as caught:
        resolve(METHODS["StartDeployment"], pb.StartDeploymentRequest(spec=unnamed), call, "m")
    assert [v.field for v in caught.value.violations] == ["spec.service_id"]
    call = CallContext("GetDeploymentStatus", "r-1", "peer")
    with pytest.raises(InvalidSpecError) as caught:
        resolve(
            METHODS["GetDeploymentStatus"],
            pb.GetDeploymentStatusRequest(service_id="", namespace="-"),
            call,
            "memory",
        )
    assert [v.field for v in caught.value.violations] == ["namespace", "service_id"]
    assert where(call) == ("", "", "")


# -- stream caps ----------------------------------------------------------------------------------


def test_each_cap_says_which_it_is() -> None:
    limits = StreamLimit(20, per_connection=2)
    assert limits.standard_limit == 2
    assert StreamLimit(5).standard_limit == 1
    assert limits._refusal(False, "p") is None
    limits._by_peer["p"] = 2
    refused = limits._refusal(False, "p")
    assert isinstance(refused, StreamLimitExceeded)
    assert refused.message == (
        "this connection already holds 2 streams (limit 2); "
        "close some, open another connection, or retry later"
    )
    assert refused.metadata == {"scope": "connection", "limit": "2"}
    assert limits._refusal(False, "q") is None
    limits.open_standard = 2
    refused = limits._refusal(True, "q")
    assert refused is not None and refused.metadata == {"scope": "standard_services", "limit": "2"}
    assert refused.message == "2 health and reflection streams are open (limit 2); retry later"
    assert limits._refusal(False, "q") is None
    limits.open = 20
    refused = limits._refusal(False, "q")
    assert refused is not None and refused.metadata == {"scope": "server", "limit": "20"}
    assert refused.message == "the server already serves 20 streams (limit 20); retry later"
    assert refused.reason == "STREAM_LIMIT"
    assert StreamLimit(1)._refusal(False, "p") is None
    assert StreamLimit(5, per_connection=1)._refusal(False, "new") is None, "none held yet"


async def test_counts_rise_while_a_stream_is_open_and_fall_after() -> None:
    limits = StreamLimit(10, per_connection=5)
    seen: list[tuple[int, int, dict[str, int]]] = []

    async def proceed(given: Any, request: Any, passed: Any) -> AsyncIterator[int]:
        assert (given, passed) == (call, context), "the call and context go through"
        for item in (1, 2):
            seen.append((limits.open, limits.open_standard, dict(limits._by_peer)))
            yield item

    call: Any = SimpleNamespace(peer="p")
    context: Any = SimpleNamespace()  # only a refusal of a standard stream uses it
    first = limits.counted(call, None, context, proceed, standard=True)
    second = limits.counted(call, None, context, proceed, standard=False)
    assert await anext(first) == 1
    assert await anext(second) == 1
    assert seen == [(1, 1, {"p": 1}), (2, 1, {"p": 2})]
    assert [item async for item in first] == [2]
    assert (limits.open, limits.open_standard, limits._by_peer) == (1, 0, {"p": 1})
    assert [item async for item in second] == [2]
    assert (limits.open, limits.open_standard, limits._by_peer) == (0, 0, {})


def test_transport_options_follow_the_caps(tmp_path: Path) -> None:
    made = dataclasses.replace(
        settings(tmp_path), max_streams=100, max_streams_per_connection=7, max_message_bytes=1234
    )
    assert server_options(made) == [
        ("grpc.max_receive_message_length", 1234),
        ("grpc.max_send_message_length", 1234),
        ("grpc.max_concurrent_streams", 70),
        ("grpc.server.max_pending_requests", 170),
        ("grpc.server.max_pending_requests_hard_limit", 340),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.so_reuseport", 0),
    ]


# -- TLS settings ---------------------------------------------------------------------------------


def test_each_half_configured_tls_setting_is_named(tmp_path: Path) -> None:
    base = settings(tmp_path)
    cert = tmp_path / "cert.pem"
    for overrides, message in (
        ({"tls_cert": cert}, "set both ALPHASWARM_CP_TLS_CERT and ALPHASWARM_CP_TLS_KEY"),
        ({"tls_key": cert}, "set both ALPHASWARM_CP_TLS_CERT and ALPHASWARM_CP_TLS_KEY"),
        (
            {"tls_client_ca": cert},
            "ALPHASWARM_CP_TLS_CLIENT_CA needs ALPHASWARM_CP_TLS_CERT/_KEY",
        ),
        (
            {"listen": "10.0.0.1:50051"},
            "refusing to serve plaintext on 10.0.0.1:50051: set ALPHASWARM_CP_TLS_CERT "
            "and ALPHASWARM_CP_TLS_KEY, or ALPHASWARM_CP_INSECURE=true behind a TLS proxy",
        ),
    ):
        with pytest.raises(SystemExit) as caught:
            server_credentials(dataclasses.replace(base, **overrides))
        assert str(caught.value) == message
