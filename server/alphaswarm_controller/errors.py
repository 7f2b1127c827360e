"""The one place where exceptions become gRPC statuses (unary and streaming alike).

``ErrorMappingInterceptor`` wraps every ProviderService handler, so servicer
methods never catch: a provider's ``InfrastructureProviderError`` becomes its
code with ``google.rpc`` rich details (ErrorInfo always; BadRequest, RetryInfo,
ResourceInfo where they apply), a timeout becomes DEADLINE_EXCEEDED, and
anything unexpected becomes a generic INTERNAL whose traceback stays in the log.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from alphaswarm_core.providers.concurrency import call_deadline
from alphaswarm_core.providers.errors import (
    BackendTimeoutError,
    BackendUnavailableError,
    DeploymentNotFoundError,
    InfrastructureProviderError,
    InvalidSpecError,
)

from .interception import BehaviorInterceptor, Context, StreamBehavior, UnaryBehavior

DOMAIN = "alphaswarm.dev"
# Statuses travel in HTTP/2 trailers, which clients cap (8 KiB by default); errors
# about huge inputs must not echo them back in full.
MAX_MESSAGE_CHARS = 1000
MAX_VIOLATIONS = 25
MAX_DETAIL_CHARS = 256
STATUS_DETAILS_KEY = "grpc-status-details-bin"

log = logging.getLogger(__name__)


#: Alias of the provider serving the current RPC, for ErrorInfo metadata and logs.
current_provider: contextvars.ContextVar[str] = contextvars.ContextVar(
    "alphaswarm_current_provider", default=""
)


class ServerShuttingDown(BackendUnavailableError):
    """Ends open streams when the server stops; clients reconnect elsewhere."""

    reason = "SERVER_SHUTTING_DOWN"

    def __init__(self) -> None:
        super().__init__("server is shutting down; reconnect and retry", retry_after_seconds=1.0)


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(error: BaseException) -> tuple[grpc.StatusCode, status_pb2.Status]:
    """The gRPC code and google.rpc.Status for ``error``."""
    if isinstance(error, TimeoutError):
        error = BackendTimeoutError("the backend did not answer within the call's deadline")
    if not isinstance(error, InfrastructureProviderError):
        incident = uuid.uuid4().hex[:12]
        log.error("unexpected error (incident %s)", incident, exc_info=error)
        error = InfrastructureProviderError(
            f"internal error; the server log has details under incident {incident}",
            reason="INTERNAL",
            metadata={"incident": incident},
        )
    code = grpc.StatusCode[error.code]
    metadata = {key: _clip(value, MAX_DETAIL_CHARS) for key, value in error.metadata.items()}
    provider = current_provider.get()
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


async def _abort(context: Context, error: BaseException) -> None:
    code, status = to_status(error)
    log.info("provider=%s -> %s: %s", current_provider.get() or "-", code.name, status.message)
    # Keep what outer layers already put in the trailers (x-request-id): abort replaces them.
    kept = tuple(context.trailing_metadata() or ())
    await context.abort(
        code,
        status.message,
        trailing_metadata=(*kept, (STATUS_DETAILS_KEY, status.SerializeToString())),
    )


def _start_deadline(context: Context, cap: float) -> float:
    """Publish the call's deadline (caller's, capped by ``cap``) to providers; return budget."""
    remaining = context.time_remaining()
    budget = cap if remaining is None else min(cap, remaining)
    call_deadline.set(time.monotonic() + budget)
    return budget


class MalformedRequest:
    """Stands in for a request whose bytes did not parse, so that the caller gets
    INVALID_ARGUMENT (grpc itself would answer INTERNAL)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class ErrorMappingInterceptor(BehaviorInterceptor):
    """Wraps ProviderService handlers with error mapping and the per-call backend budget."""

    def __init__(self, service_prefix: str, call_timeout_seconds: float) -> None:
        super().__init__()
        self._prefix = service_prefix
        self._timeout = call_timeout_seconds

    def applies_to(self, method: str) -> bool:
        return method.startswith(self._prefix)

    def deserializer(
        self, method: str, inner: Callable[[bytes], Any] | None
    ) -> Callable[[bytes], Any] | None:
        if inner is None:
            return None
        parse = inner

        def tolerant(raw: bytes) -> Any:
            try:
                return parse(raw)
            except Exception as error:
                return MalformedRequest(error)

        return tolerant

    async def unary(
        self, method: str, request: Any, context: Context, behavior: UnaryBehavior
    ) -> Any:
        try:
            _reject_malformed(method, request)
            async with asyncio.timeout(_start_deadline(context, self._timeout)):
                return await behavior(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort(context, error)

    async def stream(
        self, method: str, request: Any, context: Context, behavior: StreamBehavior
    ) -> AsyncIterator[Any]:
        try:
            _reject_malformed(method, request)
            async for item in behavior(request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as error:
            await _abort(context, error)


def _reject_malformed(method: str, request: Any) -> None:
    if isinstance(request, MalformedRequest):
        raise InvalidSpecError.single(
            "request", f"not a valid {method.rsplit('/', 1)[-1]} request message"
        )
