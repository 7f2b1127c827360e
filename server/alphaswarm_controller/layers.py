"""Behaviour layers around each method's handler, composed once per method.

grpc.aio interceptors see only call details; to act on the request, the context
and the outcome, each concern of the server (call set-up, telemetry, error
mapping, audit, the call budget, authentication, scope, limits) is a ``Layer``
that wraps the method's behaviour. ``LayeredInterceptor``, the server's only grpc
interceptor, looks up the method's ``MethodInfo``, lets each layer bind itself to
that method (or decline it), and caches the composed handler: a call then costs one
dictionary lookup plus one frame per layer that applies to its method.

Each call gets one ``CallContext`` (alphaswarm_core.call), built by ``CallSetup``
before any layer runs and passed down explicitly; it is also published in
``current_call`` for providers and logging.
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeAlias

import grpc

from alphaswarm_core.call import CallContext, current_call

from .methods import Kind, MethodInfo, unknown_method
from .observability.logs import REQUEST_ID_KEY, accept_request_id

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
UnaryNext = Callable[[CallContext, Any, Context], Awaitable[Any]]
StreamNext = Callable[[CallContext, Any, Context], AsyncIterator[Any]]
Deserializer = Callable[[bytes], Any]


class Layer:
    """One concern around handlers. Subclasses override ``unary`` and/or ``stream`` and
    say in ``bind`` which methods they apply to (and may specialise per method)."""

    def bind(self, method: MethodInfo) -> Layer | None:
        """The layer serving ``method`` (self, or a per-method specialisation), or None
        when it does nothing for it; called once per method, not per call."""
        return self

    def deserializer(self, inner: Deserializer | None) -> Deserializer | None:
        return inner

    async def unary(
        self, call: CallContext, request: Any, context: Context, proceed: UnaryNext
    ) -> Any:
        return await proceed(call, request, context)

    async def stream(
        self, call: CallContext, request: Any, context: Context, proceed: StreamNext
    ) -> AsyncIterator[Any]:
        async for item in proceed(call, request, context):
            yield item

    def handles(self, kind: Kind) -> bool:
        """Whether this layer overrides the hook that serves calls of ``kind``."""
        hook = "unary" if kind is Kind.UNARY else "stream"
        return getattr(type(self), hook) is not getattr(Layer, hook)


class CallSetup:
    """Builds each call's ``CallContext``: request id (the caller's ``x-request-id`` when
    sane, else a new one; returned in the trailers, and at once in a stream's headers),
    peer, and deadline (the caller's, capped by the server's call budget; a mutating
    call's backend work runs on within the budget when the caller leaves)."""

    def __init__(self, call_budget_seconds: float) -> None:
        self.budget = call_budget_seconds

    def begin(self, method: MethodInfo, context: Context) -> CallContext:
        sent = None
        for key, value in context.invocation_metadata() or ():
            if key == REQUEST_ID_KEY:
                sent = value
                break
        request_id = accept_request_id(sent)
        deadline = None
        if method.kind is Kind.UNARY:
            remaining = None if method.mutating else context.time_remaining()
            budget = self.budget if remaining is None else min(self.budget, remaining)
            deadline = time.monotonic() + budget
        call = CallContext(method.name, request_id, context.peer(), deadline)
        current_call.set(call)
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
        return call


def _chain_unary(layers: Sequence[Layer], inner: Any) -> UnaryNext:
    async def handler(call: CallContext, request: Any, context: Context) -> Any:
        return await inner(request, context)

    proceed: UnaryNext = handler
    for layer in reversed(layers):
        proceed = functools.partial(layer.unary, proceed=proceed)
    return proceed


def _chain_stream(layers: Sequence[Layer], inner: Any) -> StreamNext:
    def handler(call: CallContext, request: Any, context: Context) -> AsyncIterator[Any]:
        return _iterate(inner(request, context))

    proceed: StreamNext = handler
    for layer in reversed(layers):
        proceed = functools.partial(layer.stream, proceed=proceed)
    return proceed


async def _iterate(produced: Any) -> AsyncIterator[Any]:
    """A handler's stream: an async generator, or a coroutine that writes with
    ``context.write`` (grpc.health.v1 Watch does)."""
    if hasattr(produced, "__aiter__"):
        async for item in produced:
            yield item
    else:
        await produced


def compose(
    method: MethodInfo, handler: Handler, layers: Sequence[Layer], setup: CallSetup
) -> Handler:
    """``handler`` with the layers that apply to ``method`` around it (outermost first)."""
    bound = [b for layer in layers if (b := layer.bind(method)) is not None]
    deserialize = handler.request_deserializer
    for layer in reversed(bound):
        deserialize = layer.deserializer(deserialize)
    if handler.unary_unary is not None:
        chain = _chain_unary([b for b in bound if b.handles(Kind.UNARY)], handler.unary_unary)

        async def unary(request: Any, context: Context) -> Any:
            return await chain(setup.begin(method, context), request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=deserialize,
            response_serializer=handler.response_serializer,
        )
    inner = handler.unary_stream or handler.stream_stream
    if inner is None:
        return handler  # client streaming: none served
    flow = _chain_stream([b for b in bound if b.handles(Kind.SERVER_STREAM)], inner)

    # grpc.aio recognises streaming behaviours by being async generator functions.
    async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
        call = setup.begin(method, context)
        # A stream may run for hours: its request id goes out in the headers at once.
        await context.send_initial_metadata(((REQUEST_ID_KEY, call.request_id),))
        async for item in flow(call, request, context):
            yield item

    factory = (
        grpc.unary_stream_rpc_method_handler
        if handler.unary_stream is not None
        else grpc.stream_stream_rpc_method_handler
    )
    return factory(
        stream,
        request_deserializer=deserialize,
        response_serializer=handler.response_serializer,
    )


class LayeredInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """The server's only grpc interceptor: composes the layers once per method.

    grpc.aio awaits every registered interceptor on every call, even when each
    returns a cached handler, so there is exactly one, and it returns a cached,
    fully composed handler.
    """

    def __init__(
        self, methods: Mapping[str, MethodInfo], layers: Sequence[Layer], setup: CallSetup
    ) -> None:
        self._methods = methods
        self._layers = tuple(layers)
        self._setup = setup
        self._composed: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        path = handler_call_details.method
        cached = self._composed.get(path)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = self._methods.get(path) or unknown_method(path)
        composed = compose(method, handler, self._layers, self._setup)
        self._composed[path] = composed
        return composed
