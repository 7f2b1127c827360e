"""Bearer tokens with roles and scopes; health stays open; reflection can be protected."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_controller.security.tokens import Role, TokensFileError, TokenStore, hash_token
from alphaswarm_controller.server import RunningServer
from alphaswarm_core.providers.models import SECRET_MASK
from tests.security.conftest import TOKENS, ServerFactory
from tests.service.rich_status import details


def auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def start_request(namespace: str = "team-a", provider: str = "") -> pb.StartDeploymentRequest:
    return pb.StartDeploymentRequest(
        provider=provider,
        spec=types.DeploymentSpec(
            service_id="web", namespace=namespace, command=["sleep", "9"], replicas=1
        ),
    )


async def code_of(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    found = details(caught.value)
    return found.code, found.error_info.reason if found.error_info else ""


@pytest.fixture
async def secured(make_server: ServerFactory, tokens_file: Path) -> RunningServer:
    return await make_server(tokens_file=tokens_file)


def stub_for(running: RunningServer) -> tuple[grpc.aio.Channel, pb_grpc.ProviderServiceAsyncStub]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    return channel, pb_grpc.ProviderServiceStub(channel)


async def test_missing_or_bad_token_is_unauthenticated(secured: RunningServer) -> None:
    channel, stub = stub_for(secured)
    async with channel:
        assert await code_of(stub.ListProviders(pb.ListProvidersRequest())) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "UNAUTHENTICATED",
        )
        bad = stub.ListProviders(pb.ListProvidersRequest(), metadata=auth("not-a-token"))
        assert (await code_of(bad))[0] is grpc.StatusCode.UNAUTHENTICATED
        basic = stub.ListProviders(
            pb.ListProvidersRequest(), metadata=(("authorization", "Basic eDp5"),)
        )
        assert (await code_of(basic))[0] is grpc.StatusCode.UNAUTHENTICATED
        memory = await secured.pool.get("memory")
        assert "start" not in memory.calls  # type: ignore[attr-defined]


async def test_roles(secured: RunningServer) -> None:
    channel, stub = stub_for(secured)
    async with channel:
        viewer = auth(TOKENS["viewer"])
        assert (await stub.ListProviders(pb.ListProvidersRequest(), metadata=viewer)).providers
        denied = await code_of(stub.StartDeployment(start_request(), metadata=viewer))
        assert denied == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_PERMISSION_DENIED")

        operator = auth(TOKENS["operator"])
        started = await stub.StartDeployment(start_request(), metadata=operator)
        assert started.status.desired_replicas == 1
        status = await stub.GetDeploymentStatus(
            pb.GetDeploymentStatusRequest(service_id="web", namespace="team-a"), metadata=viewer
        )
        assert status.status.ready_replicas == 1
        await stub.StopDeployment(
            pb.StopDeploymentRequest(service_id="web", namespace="team-a"),
            metadata=auth(TOKENS["admin"]),
        )


async def test_scoped_token_stays_in_its_namespaces_and_providers(secured: RunningServer) -> None:
    channel, stub = stub_for(secured)
    scoped = auth(TOKENS["team-a"])
    async with channel:
        await stub.StartDeployment(start_request("team-a"), metadata=scoped)
        outside = await code_of(stub.StartDeployment(start_request("team-b"), metadata=scoped))
        assert outside == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_PERMISSION_DENIED")
        other_provider = await code_of(
            stub.StartDeployment(start_request("team-a", "configless"), metadata=scoped)
        )
        assert other_provider[0] is grpc.StatusCode.PERMISSION_DENIED
        mine = await stub.ListDeployments(
            pb.ListDeploymentsRequest(namespace="team-a"), metadata=scoped
        )
        assert [d.service_id for d in mine.deployments] == ["web"]
        # Across every namespace, a scoped token sees its own namespaces only.
        await stub.StartDeployment(start_request("team-b"), metadata=auth(TOKENS["admin"]))
        everywhere = await stub.ListDeployments(pb.ListDeploymentsRequest(), metadata=scoped)
        assert {d.namespace for d in everywhere.deployments} == {"team-a"}
        unscoped = await stub.ListDeployments(
            pb.ListDeploymentsRequest(), metadata=auth(TOKENS["admin"])
        )
        assert {d.namespace for d in unscoped.deployments} == {"team-a", "team-b"}
        watch = stub.WatchDeployments(pb.WatchDeploymentsRequest(), metadata=scoped)
        seen = set()
        async for event in watch:
            if event.event == types.DEPLOYMENT_EVENT_INITIAL_SNAPSHOT_DONE:
                break
            seen.add(event.status.namespace)
        watch.cancel()
        assert seen == {"team-a"}


async def test_health_stays_open(secured: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def list_services(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = ()
) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    call = stub.ServerReflectionInfo(iter([request]), metadata=metadata)
    names: list[str] = []
    async for response in call:
        names += [s.name for s in response.list_services_response.service]
    return names


async def test_reflection_open_by_default_and_protectable(
    make_server: ServerFactory, tokens_file: Path
) -> None:
    open_server = await make_server(tokens_file=tokens_file)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{open_server.port}") as channel:
        assert "alphaswarm.provider.v1.ProviderService" in await list_services(channel)
    protected = await make_server(tokens_file=tokens_file, reflection="auth")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{protected.port}") as channel:
        assert await refused_code(channel) is grpc.StatusCode.UNAUTHENTICATED
        names = await list_services(channel, auth(TOKENS["viewer"]))
        assert "grpc.health.v1.Health" in names
    closed = await make_server(reflection="off")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{closed.port}") as channel:
        assert await refused_code(channel) is grpc.StatusCode.UNIMPLEMENTED


async def refused_code(channel: grpc.aio.Channel) -> grpc.StatusCode:
    """The status of a reflection stream the server refuses as it starts. The client sends
    no message: one written after the refusal arrived fails in grpc core, and the client
    then reports INTERNAL instead of the server's status (1 run in 4 on a loaded machine)."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter(()))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    code: grpc.StatusCode = caught.value.code()
    return code


def test_token_store_keeps_only_hashes(tokens_file: Path) -> None:
    text = tokens_file.read_text()
    assert all(token not in text for token in TOKENS.values())
    store = TokenStore.load(tokens_file)
    principal = store.authenticate(TOKENS["team-a"])
    assert principal is not None and principal.role is Role.OPERATOR
    assert principal.namespaces == frozenset({"team-a"})
    assert store.authenticate(TOKENS["team-a"] + "x") is None


@pytest.mark.parametrize(
    "body",
    [
        "tokens: []",
        "tokens: [{name: x, sha256: abc, role: viewer}]",
        f"tokens: [{{name: x, sha256: {hash_token('t')}, role: superuser}}]",
        "just a string",
    ],
)
def test_bad_tokens_file_is_refused(tmp_path: Path, body: str) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(body)
    with pytest.raises(TokensFileError):
        TokenStore.load(path)


async def test_audit_line_per_mutating_call(
    secured: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alphaswarm.audit")
    channel, stub = stub_for(secured)
    operator = auth(TOKENS["operator"])
    async with channel:
        request = start_request()
        request.spec.env["DB_PASSWORD"] = "hunter2-very-secret"
        await stub.StartDeployment(request, metadata=operator)
        await stub.GetDeploymentStatus(
            pb.GetDeploymentStatusRequest(service_id="web", namespace="team-a"), metadata=operator
        )
        await code_of(
            stub.ScaleDeployment(
                pb.ScaleDeploymentRequest(service_id="nope", namespace="team-a", replicas=2),
                metadata=operator,
            )
        )
        await code_of(stub.StartDeployment(start_request(), metadata=auth(TOKENS["viewer"])))
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "alphaswarm.audit"]
    assert [(line["rpc"], line["principal"], line["outcome"]) for line in lines] == [
        ("StartDeployment", "deployer", "OK"),
        ("ScaleDeployment", "deployer", "NOT_FOUND"),
        ("StartDeployment", "dashboards", "PERMISSION_DENIED"),
    ]
    first = lines[0]
    assert (first["provider"], first["namespace"], first["service"]) == ("memory", "team-a", "web")
    assert first["duration_ms"] >= 0 and first["peer"]
    assert "hunter2" not in caplog.text


async def test_a_viewer_reads_every_env_value_masked(secured: RunningServer) -> None:
    channel, stub = stub_for(secured)
    env = {f"KEY_{i}": f"value-{i}" for i in range(12)}
    async with channel:
        request = start_request()
        request.spec.env.update(env)
        await stub.StartDeployment(request, metadata=auth(TOKENS["operator"]))
        status_request = pb.GetDeploymentStatusRequest(service_id="web", namespace="team-a")
        seen = await stub.GetDeploymentStatus(status_request, metadata=auth(TOKENS["viewer"]))
        assert dict(seen.status.spec.env) == dict.fromkeys(env, SECRET_MASK)
        full = await stub.GetDeploymentStatus(status_request, metadata=auth(TOKENS["operator"]))
        assert dict(full.status.spec.env) == env
