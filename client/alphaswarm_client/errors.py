"""Typed exceptions rebuilt from a gRPC status and its google.rpc rich details.

The server attaches a serialized ``google.rpc.Status`` to every error in the
``grpc-status-details-bin`` trailer (ErrorInfo always; BadRequest, RetryInfo and
ResourceInfo where they apply). Callers should not have to unpack ``Any``
messages to learn which field was wrong or how long to wait, so this module
turns the trailer back into plain attributes on one exception per status code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from alphaswarm.provider.v1 import error_reason_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"
REQUEST_ID_KEY = "x-request-id"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid request field (``spec.service_id``) and what is wrong with it."""

    field: str
    description: str


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    """The resource an error is about, e.g. the deployment that was not found."""

    resource_type: str
    resource_name: str
    owner: str
    description: str


class AlphaswarmError(Exception):
    """A failed call: the gRPC code plus everything the server explained about it."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[FieldViolation] = (),
        retry_delay: float | None = None,
        resource: ResourceInfo | None = None,
        request_id: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations: tuple[FieldViolation, ...] = tuple(field_violations)
        self.retry_delay = retry_delay
        self.resource = resource
        self.request_id = request_id
        """The server's id of the failed call (``x-request-id``): its log lines carry it."""

    @property
    def code_name(self) -> str:
        """The code as gRPC spells it on the wire, e.g. ``NOT_FOUND``."""
        return str(self.code.name)

    def __str__(self) -> str:
        return f"{self.code_name}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code_name}, {self.message!r}, reason={self.reason!r})"

    def one_line(self) -> str:
        """The whole error on one line, for a terminal: code, message, reason, fields."""
        extras: list[str] = []
        if self.reason and self.reason != self.code_name:
            extras.append(f"reason={self.reason}")
        for violation in self.field_violations:
            # The server's message usually already names each field; repeat only what it omits.
            if violation.field not in self.message:
                extras.append(f"{violation.field}: {violation.description}")
        if self.retry_delay is not None:
            extras.append(f"retry after {self.retry_delay:g}s")
        if self.request_id:
            extras.append(f"request {self.request_id}")
        text = f"{self.code_name}: {self.message}"
        if extras:
            text += f" ({'; '.join(extras)})"
        return " ".join(text.split())


class InvalidArgument(AlphaswarmError):
    """A request field is invalid; ``field_violations`` names each one."""


class NotFound(AlphaswarmError):
    """The provider alias, the service, or a backend resource does not exist."""


class ProviderNotFound(NotFound):
    """No provider is registered under the alias; ``metadata['known_aliases']`` lists them."""


class DeploymentNotFound(NotFound):
    """The provider knows no such service; ``resource`` names it."""


class AlreadyExists(AlphaswarmError):
    """The resource exists already."""


class Aborted(AlphaswarmError):
    """A concurrent change won; re-read and retry."""


class ConfigVersionConflict(Aborted):
    """``expected_version`` is stale; ``metadata['current_version']`` has the live one."""


class RevisionConflict(Aborted):
    """The service is no longer at ``expected_revision`` (``metadata['current_revision']``
    has the one it is at); nothing changed: plan again."""


class RevisionNotFound(NotFound):
    """The service has no such revision (never had, or it left the bounded history)."""


class FailedPrecondition(AlphaswarmError):
    """The provider cannot work here as set up (missing SDK or credentials, rejected spec)."""


class Unimplemented(AlphaswarmError):
    """The backend lacks the capability (or the server lacks the RPC)."""


class Unavailable(AlphaswarmError):
    """A transient failure (backend or network); ``retry_delay`` says when to retry."""


class PermissionDenied(AlphaswarmError):
    """The caller, or the controller's own backend identity, lacks a permission."""


class Unauthenticated(AlphaswarmError):
    """The caller sent no or bad credentials."""


class DeadlineExceeded(AlphaswarmError):
    """The call did not finish within its deadline."""


class ResourceExhausted(AlphaswarmError):
    """Quota, capacity, or a message-size limit was hit."""


class Cancelled(AlphaswarmError):
    """The call was cancelled before it finished."""


class Internal(AlphaswarmError):
    """An unexpected server error; ``metadata['incident']`` finds it in the server log."""


_BY_CODE: dict[grpc.StatusCode, type[AlphaswarmError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.DATA_LOSS: Internal,
}

_SPECIFIC: dict[str, type[AlphaswarmError]] = {
    "PROVIDER_NOT_FOUND": ProviderNotFound,
    "DEPLOYMENT_NOT_FOUND": DeploymentNotFound,
    "CONFIG_VERSION_CONFLICT": ConfigVersionConflict,
    "REVISION_CONFLICT": RevisionConflict,
    "REVISION_NOT_FOUND": RevisionNotFound,
}


def _reason_table() -> dict[str, type[AlphaswarmError]]:
    """Every reason of the ErrorReason catalogue (the proto) -> its exception class: the
    class of the reason's one status code, or a subclass made for that reason."""
    table: dict[str, type[AlphaswarmError]] = {}
    for value in error_reason_pb2.ErrorReason.DESCRIPTOR.values:
        if value.number == 0:
            continue
        code = grpc.StatusCode[value.GetOptions().Extensions[error_reason_pb2.status_code]]
        table[value.name] = _SPECIFIC.get(value.name) or _BY_CODE.get(code, AlphaswarmError)
    return table


#: The catalogue's reasons and the exception each is raised as.
REASONS: Mapping[str, type[AlphaswarmError]] = _reason_table()


def _rich_status(error: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status the server attached, or None (e.g. a transport error)."""
    call = cast(Any, error)
    try:
        status: status_pb2.Status | None = rpc_status.from_call(call)
        return status
    except ValueError:
        # The trailer disagrees with the call's code/message (a proxy rewrote one of them);
        # the details are still the server's, so read them directly.
        pass
    except AttributeError:
        return None
    for key, value in call.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return None


def from_rpc_error(error: grpc.RpcError) -> AlphaswarmError:
    """The typed exception for a failed call, carrying every rich detail it had."""
    call = cast(Any, error)
    code: grpc.StatusCode = call.code()
    message: str = call.details() or code.name
    reason = domain = ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    retry_delay: float | None = None
    resource: ResourceInfo | None = None

    request_id = ""
    trailers = getattr(call, "trailing_metadata", None)
    for key, value in (trailers() if trailers else None) or ():
        if key == REQUEST_ID_KEY and isinstance(value, str):
            request_id = value
    status = _rich_status(error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_delay = retry.retry_delay.ToNanoseconds() / 1e9
        elif detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            res = error_details_pb2.ResourceInfo()
            detail.Unpack(res)
            resource = ResourceInfo(
                res.resource_type, res.resource_name, res.owner, res.description
            )

    cls = REASONS.get(reason) or _BY_CODE.get(code, AlphaswarmError)
    if not issubclass(cls, _BY_CODE.get(code, AlphaswarmError)):
        # A reason never overrides the code: callers catching NotFound must still see it.
        cls = _BY_CODE.get(code, AlphaswarmError)
    return cls(
        code,
        message,
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=violations,
        retry_delay=retry_delay,
        resource=resource,
        request_id=request_id,
    )
