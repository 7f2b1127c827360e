"""Behaviour layers around each method's handler, composed when it is registered.

Each concern of the server (call set-up, telemetry, error mapping, audit, the call
budget, authentication, scope, limits) is a ``Layer`` that wraps the method's
behaviour, with access to the request, the context and the outcome. Services are
registered on a ``LayeredServer`` (``add_*Servicer_to_server(servicer, layered)``),
which looks up each method's ``MethodInfo``, lets each layer bind itself to that
method (or decline it) and hands grpc the composed handler. grpc.aio then runs no
interceptor (it would await one per call, even one returning a cached handler): a
call costs one frame per layer that applies to its method, and no look-up.

Each call gets one ``CallContext`` (alphaswarm_core.call), built by ``CallSetup``
before any layer runs and passed down explicitly; it is also published in
``current_call`` for providers and logging.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar

import grpc

from alphaswarm_core.call import CallContext, current_call

from .methods import Kind, MethodInfo, unknown_method
from .observability.logs import REQUEST_ID_KEY, accept_request_id

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
UnaryNext = Callable[[CallContext, Any, Context], Awaitable[Any]]
StreamNext = Callable[[CallContext, Any, Context], AsyncIterator[Any]]
Deserializer = Callable[[bytes], Any]
GenericHandler: TypeAlias = "grpc.GenericRpcHandler[Any, Any]"


class Layer:
    """One concern around handlers. Subclasses say in ``bind`` which methods they apply
    to (and may specialise per method), and override either ``check`` (a concern that
    only looks at the call before it goes on: it costs a function call and no frame of
    its own) or ``unary`` and/or ``stream`` (a concern around the rest of the call)."""

    def bind(self, method: MethodInfo) -> Layer | None:
        """The layer serving ``method`` (self, or a per-method specialisation), or None
        when it does nothing for it; called once per method, not per call."""
        return self

    def deserializer(self, inner: Deserializer | None) -> Deserializer | None:
        return inner

    def check(self, call: CallContext, request: Any, context: Context) -> None:
        """Runs before the layers inside, within the error handling of those outside
        (raise to refuse the call)."""

    async def unary(
        self, call: CallContext, request: Any, context: Context, proceed: UnaryNext
    ) -> Any:
        self.check(call, request, context)
        return await proceed(call, request, context)

    async def stream(
        self, call: CallContext, request: Any, context: Context, proceed: StreamNext
    ) -> AsyncIterator[Any]:
        self.check(call, request, context)
        async for item in proceed(call, request, context):
            yield item

    def overrides(self, hook: str) -> bool:
        return getattr(type(self), hook) is not getattr(Layer, hook)

    def handles(self, kind: Kind) -> bool:
        """Whether this layer does anything for calls of ``kind``."""
        hook = "unary" if kind is Kind.UNARY else "stream"
        return self.overrides(hook) or self.overrides("check")


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


def _chain_unary(layers: Sequence[Layer], inner: Callable[..., Any]) -> UnaryNext:
    # A plain function, not a coroutine: the layer outside awaits the servicer's own.
    def handler(call: CallContext, request: Any, context: Context) -> Awaitable[Any]:
        return inner(request, context)  # type: ignore[no-any-return]

    proceed: UnaryNext = handler
    for layer in reversed(layers):
        if layer.overrides("unary"):
            proceed = functools.partial(layer.unary, proceed=proceed)
        else:
            proceed = _checked(layer.check, proceed)
    return proceed


def _chain_stream(layers: Sequence[Layer], inner: Any) -> StreamNext:
    def handler(call: CallContext, request: Any, context: Context) -> AsyncIterator[Any]:
        return _iterate(inner(request, context))

    def generator(call: CallContext, request: Any, context: Context) -> AsyncIterator[Any]:
        return inner(request, context)  # type: ignore[no-any-return]

    # An async generator function is its own stream: no generator around it.
    proceed: StreamNext = generator if inspect.isasyncgenfunction(inner) else handler

    for layer in reversed(layers):
        if layer.overrides("stream"):
            proceed = functools.partial(layer.stream, proceed=proceed)
        else:
            proceed = _checked(layer.check, proceed)
    return proceed


Next = TypeVar("Next", UnaryNext, StreamNext)


def _checked(check: Callable[[CallContext, Any, Context], None], proceed: Next) -> Next:
    """``proceed`` after ``check``, with no frame of the layer's own: the check runs
    where the layer outside calls ``proceed``, so within that layer's error handling."""

    def checked(call: CallContext, request: Any, context: Context) -> Any:
        check(call, request, context)
        return proceed(call, request, context)

    return checked


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


class LayeredServer(grpc.aio.Server):
    """A grpc.aio server whose method handlers are registered composed with the layers
    (``add_*Servicer_to_server(servicer, layered)``); the rest is the wrapped server's."""

    def __init__(
        self,
        server: grpc.aio.Server,
        methods: Mapping[str, MethodInfo],
        layers: Sequence[Layer],
        setup: CallSetup,
    ) -> None:
        self._server = server
        self._methods = methods
        self._layers = tuple(layers)
        self._setup = setup

    def compose(self, path: str, handler: Handler) -> Handler:
        """``handler`` of the method at ``path`` with the layers that apply to it."""
        method = self._methods.get(path) or unknown_method(path)
        return compose(method, handler, self._layers, self._setup)

    def knows(self, path: str) -> bool:
        return path in self._methods

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, Handler]
    ) -> None:
        # grpc.aio has it since 1.62; grpc-stubs does not know it yet.
        self._server.add_registered_method_handlers(  # type: ignore[attr-defined]
            service_name,
            {
                name: self.compose(f"/{service_name}/{name}", handler)
                for name, handler in method_handlers.items()
            },
        )

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[GenericHandler]) -> None:
        # grpc asks these only for methods not registered by name.
        self._server.add_generic_rpc_handlers(
            [_ComposedGenericHandler(inner, self) for inner in generic_rpc_handlers]
        )

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self._server.add_secure_port(address, server_credentials)

    async def start(self) -> None:
        await self._server.start()

    async def stop(self, grace: float | None = None) -> None:
        await self._server.stop(grace)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - grpc's signature
        return await self._server.wait_for_termination(timeout)


class _ComposedGenericHandler(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """A generic handler whose method handlers come out composed, once per method."""

    def __init__(self, inner: GenericHandler, layered: LayeredServer) -> None:
        self._inner = inner
        self._layered = layered
        self._composed: dict[str, Handler | None] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        path = handler_call_details.method
        if path in self._composed:
            return self._composed[path]
        handler = self._inner.service(handler_call_details)
        composed = None if handler is None else self._layered.compose(path, handler)
        if self._layered.knows(path):  # not for every path a caller makes up
            self._composed[path] = composed
        return composed
