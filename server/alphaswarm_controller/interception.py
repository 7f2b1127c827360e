"""Behaviour layers around the handlers of selected methods, and the one interceptor
that applies them.

grpc.aio interceptors see only call details; to act on the request, the
context and the outcome, each layer (observability, audit, error mapping, auth,
limits) wraps the method's behaviour. ``LayeredInterceptor`` composes the
layers once per method and caches the result, so a layer costs one extra await
per call, not a handler rebuild. Per-call state must therefore come from the
``context`` at call time, never from the wrapper.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import grpc

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
UnaryBehavior = Callable[[Any, Context], Awaitable[Any]]
StreamBehavior = Callable[[Any, Context], AsyncIterator[Any]]


class BehaviorInterceptor:
    """One layer: subclasses override ``unary`` and/or ``stream``; ``applies_to`` picks
    the methods. ``LayeredInterceptor`` composes the layers for grpc.aio."""

    def applies_to(self, method: str) -> bool:
        return True

    def _overrides(self, hook: str) -> bool:
        return getattr(type(self), hook) is not getattr(BehaviorInterceptor, hook)

    def wrap(self, method: str, handler: Handler) -> Handler:
        # A layer that does nothing for a kind of call must not cost it a frame.
        if handler.unary_unary is not None and not self._overrides("unary"):
            return handler
        if handler.unary_unary is None and not self._overrides("stream"):
            return handler
        if handler.unary_unary is not None:
            inner_unary: Any = handler.unary_unary

            async def unary(request: Any, context: Context) -> Any:
                return await self.unary(method, request, context, inner_unary)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=self.deserializer(method, handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream: Any = handler.unary_stream

            # grpc.aio recognises streaming behaviours by being async generator functions.
            async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
                async for item in self.stream(method, request, context, inner_stream):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=self.deserializer(method, handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            inner_bidi: Any = handler.stream_stream

            async def bidi(requests: Any, context: Context) -> AsyncIterator[Any]:
                async for item in self.stream(method, requests, context, inner_bidi):
                    yield item

            return grpc.stream_stream_rpc_method_handler(
                bidi,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    def deserializer(
        self, method: str, inner: Callable[[bytes], Any] | None
    ) -> Callable[[bytes], Any] | None:
        return inner

    async def unary(
        self, method: str, request: Any, context: Context, behavior: UnaryBehavior
    ) -> Any:
        return await behavior(request, context)

    async def stream(
        self, method: str, request: Any, context: Context, behavior: StreamBehavior
    ) -> AsyncIterator[Any]:
        async for item in behavior(request, context):
            yield item


class LayeredInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Applies behaviour layers (outermost first) with a single interception per call.

    grpc.aio awaits every registered interceptor on every call, even when each
    returns a cached handler; composing the layers once per method here leaves
    one cached lookup per call.
    """

    def __init__(self, layers: Sequence[BehaviorInterceptor]) -> None:
        self._layers = tuple(layers)
        self._wrapped: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        for layer in reversed(self._layers):
            if layer.applies_to(method):
                handler = layer.wrap(method, handler)
        self._wrapped[method] = handler
        return handler
