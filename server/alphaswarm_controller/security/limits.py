"""Transport limits and the caps on open streams.

Every open stream counts, whatever its service: ProviderService streams, and the
standard services' ones (grpc.health.v1 Watch, reflection), which need no token.
Three caps, each refused with RESOURCE_EXHAUSTED (reason ``STREAM_LIMIT``, the
cap in ErrorInfo metadata ``scope`` and ``limit``) so that a client can tell a
full server from a broken one:

- ``server``: ``ALPHASWARM_CP_MAX_STREAMS`` streams in all;
- ``connection``: ``ALPHASWARM_CP_MAX_STREAMS_PER_CONNECTION`` on one connection;
- ``standard_services``: health watches and reflection streams together hold at
  most a tenth of the server's streams, so that callers without a token cannot
  take every stream from those with one.

The transport must never be what refuses, since it refuses without a reason:

- HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS: streams beyond it are reset
  (REFUSED_STREAM, which clients report as UNAVAILABLE) or queued by the client
  until their deadline. So the per-connection cap is enforced here, and the
  setting stays only as a backstop (unary calls count there too) at
  ``TRANSPORT_STREAMS_FACTOR`` times the cap.
- grpc core's backlog of calls not yet picked up by the event loop: past its
  soft limit core cancels new calls at random (CANCELLED). Its defaults (1000,
  hard 3000) did that to 8-30 % of a burst of 2000 streams; the backlog now
  holds a connection's whole burst on top of every stream the caps allow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from alphaswarm_controller.errors import STATUS_DETAILS_KEY, to_status
from alphaswarm_controller.layers import Context, Layer, StreamNext
from alphaswarm_controller.methods import Kind, MethodInfo
from alphaswarm_controller.settings import ServerSettings
from alphaswarm_core.call import CallContext
from alphaswarm_core.providers.errors import InfrastructureProviderError
from alphaswarm_core.providers.reasons import ErrorReason

TRANSPORT_STREAMS_FACTOR = 10
STANDARD_SERVICES_SHARE = 10
"""Health watches and reflection streams hold at most 1/10 of ``ALPHASWARM_CP_MAX_STREAMS``."""


class StreamLimitExceeded(InfrastructureProviderError):
    reason = ErrorReason.STREAM_LIMIT


def server_options(settings: ServerSettings) -> list[tuple[str, int]]:
    transport_streams = settings.max_streams_per_connection * TRANSPORT_STREAMS_FACTOR
    pending_calls = transport_streams + settings.max_streams
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_concurrent_streams", transport_streams),
        ("grpc.server.max_pending_requests", pending_calls),
        ("grpc.server.max_pending_requests_hard_limit", pending_calls * 2),
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
    """RESOURCE_EXHAUSTED for a stream beyond any of the caps (see the module)."""

    def __init__(self, limit: int, per_connection: int | None = None) -> None:
        self.limit = limit
        self.per_connection = per_connection
        self.standard_limit = max(1, limit // STANDARD_SERVICES_SHARE)
        self.open = 0
        self.open_standard = 0
        self._by_peer: dict[str, int] = {}

    def bind(self, method: MethodInfo) -> Layer | None:
        if method.kind not in (Kind.SERVER_STREAM, Kind.BIDI_STREAM):
            return None
        return self if method.ours else _StandardStreamLimit(self)

    def _refusal(self, standard: bool, peer: str) -> StreamLimitExceeded | None:
        if self.open >= self.limit:
            return _exceeded(
                "server",
                self.limit,
                f"the server already serves {self.open} streams (limit {self.limit}); retry later",
            )
        held = self._by_peer.get(peer, 0)
        if self.per_connection is not None and held >= self.per_connection:
            return _exceeded(
                "connection",
                self.per_connection,
                f"this connection already holds {held} streams (limit {self.per_connection}); "
                "close some, open another connection, or retry later",
            )
        if standard and self.open_standard >= self.standard_limit:
            return _exceeded(
                "standard_services",
                self.standard_limit,
                f"{self.open_standard} health and reflection streams are open "
                f"(limit {self.standard_limit}); retry later",
            )
        return None

    async def counted(
        self,
        call: CallContext,
        request: Any,
        context: Context,
        proceed: StreamNext,
        *,
        standard: bool,
    ) -> AsyncIterator[Any]:
        refusal = self._refusal(standard, call.peer)
        if refusal is not None:
            if not standard:
                raise refusal  # the error mapping outside turns it into the status
            # The standard services have no error mapping of ours: abort with the details.
            code, status = to_status(refusal)
            await context.abort(
                code,
                status.message,
                trailing_metadata=((STATUS_DETAILS_KEY, status.SerializeToString()),),
            )
        self.open += 1
        self.open_standard += standard
        self._by_peer[call.peer] = self._by_peer.get(call.peer, 0) + 1
        try:
            async for item in proceed(call, request, context):
                yield item
        finally:
            self.open -= 1
            self.open_standard -= standard
            left = self._by_peer[call.peer] - 1
            if left:
                self._by_peer[call.peer] = left
            else:
                del self._by_peer[call.peer]

    def stream(
        self, call: CallContext, request: Any, context: Context, proceed: StreamNext
    ) -> AsyncIterator[Any]:
        # The counted stream itself, not a generator around it: one frame less per stream.
        return self.counted(call, request, context, proceed, standard=False)


class _StandardStreamLimit(Layer):
    """The same counts, for health watches and reflection (bound to those methods)."""

    def __init__(self, limits: StreamLimit) -> None:
        self._limits = limits

    async def stream(
        self, call: CallContext, request: Any, context: Context, proceed: StreamNext
    ) -> AsyncIterator[Any]:
        async for item in self._limits.counted(call, request, context, proceed, standard=True):
            yield item


def _exceeded(scope: str, limit: int, message: str) -> StreamLimitExceeded:
    return StreamLimitExceeded(message, metadata={"scope": scope, "limit": str(limit)})
