"""The one place where exceptions become gRPC statuses (unary and streaming alike).

``ErrorMapping`` wraps every ProviderService handler (and protected reflection), so
servicer methods never catch: a provider's ``InfrastructureProviderError`` becomes
its reason's code with ``google.rpc`` rich details (ErrorInfo always; BadRequest,
RetryInfo, ResourceInfo where they apply), a timeout becomes DEADLINE_EXCEEDED, and
anything unexpected becomes a generic INTERNAL whose traceback stays in the log.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from alphaswarm_core.call import CallContext
from alphaswarm_core.providers.errors import (
    BackendTimeoutError,
    BackendUnavailableError,
    DeploymentNotFoundError,
    FieldViolation,
    InfrastructureProviderError,
    InvalidSpecError,
)
from alphaswarm_core.providers.reasons import ErrorReason

from .layers import Context, Deserializer, Layer, StreamNext, UnaryNext
from .methods import MethodInfo

DOMAIN = "alphaswarm.dev"
# Statuses travel in HTTP/2 trailers, which clients cap (8 KiB soft, 16 KiB hard in
# grpc core); errors about huge inputs must not echo them back in full. The budgets
# are in bytes as they travel: grpc-message percent-encodes every non-ASCII byte
# (x3) and grpc-status-details-bin is base64 (x4/3), so 1 KiB + 3 KiB of status
# stays near 5 KiB on the wire, leaving room for the other trailers.
MAX_MESSAGE_WIRE_BYTES = 1024
MAX_DETAILS_BYTES = 3 * 1024
MAX_VIOLATIONS = 25
MAX_DETAIL_BYTES = 256
MAX_KEY_BYTES = 64
OMITTED_VIOLATIONS_KEY = "omitted_violations"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

log = logging.getLogger(__name__)


class ServerShuttingDown(BackendUnavailableError):
    """Ends open streams when the server stops; clients reconnect elsewhere."""

    reason = ErrorReason.SERVER_SHUTTING_DOWN

    def __init__(self) -> None:
        super().__init__("server is shutting down; reconnect and retry")  # retry after 1 s


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def as_provider_error(error: BaseException) -> InfrastructureProviderError:
    """``error`` as the catalogue sees it: timeouts are BACKEND_TIMEOUT, anything
    unexpected INTERNAL (logged here with its traceback under an incident id)."""
    if isinstance(error, InfrastructureProviderError):
        return error
    if isinstance(error, TimeoutError):
        return BackendTimeoutError("the backend did not answer within the call's deadline")
    incident = uuid.uuid4().hex[:12]
    log.error("unexpected error (incident %s)", incident, exc_info=error)
    return InfrastructureProviderError(
        f"internal error; the server log has details under incident {incident}",
        reason=ErrorReason.INTERNAL,
        metadata={"incident": incident},
    )


def to_status(
    error: BaseException, provider: str = ""
) -> tuple[grpc.StatusCode, status_pb2.Status]:
    """The gRPC code and google.rpc.Status for ``error`` raised while ``provider`` served,
    within the trailer budgets."""
    error = as_provider_error(error)
    code = grpc.StatusCode[error.code]
    message = clip_for_wire(error.message, MAX_MESSAGE_WIRE_BYTES)
    metadata = {
        clip_utf8(key, MAX_KEY_BYTES): clip_utf8(value, MAX_DETAIL_BYTES)
        for key, value in error.metadata.items()
    }
    provider = clip_utf8(provider, MAX_KEY_BYTES)
    if provider:
        metadata["provider"] = provider
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=metadata)
    status = status_pb2.Status(code=code.value[0], message=message, details=[_pack(info)])
    if isinstance(error, InvalidSpecError):
        _add_violations(status, info, error.violations)
    elif isinstance(error, DeploymentNotFoundError):
        status.details.append(
            _pack(
                error_details_pb2.ResourceInfo(
                    resource_type="alphaswarm.provider.v1.Deployment",
                    resource_name=clip_utf8(
                        f"{error.namespace}/{error.service_id}", MAX_DETAIL_BYTES
                    ),
                    owner=provider,
                    description=clip_utf8(error.message, MAX_DETAIL_BYTES),
                )
            )
        )
    elif isinstance(error, BackendUnavailableError):
        delay = error_details_pb2.RetryInfo()
        delay.retry_delay.FromNanoseconds(int(error.retry_after_seconds * 1e9))
        status.details.append(_pack(delay))
    return code, status


def _add_violations(
    status: status_pb2.Status,
    info: error_details_pb2.ErrorInfo,
    violations: Sequence[FieldViolation],
) -> None:
    """As many violations as fit the details budget (the first ones: callers fix those
    first); ErrorInfo says how many were left out."""
    shown = [
        error_details_pb2.BadRequest.FieldViolation(
            field=clip_utf8(v.field, MAX_DETAIL_BYTES),
            description=clip_utf8(v.description, MAX_DETAIL_BYTES),
        )
        for v in violations[:MAX_VIOLATIONS]
    ]
    # Room for the omitted-count entry, the Any wrapper and the BadRequest framing.
    room = MAX_DETAILS_BYTES - status.ByteSize() - 128
    kept = 0
    for violation in shown:
        room -= violation.ByteSize() + 4
        if room < 0:
            break
        kept += 1
    if kept < len(violations):
        info.metadata[OMITTED_VIOLATIONS_KEY] = str(len(violations) - kept)
        status.details[0].Pack(info)
    status.details.append(_pack(error_details_pb2.BadRequest(field_violations=shown[:kept])))


def clip_utf8(text: str, limit: int) -> str:
    """``text`` shortened (with "...") to at most ``limit`` bytes of UTF-8."""
    if len(text) * 4 <= limit or len(text.encode("utf-8", "surrogatepass")) <= limit:
        return text
    return _clip_by(text, limit, lambda char: len(char.encode("utf-8", "surrogatepass")))


def clip_for_wire(text: str, limit: int) -> str:
    """``text`` shortened to at most ``limit`` bytes once percent-encoded as grpc-message
    (printable ASCII but '%' as is, every other UTF-8 byte as %XX)."""
    return _clip_by(text, limit, _wire_bytes)


def _wire_bytes(char: str) -> int:
    if " " <= char <= "~" and char != "%":
        return 1
    return 3 * len(char.encode("utf-8", "surrogatepass"))


def _clip_by(text: str, limit: int, cost: Callable[[str], int]) -> str:
    room = limit - 3  # for the "..."
    used = 0
    cut = None
    for index, char in enumerate(text):
        used += cost(char)
        if cut is None and used > room:
            cut = index
        if used > limit:
            assert cut is not None
            return text[:cut] + "..."
    return text


async def _abort(call: CallContext, context: Context, error: BaseException) -> None:
    code, status = to_status(error, call.alias)
    log.info("provider=%s -> %s: %s", call.alias or "-", code.name, status.message)
    # Keep what outer layers already put in the trailers (x-request-id): abort replaces them.
    kept = tuple(context.trailing_metadata() or ())
    await context.abort(
        code,
        status.message,
        trailing_metadata=(*kept, (STATUS_DETAILS_KEY, status.SerializeToString())),
    )


class MalformedRequest:
    """Stands in for a request whose bytes did not parse, so that the caller gets
    INVALID_ARGUMENT (grpc itself would answer INTERNAL)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class ErrorMapping(Layer):
    """Maps what a ProviderService handler (or a layer inside this one) raises."""

    def __init__(self, tolerant: bool = True) -> None:
        self._tolerant = tolerant

    def bind(self, method: MethodInfo) -> Layer | None:
        if method.ours:
            return self
        # Protected reflection: authentication errors become statuses too.
        return _PLAIN if method.role is not None else None

    def deserializer(self, inner: Deserializer | None) -> Deserializer | None:
        if inner is None or not self._tolerant:
            return inner
        parse = inner

        def tolerant(raw: bytes) -> Any:
            try:
                return parse(raw)
            except Exception as error:
                return MalformedRequest(error)

        return tolerant

    async def unary(
        self, call: CallContext, request: Any, context: Context, proceed: UnaryNext
    ) -> Any:
        try:
            if request.__class__ is MalformedRequest:
                _reject_malformed(call)
            return await proceed(call, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort(call, context, error)

    async def stream(
        self, call: CallContext, request: Any, context: Context, proceed: StreamNext
    ) -> AsyncIterator[Any]:
        try:
            if request.__class__ is MalformedRequest:
                _reject_malformed(call)
            async for item in proceed(call, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort(call, context, error)


_PLAIN = ErrorMapping(tolerant=False)


def _reject_malformed(call: CallContext) -> None:
    raise InvalidSpecError.single("request", f"not a valid {call.method} request message")
