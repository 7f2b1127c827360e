"""Transport limits and the server-wide cap on open streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from alphaswarm_controller.layers import Context, Layer, StreamNext
from alphaswarm_controller.methods import Kind, MethodInfo
from alphaswarm_controller.settings import ServerSettings
from alphaswarm_core.call import CallContext
from alphaswarm_core.providers.errors import InfrastructureProviderError
from alphaswarm_core.providers.reasons import ErrorReason


class StreamLimitExceeded(InfrastructureProviderError):
    reason = ErrorReason.STREAM_LIMIT


def server_options(settings: ServerSettings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        # Keepalive enforcement: answer pings, but close connections that ping
        # more often than every 10 s without calls (a misbehaving client).
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
        # gRPC sets SO_REUSEPORT by default: a second server on a served port would
        # bind too and silently take half the connections. Refuse to share instead.
        ("grpc.so_reuseport", 0),
    ]


class StreamLimit(Layer):
    """RESOURCE_EXHAUSTED for a ProviderService stream beyond ``limit`` open ones."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def bind(self, method: MethodInfo) -> Layer | None:
        return self if method.ours and method.kind is Kind.SERVER_STREAM else None

    async def stream(
        self, call: CallContext, request: Any, context: Context, proceed: StreamNext
    ) -> AsyncIterator[Any]:
        if self.open >= self.limit:
            raise StreamLimitExceeded(
                f"the server already serves {self.open} streams (limit {self.limit}); retry later",
                metadata={"limit": str(self.limit)},
            )
        self.open += 1
        try:
            async for item in proceed(call, request, context):
                yield item
        finally:
            self.open -= 1
