"""What a refused caller is told: the exact code, message and ErrorInfo of each refusal.

A client acts on these (a CLI prints the message, an operator greps for the reason,
a dashboard groups by metadata), so they are part of the API, unary and streaming
alike; how the Authorization header is read is pinned here too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_controller.server import RunningServer
from tests.security.conftest import TOKENS, ServerFactory
from tests.service.rich_status import Details, details

Refusal = tuple[grpc.StatusCode, str, str, dict[str, str]]
"""Code, message, ErrorInfo reason and metadata."""


@pytest.fixture
async def stub(
    make_server: ServerFactory, tokens_file: Path
) -> AsyncIterator[pb_grpc.ProviderServiceAsyncStub]:
    running: RunningServer = await make_server(tokens_file=tokens_file)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield pb_grpc.ProviderServiceStub(channel)


def header(value: str) -> tuple[tuple[str, str]]:
    return (("authorization", value),)


def bearer(name: str) -> tuple[tuple[str, str]]:
    return header(f"Bearer {TOKENS[name]}")


async def refusal(call: Callable[[], Awaitable[Any]]) -> Refusal:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call()
    found: Details = details(caught.value)
    assert found.error_info is not None
    info = found.error_info
    assert info.domain == "alphaswarm.dev"
    return found.code, found.message, info.reason, dict(info.metadata)


def start(namespace: str = "team-a", provider: str = "") -> pb.StartDeploymentRequest:
    spec = types.DeploymentSpec(service_id="web", namespace=namespace, command=["sleep", "9"])
    return pb.StartDeploymentRequest(provider=provider, spec=spec)


async def first_of(stream: Any) -> None:
    async for _ in stream:
        break


MISSING: Refusal = (
    grpc.StatusCode.UNAUTHENTICATED,
    "missing bearer token: send 'authorization: Bearer <token>'",
    "UNAUTHENTICATED",
    {},
)
INVALID: Refusal = (grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token", "UNAUTHENTICATED", {})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", MISSING),
        ("Bearer", MISSING),
        ("Bearer    ", MISSING),
        ("Basic dXNlcjpwYXNz", MISSING),
        (f"Token {TOKENS['viewer']}", MISSING),
        ("Bearer not-a-token", INVALID),
        (f"Bearer {TOKENS['viewer']} extra", INVALID),  # the token is everything after
        (f"Bearer {TOKENS['viewer']}x", INVALID),
    ],
)
async def test_unauthenticated_says_why(
    stub: pb_grpc.ProviderServiceAsyncStub, value: str, expected: Refusal
) -> None:
    metadata = header(value) if value else ()
    assert (
        await refusal(lambda: stub.ListProviders(pb.ListProvidersRequest(), metadata=metadata))
        == expected
    )
    watch = stub.WatchDeployments(pb.WatchDeploymentsRequest(), metadata=metadata)
    assert await refusal(lambda: first_of(watch)) == expected


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {TOKENS['viewer']}",
        f"bearer {TOKENS['viewer']}",  # the scheme is case-insensitive (RFC 7235)
        f"BEARER   {TOKENS['viewer']}  ",
    ],
)
async def test_a_bearer_header_is_read_leniently(
    stub: pb_grpc.ProviderServiceAsyncStub, value: str
) -> None:
    answer = await stub.ListProviders(pb.ListProvidersRequest(), metadata=header(value))
    assert answer.default_provider == "memory"


async def test_other_headers_are_not_read_as_a_token(
    stub: pb_grpc.ProviderServiceAsyncStub,
) -> None:
    metadata = (("x-authorization", f"Bearer {TOKENS['admin']}"), ("x-token", TOKENS["admin"]))
    refused = await refusal(
        lambda: stub.ListProviders(pb.ListProvidersRequest(), metadata=metadata)
    )
    assert refused == MISSING


async def test_a_role_too_low_names_the_principal_and_the_role_needed(
    stub: pb_grpc.ProviderServiceAsyncStub,
) -> None:
    refused = await refusal(lambda: stub.StartDeployment(start(), metadata=bearer("viewer")))
    assert refused == (
        grpc.StatusCode.PERMISSION_DENIED,
        "'dashboards' has role viewer; StartDeployment needs operator",
        "CALLER_PERMISSION_DENIED",
        {"principal": "dashboards", "required_role": "operator"},
    )


async def test_a_provider_outside_the_tokens_scope_is_named(
    stub: pb_grpc.ProviderServiceAsyncStub,
) -> None:
    refused = await refusal(
        lambda: stub.StartDeployment(start(provider="configless"), metadata=bearer("team-a"))
    )
    assert refused == (
        grpc.StatusCode.PERMISSION_DENIED,
        "'team-a-ci' may not use provider 'configless'",
        "CALLER_PERMISSION_DENIED",
        {"principal": "team-a-ci", "provider": "configless"},
    )
    metrics = stub.StreamMetrics(
        pb.StreamMetricsRequest(provider="configless", service_id="web", namespace="team-a"),
        metadata=bearer("team-a"),
    )
    assert (await refusal(lambda: first_of(metrics)))[1:] == refused[1:]


async def test_a_namespace_outside_the_tokens_scope_is_named(
    stub: pb_grpc.ProviderServiceAsyncStub,
) -> None:
    refused = await refusal(
        lambda: stub.StartDeployment(start(namespace="team-b"), metadata=bearer("team-a"))
    )
    expected = (
        grpc.StatusCode.PERMISSION_DENIED,
        "'team-a-ci' may not access namespace 'team-b'; allowed: team-a",
        "CALLER_PERMISSION_DENIED",
        {"principal": "team-a-ci", "namespace": "team-b", "provider": "memory"},
    )
    assert refused == expected
    watch = stub.WatchDeployment(
        pb.WatchDeploymentRequest(service_id="web", namespace="team-b"), metadata=bearer("team-a")
    )
    assert await refusal(lambda: first_of(watch)) == expected


async def test_a_scoped_token_is_served_inside_its_scope_unary_and_streaming(
    stub: pb_grpc.ProviderServiceAsyncStub,
) -> None:
    started = await stub.StartDeployment(start(), metadata=bearer("team-a"))
    assert (started.status.service_id, started.status.namespace) == ("web", "team-a")
    watch = stub.WatchDeployment(
        pb.WatchDeploymentRequest(service_id="web", namespace="team-a"), metadata=bearer("team-a")
    )
    async for change in watch:
        assert (change.status.service_id, change.status.namespace) == ("web", "team-a")
        break
    health = await stub.CheckHealth(pb.CheckHealthRequest(), metadata=bearer("team-a"))
    assert health.health.alias == "memory"  # provider-wide: no namespace to check


async def test_a_scoped_token_streams_metrics_and_logs_inside_its_scope(
    stub: pb_grpc.ProviderServiceAsyncStub,
) -> None:
    """The request reaches the servicer whole through every layer (the interval and the
    log query are read from it)."""
    await stub.StartDeployment(start(), metadata=bearer("team-a"))
    metrics = stub.StreamMetrics(
        pb.StreamMetricsRequest(service_id="web", namespace="team-a", interval=Duration(seconds=7)),
        metadata=bearer("team-a"),
    )
    async for response in metrics:
        assert response.sample.extra["interval_seconds"] == 7.0
        break
    metrics.cancel()
    logs = stub.StreamLogs(
        pb.StreamLogsRequest(service_id="web", namespace="team-a", tail_lines=10_001),
        metadata=bearer("team-a"),
    )
    refused = await refusal(lambda: first_of(logs))
    assert refused[0] is grpc.StatusCode.INVALID_ARGUMENT
