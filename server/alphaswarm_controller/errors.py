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
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

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

DOMAIN = "alphaswarm.dev"
STATUS_DETAILS_KEY = "grpc-status-details-bin"

log = logging.getLogger(__name__)

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

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
    metadata = dict(error.metadata)
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
                            field=v.field, description=v.description
                        )
                        for v in error.violations
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
    return code, status_pb2.Status(code=code.value[0], message=error.message, details=details)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: BaseException) -> None:
    code, status = to_status(error)
    log.info("provider=%s -> %s: %s", current_provider.get() or "-", code.name, status.message)
    await context.abort(
        code, status.message, trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),)
    )


def _start_deadline(context: grpc.aio.ServicerContext[Any, Any], cap: float) -> float:
    """Publish the call's deadline (caller's, capped by ``cap``) to providers; return budget."""
    remaining = context.time_remaining()
    budget = cap if remaining is None else min(cap, remaining)
    call_deadline.set(time.monotonic() + budget)
    return budget


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps ProviderService handlers with error mapping and the per-call backend budget."""

    def __init__(self, service_prefix: str, call_timeout_seconds: float) -> None:
        self._prefix = service_prefix
        self._timeout = call_timeout_seconds
        self._wrapped: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None or not method.startswith(self._prefix):
            return handler
        wrapped = self._wrap(handler)
        self._wrapped[method] = wrapped  # handlers are per method: wrap each once
        return wrapped

    def _wrap(self, handler: Handler) -> Handler:
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream),  # type: ignore[arg-type]
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _wrap_unary(self, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                async with asyncio.timeout(_start_deadline(context, self._timeout)):
                    return await behavior(request, context)
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                await _abort(context, error)

        return unary

    def _wrap_stream(
        self, behavior: Callable[..., AsyncIterator[Any]]
    ) -> Callable[..., AsyncIterator[Any]]:
        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                async for item in behavior(request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                await _abort(context, error)

        return stream
