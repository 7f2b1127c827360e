"""The outermost server layer: request id, RPC metrics and the RPC's server span.

It is first in the chain so that everything inside (audit, error mapping, auth,
limits, the servicer, providers) runs with the request id and the span already
set, and so that it sees the final status code of every call, including the
ones that auth and limits reject.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from alphaswarm_controller.errors import current_provider
from alphaswarm_controller.interception import (
    BehaviorInterceptor,
    Context,
    StreamBehavior,
    UnaryBehavior,
)

from .logs import REQUEST_ID_KEY, accept_request_id, current_request_id

if TYPE_CHECKING:
    from .metrics import RpcMetrics
    from .tracing import Tracing

access_log = logging.getLogger("alphaswarm.access")


def status_of(context: Context, error: BaseException | None) -> grpc.StatusCode:
    """The status of a call that returned (``error`` None) or raised: the code the
    handler set or aborted with; CANCELLED when the caller went away first."""
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        return next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    # No code set: success, or an exception escaping a handler (grpc answers UNKNOWN).
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN


class _Call:
    """Per-call state: started at the first line of the call, finished once."""

    __slots__ = ("labels", "method", "request_id", "span", "started", "token")

    def __init__(self, method: str, request_id: str, labels: tuple[str, str, str]) -> None:
        self.method = method
        self.request_id = request_id
        self.labels = labels
        self.started = time.perf_counter()
        self.span: Any = None
        self.token: object = None


class ObservabilityInterceptor(BehaviorInterceptor):
    """Request id always; metrics and tracing when they are configured."""

    def __init__(self, metrics: RpcMetrics | None = None, tracing: Tracing | None = None) -> None:
        super().__init__()
        self._metrics = metrics
        self._tracing = tracing

    def _begin(self, method: str, context: Context, kind: str) -> _Call:
        metadata = context.invocation_metadata() or ()
        sent = next((value for key, value in metadata if key == REQUEST_ID_KEY), None)
        request_id = accept_request_id(sent)
        current_request_id.set(request_id)
        service, _, name = method.lstrip("/").partition("/")
        call = _Call(method, request_id, (service, name, kind))
        if self._metrics is not None:
            self._metrics.started.labels(*call.labels).inc()
            if kind == "server_stream":
                self._metrics.open_streams.labels(service, name).inc()
        if self._tracing is not None:
            call.span, call.token = self._tracing.start_rpc(method, metadata, context.peer())
        return call

    @staticmethod
    def _set_request_id(call: _Call, context: Context) -> None:
        """Every call returns its id in the trailers (stored now, sent with the status:
        no extra write). The error mapping keeps it when it aborts."""
        context.set_trailing_metadata(((REQUEST_ID_KEY, call.request_id),))

    @staticmethod
    async def _send_request_id(call: _Call, context: Context) -> None:
        """A stream also sends it in its headers at once: it may run for hours."""
        await context.send_initial_metadata(((REQUEST_ID_KEY, call.request_id),))

    def _finish(self, call: _Call, code: grpc.StatusCode, sent: int) -> None:
        """Count, observe and end the span; ``sent`` = responses not yet counted."""
        elapsed = time.perf_counter() - call.started
        if self._metrics is not None:
            metrics = self._metrics
            metrics.handled.labels(*call.labels, code.name).inc()
            metrics.handling_seconds.labels(*call.labels).observe(elapsed)
            if sent:
                metrics.msg_sent.labels(*call.labels).inc(sent)
            if call.labels[2] == "server_stream":
                metrics.open_streams.labels(call.labels[0], call.labels[1]).dec()
        if self._tracing is not None and call.span is not None:
            self._tracing.end_rpc(
                call.span, call.token, code.name, current_provider.get(), call.request_id
            )
        access_log.debug("%s %s %.1f ms", call.method, code.name, elapsed * 1000)

    async def unary(
        self, method: str, request: Any, context: Context, behavior: UnaryBehavior
    ) -> Any:
        call = self._begin(method, context, "unary")
        try:
            self._set_request_id(call, context)
            response = await behavior(request, context)
        except BaseException as error:
            self._finish(call, status_of(context, error), 0)
            raise
        code = status_of(context, None)
        self._finish(call, code, 1 if code is grpc.StatusCode.OK else 0)
        return response

    async def stream(
        self, method: str, request: Any, context: Context, behavior: StreamBehavior
    ) -> AsyncIterator[Any]:
        # The request of a bidi call (reflection) is an iterator; both count as streams here.
        kind = "bidi_stream" if _is_iterator(request) else "server_stream"
        call = self._begin(method, context, kind)
        sent = self._metrics.msg_sent.labels(*call.labels) if self._metrics else None
        error: BaseException | None = None
        try:
            self._set_request_id(call, context)
            await self._send_request_id(call, context)
            produced: Any = behavior(request, context)
            if not hasattr(produced, "__aiter__"):
                # A streaming handler may also be a coroutine that writes with
                # context.write (grpc.health.v1 Watch does): let it run as it is.
                await produced
                return
            async for item in produced:
                if sent is not None:
                    sent.inc()  # live, so that a scrape sees a long stream's progress
                yield item
        except BaseException as raised:
            error = raised
            raise
        finally:
            with contextlib.suppress(Exception):
                self._finish(call, status_of(context, error), 0)


def _is_iterator(request: Any) -> bool:
    return hasattr(request, "__aiter__") or hasattr(request, "__next__")
