"""The authorization matrix, through the real server: every RPC x every caller x scope.

Every ProviderService method comes from the service descriptor, so a new RPC cannot
be forgotten: it must be added to ``EXPECTED_ACCESS`` (this test's own statement of
who may call what, independent of the server's code and of the proto's options,
which are checked against it), and the matrix then tries it with every caller:
no token, a bad token, each role unscoped, and tokens restricted to a namespace or
to a provider, on a request inside, outside, and across every namespace. An
allowed call may still fail (the service does not exist, say), but never with
UNAUTHENTICATED or PERMISSION_DENIED; a refused one gets exactly the code and the
reason the catalogue gives. Health and reflection are in the matrix too.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, descriptor_pb2, message
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from alphaswarm.provider.v1 import access_pb2
from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm_controller.security.tokens import hash_token
from alphaswarm_controller.server import RunningServer
from tests.security.conftest import ServerFactory

SERVICE = pb.DESCRIPTOR.services_by_name["ProviderService"]
VIEWER, OPERATOR, ADMIN = 1, 2, 3

# Who may call what, stated here once more on purpose: (least role, scope). A change of
# the proto's access options that is not also made here fails the first test.
EXPECTED_ACCESS: dict[str, tuple[int, str]] = {
    "ListProviders": (VIEWER, "server"),
    "CheckHealth": (VIEWER, "provider"),
    "StartDeployment": (OPERATOR, "namespace"),
    "StopDeployment": (OPERATOR, "namespace"),
    "ScaleDeployment": (OPERATOR, "namespace"),
    "GetDeploymentStatus": (VIEWER, "namespace"),
    "ListDeployments": (VIEWER, "namespace_or_all"),
    "GetServiceConfig": (VIEWER, "namespace"),
    "ApplyConfig": (OPERATOR, "namespace"),
    "StreamMetrics": (VIEWER, "namespace"),
    "WatchDeployment": (VIEWER, "namespace"),
    "StreamLogs": (VIEWER, "namespace"),
    "DeleteDeployment": (OPERATOR, "namespace"),
    "WatchDeployments": (VIEWER, "namespace_or_all"),
    "ListRevisions": (VIEWER, "namespace"),
    "RollbackDeployment": (OPERATOR, "namespace"),
}
SCOPES = {
    access_pb2.SCOPE_SERVER: "server",
    access_pb2.SCOPE_PROVIDER: "provider",
    access_pb2.SCOPE_NAMESPACE: "namespace",
    access_pb2.SCOPE_NAMESPACE_OR_ALL: "namespace_or_all",
}


@dataclass(frozen=True)
class Caller:
    name: str
    token: str | None
    role: int = 0
    namespaces: frozenset[str] | None = None
    providers: frozenset[str] | None = None


CALLERS = (
    Caller("no-token", None),
    Caller("bad-token", "tok-not-in-the-file-0123456789"),
    Caller("viewer", "tok-m-viewer-0123456789", VIEWER),
    Caller("operator", "tok-m-operator-0123456789", OPERATOR),
    Caller("admin", "tok-m-admin-0123456789", ADMIN),
    Caller("viewer-a", "tok-m-viewer-a-0123456789", VIEWER, frozenset({"team-a"})),
    Caller("operator-a", "tok-m-operator-a-0123456789", OPERATOR, frozenset({"team-a"})),
    Caller("admin-a", "tok-m-admin-a-0123456789", ADMIN, frozenset({"team-a"})),
    Caller("operator-memory", "tok-m-op-memory-0123456789", OPERATOR, None, frozenset({"memory"})),
    Caller(
        "admin-configless", "tok-m-ad-cfgless-0123456789", ADMIN, None, frozenset({"configless"})
    ),
)
ROLE_NAMES = {VIEWER: "viewer", OPERATOR: "operator", ADMIN: "admin"}


@dataclass(frozen=True)
class Variant:
    """Where a request points: a provider alias ("" = the default, memory) and a
    namespace ("" = default for one-namespace calls, every namespace otherwise)."""

    provider: str
    namespace: str


VARIANTS = {
    "server": (Variant("", ""),),
    "provider": (Variant("memory", ""), Variant("configless", "")),
    "namespace": (
        Variant("", "team-a"),
        Variant("", "team-b"),
        Variant("", ""),
        Variant("configless", "team-a"),
    ),
    "namespace_or_all": (
        Variant("", "team-a"),
        Variant("", "team-b"),
        Variant("", ""),
        Variant("configless", "team-a"),
    ),
}


def expected_refusal(caller: Caller, method: str, variant: Variant) -> tuple[str, str] | None:
    """(code, reason) of a refused call, None when the caller may make it."""
    if caller.role == 0:
        return ("UNAUTHENTICATED", "UNAUTHENTICATED")
    role, scope = EXPECTED_ACCESS[method]
    denied = ("PERMISSION_DENIED", "CALLER_PERMISSION_DENIED")
    if caller.role < role:
        return denied
    if scope == "server":
        return None
    alias = variant.provider or "memory"
    if caller.providers is not None and alias not in caller.providers:
        return denied
    if scope == "provider" or caller.namespaces is None:
        return None
    if scope == "namespace_or_all" and not variant.namespace:
        return None  # every namespace the caller may see (the answer shows only those)
    namespace = variant.namespace or "default"
    return None if namespace in caller.namespaces else denied


# -- requests built from the descriptor ---------------------------------------------------------

# Fields (beyond provider, service_id, namespace) a request needs to pass validation, by
# message: a new request message with required fields of its own fails the matrix with a
# validation error for allowed callers, which the matrix reports.
REQUIRED_FIELDS: dict[str, dict[str, Any]] = {
    "alphaswarm.provider.v1.DeploymentSpec": {"command": ["sleep", "300"], "replicas": 1},
    "alphaswarm.provider.v1.ConfigMapPatch": {"set": {"MATRIX": "1"}},
    "alphaswarm.provider.v1.ScaleDeploymentRequest": {"replicas": 1},
}


def request_for(method: descriptor.MethodDescriptor, variant: Variant) -> message.Message:
    request: Any = getattr(pb, method.input_type.name)()
    options = method.GetOptions().Extensions[access_pb2.access]
    if "provider" in method.input_type.fields_by_name:
        request.provider = variant.provider
    target = getattr(request, options.target) if options.target else request
    fields = target.DESCRIPTOR.fields_by_name
    if "service_id" in fields:
        target.service_id = "matrix-svc"
    if "namespace" in fields:
        target.namespace = variant.namespace
    for holder in (request, target):
        for name, value in REQUIRED_FIELDS.get(holder.DESCRIPTOR.full_name, {}).items():
            field = getattr(holder, name)
            if isinstance(value, list):
                field.extend(value)
            elif isinstance(value, dict):
                field.update(value)
            else:
                setattr(holder, name, value)
    built: message.Message = request
    return built


def _kind(method: descriptor.MethodDescriptor) -> tuple[bool, bool]:
    proto = descriptor_pb2.MethodDescriptorProto()
    method.CopyToProto(proto)
    return proto.client_streaming, proto.server_streaming


async def outcome(
    channel: grpc.aio.Channel, method: descriptor.MethodDescriptor, request: message.Message,
    token: str | None,
) -> tuple[str, str]:  # fmt: skip
    """(code name, ErrorInfo reason) of one call; a stream is read to its first message."""
    path = f"/{SERVICE.full_name}/{method.name}"
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    response_type = getattr(pb, method.output_type.name)
    client_streaming, server_streaming = _kind(method)
    assert not client_streaming, f"{method.name}: the matrix calls unary and server streams"
    try:
        if server_streaming:
            stream = channel.unary_stream(
                path,
                request_serializer=type(request).SerializeToString,
                response_deserializer=response_type.FromString,
            )(request, metadata=metadata, timeout=10)
            async for _ in stream:
                stream.cancel()  # one message: the call was allowed
                break
        else:
            await channel.unary_unary(
                path,
                request_serializer=type(request).SerializeToString,
                response_deserializer=response_type.FromString,
            )(request, metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as error:
        return error.code().name, _reason(error)
    return "OK", ""


def _reason(error: grpc.aio.AioRpcError) -> str:
    trailers: Any = error.trailing_metadata() or ()
    for key, value in trailers:
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            for detail in status_pb2.Status.FromString(value).details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return str(info.reason)
    return ""


# -- fixtures ------------------------------------------------------------------------------------


def _tokens_file(path: Path) -> Path:
    lines = ["tokens:"]
    for caller in CALLERS:
        if caller.role == 0:
            continue
        lines += [
            f"  - name: {caller.name}",
            f"    sha256: {hash_token(caller.token or '')}",
            f"    role: {ROLE_NAMES[caller.role]}",
        ]
        if caller.namespaces is not None:
            lines.append(f"    namespaces: [{', '.join(sorted(caller.namespaces))}]")
        if caller.providers is not None:
            lines.append(f"    providers: [{', '.join(sorted(caller.providers))}]")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
async def matrix_server(
    make_server: ServerFactory, tmp_path: Path
) -> AsyncIterator[tuple[RunningServer, grpc.aio.Channel]]:
    running = await make_server(
        tokens_file=_tokens_file(tmp_path / "matrix-tokens.yaml"), reflection="auth"
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield running, channel


def _cases() -> Iterator[tuple[descriptor.MethodDescriptor, Caller, Variant]]:
    for method in SERVICE.methods:
        scope = SCOPES[method.GetOptions().Extensions[access_pb2.access].scope]
        for caller, variant in itertools.product(CALLERS, VARIANTS[scope]):
            yield method, caller, variant


# -- the tests -------------------------------------------------------------------------------------


def test_the_proto_declares_exactly_the_expected_access() -> None:
    declared = {}
    for method in SERVICE.methods:
        options = method.GetOptions()
        assert options.HasExtension(access_pb2.access), f"{method.name} declares no access"
        access = options.Extensions[access_pb2.access]
        declared[method.name] = (int(access.role), SCOPES[access.scope])
    missing = set(declared) - set(EXPECTED_ACCESS)
    assert not missing, f"new RPCs: add them to EXPECTED_ACCESS with who may call them: {missing}"
    assert declared == EXPECTED_ACCESS


async def test_every_rpc_every_caller_every_scope(
    matrix_server: tuple[RunningServer, grpc.aio.Channel],
) -> None:
    _, channel = matrix_server
    wrong = []
    tried = 0
    for method, caller, variant in _cases():
        tried += 1
        got = await outcome(channel, method, request_for(method, variant), caller.token)
        refusal = expected_refusal(caller, method.name, variant)
        if refusal is None:
            if got[0] in ("UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT"):
                wrong.append(f"{method.name} {caller.name} {variant}: refused {got}")
        elif got != refusal:
            wrong.append(f"{method.name} {caller.name} {variant}: {got}, expected {refusal}")
    assert tried >= len(SERVICE.methods) * len(CALLERS)
    assert not wrong, "\n".join(wrong)


async def test_health_stays_open_and_reflection_needs_a_viewer(
    matrix_server: tuple[RunningServer, grpc.aio.Channel],
) -> None:
    _, channel = matrix_server
    health = health_pb2_grpc.HealthStub(channel)
    checked = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert checked.status == health_pb2.HealthCheckResponse.SERVING
    watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
    first = await anext(aiter(watch))
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    for caller in CALLERS:
        metadata = (("authorization", f"Bearer {caller.token}"),) if caller.token else ()
        allowed = caller.role >= VIEWER
        # A caller to be refused sends no message: one written after the refusal arrived
        # fails in grpc core, and the client then reports INTERNAL instead of the
        # server's status (see test_auth.refused_code). Let in wrongly, it gets "ENDED".
        requests = iter([ask] if allowed else ())
        call = reflection.ServerReflectionInfo(requests, metadata=metadata, timeout=10)
        try:
            answer = await anext(aiter(call))
            got = "OK" if answer.HasField("list_services_response") else "EMPTY"
        except StopAsyncIteration:
            got = "ENDED"
        except grpc.aio.AioRpcError as error:
            got = error.code().name
        assert got == ("OK" if allowed else "UNAUTHENTICATED"), caller.name
