"""What each RPC is, read once from the service descriptors: the one table per RPC.

ProviderService declares every method's access in the proto (the
``alphaswarm.provider.v1.access`` method option: least role, scope, target field)
and whether it changes state (``idempotency_level``). The server reads those
options here at start-up; authorization, audit, metrics and limits consult the
resulting ``MethodInfo`` instead of lists of names. The standard services beside it
(health, reflection) are not ours to annotate, so their rows are declared here.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from google.protobuf import descriptor, descriptor_pb2

from alphaswarm.provider.v1 import access_pb2
from alphaswarm.provider.v1 import provider_service_pb2 as pb

PROVIDER_SERVICE = pb.DESCRIPTOR.services_by_name["ProviderService"].full_name
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = (
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)


class Kind(enum.StrEnum):
    """How a method streams, with the names Prometheus' grpc metrics use."""

    UNARY = "unary"
    SERVER_STREAM = "server_stream"
    CLIENT_STREAM = "client_stream"
    BIDI_STREAM = "bidi_stream"


class Scope(enum.IntEnum):
    """Mirrors ``alphaswarm.provider.v1.Scope``."""

    SERVER = access_pb2.SCOPE_SERVER
    PROVIDER = access_pb2.SCOPE_PROVIDER
    NAMESPACE = access_pb2.SCOPE_NAMESPACE
    NAMESPACE_OR_ALL = access_pb2.SCOPE_NAMESPACE_OR_ALL


@dataclass(frozen=True, slots=True)
class MethodInfo:
    """One RPC: where it lives, how it streams, who may call it and what it addresses."""

    service: str
    name: str
    kind: Kind
    role: int | None
    """Least ``alphaswarm.provider.v1.Role`` number a token needs; None = open (no token)."""
    scope: Scope = Scope.SERVER
    target: str = ""
    """Request field holding service_id and namespace ("" = the request itself)."""
    mutating: bool = False

    @property
    def path(self) -> str:
        """The method as grpc names it on the wire: ``/package.Service/Method``."""
        return f"/{self.service}/{self.name}"

    @property
    def ours(self) -> bool:
        """Part of ProviderService (not health or reflection)."""
        return self.service == PROVIDER_SERVICE


def _kind(method: descriptor.MethodDescriptor) -> Kind:
    proto = descriptor_pb2.MethodDescriptorProto()
    method.CopyToProto(proto)
    if proto.client_streaming:
        return Kind.BIDI_STREAM if proto.server_streaming else Kind.CLIENT_STREAM
    return Kind.SERVER_STREAM if proto.server_streaming else Kind.UNARY


def _declared(method: descriptor.MethodDescriptor) -> MethodInfo:
    options = method.GetOptions()
    if not options.HasExtension(access_pb2.access):
        raise RuntimeError(f"{method.full_name} declares no (alphaswarm.provider.v1.access)")
    access = options.Extensions[access_pb2.access]
    if access.role == access_pb2.ROLE_UNSPECIFIED:
        raise RuntimeError(f"{method.full_name} declares no role")
    return MethodInfo(
        service=method.containing_service.full_name,
        name=method.name,
        kind=_kind(method),
        role=int(access.role),
        scope=Scope(access.scope or access_pb2.SCOPE_SERVER),
        target=access.target,
        mutating=options.idempotency_level != descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
    )


def provider_service_methods() -> list[MethodInfo]:
    """Every ProviderService method, from the proto's options."""
    service = pb.DESCRIPTOR.services_by_name["ProviderService"]
    return [_declared(method) for method in service.methods]


def _standard_methods(protect_reflection: bool) -> Iterable[MethodInfo]:
    # Health stays open so that probes and load balancers need no token.
    yield MethodInfo(HEALTH_SERVICE, "Check", Kind.UNARY, None)
    yield MethodInfo(HEALTH_SERVICE, "Watch", Kind.SERVER_STREAM, None)
    yield MethodInfo(HEALTH_SERVICE, "List", Kind.UNARY, None)
    for service in REFLECTION_SERVICES:
        role = access_pb2.ROLE_VIEWER if protect_reflection else None
        yield MethodInfo(service, "ServerReflectionInfo", Kind.BIDI_STREAM, role)


def method_table(protect_reflection: bool = False) -> Mapping[str, MethodInfo]:
    """Every method the server serves, by wire path."""
    rows = [*provider_service_methods(), *_standard_methods(protect_reflection)]
    return MappingProxyType({row.path: row for row in rows})


def unknown_method(path: str) -> MethodInfo:
    """A row for a path the table lacks (grpc answers UNIMPLEMENTED): no layer applies."""
    service, _, name = path.lstrip("/").partition("/")
    return MethodInfo(service, name, Kind.UNARY, None)
