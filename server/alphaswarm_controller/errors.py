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
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from alphaswarm_core.call import CallContext
from alphaswarm_core.providers.errors import (
    BackendTimeoutError,
    BackendUnavailableError,
    DeploymentNotFoundError,
    InfrastructureProviderError,
    InvalidSpecError,
)
from alphaswarm_core.providers.reasons import ErrorReason

from .layers import Context, Deserializer, Layer, StreamNext, UnaryNext
from .methods import MethodInfo

DOMAIN = "alphaswarm.dev"
# Statuses travel in HTTP/2 trailers, which clients cap (8 KiB by default); errors
# about huge inputs must not echo them back in full.
MAX_MESSAGE_CHARS = 1000
MAX_VIOLATIONS = 25
MAX_DETAIL_CHARS = 256
STATUS_DETAILS_KEY = "grpc-status-details-bin"

log = logging.getLogger(__name__)


class ServerShuttingDown(BackendUnavailableError):
    """Ends open streams when the server stops; clients reconnect elsewhere."""

    reason = ErrorReason.SERVER_SHUTTING_DOWN

    def __init__(self) -> None:
        super().__init__("server is shutting down; reconnect and retry", retry_after_seconds=1.0)


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
    """The gRPC code and google.rpc.Status for ``error`` raised while ``provider`` served."""
    error = as_provider_error(error)
    code = grpc.StatusCode[error.code]
    metadata = {key: _clip(value, MAX_DETAIL_CHARS) for key, value in error.metadata.items()}
    if provider:
        metadata["provider"] = provider
    details = [
        _pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=metadata))
    ]
    if isinstance(error, InvalidSpecError):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=_clip(v.field, MAX_DETAIL_CHARS),
                            description=_clip(v.description, MAX_DETAIL_CHARS),
                        )
                        for v in error.violations[:MAX_VIOLATIONS]
                    ]
                )
            )
        )
    elif isinstance(error, DeploymentNotFoundError):
        details.append(
            _pack(
                error_details_pb2.ResourceInfo(
                    resource_type="alphaswarm.provider.v1.Deployment",
                    resource_name=f"{error.namespace}/{error.service_id}",
                    owner=provider,
                    description=error.message,
                )
            )
        )
    elif isinstance(error, BackendUnavailableError):
        delay = error_details_pb2.RetryInfo()
        delay.retry_delay.FromNanoseconds(int(error.retry_after_seconds * 1e9))
        details.append(_pack(delay))
    message = _clip(error.message, MAX_MESSAGE_CHARS)
    return code, status_pb2.Status(code=code.value[0], message=message, details=details)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
            _reject_malformed(call, request)
            return await proceed(call, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort(call, context, error)

    async def stream(
        self, call: CallContext, request: Any, context: Context, proceed: StreamNext
    ) -> AsyncIterator[Any]:
        try:
            _reject_malformed(call, request)
            async for item in proceed(call, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort(call, context, error)


_PLAIN = ErrorMapping(tolerant=False)


def _reject_malformed(call: CallContext, request: Any) -> None:
    if isinstance(request, MalformedRequest):
        raise InvalidSpecError.single("request", f"not a valid {call.method} request message")
