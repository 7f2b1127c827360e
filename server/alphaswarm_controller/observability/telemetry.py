"""RPC metrics and the RPC's server span, per method, when either is configured.

It sits just inside call set-up, so that everything inside (error mapping, audit,
authentication, limits, the servicer, providers) runs with the span current, and
so that it sees the final status code of every call, including the ones that
authentication and limits reject. The metric label values of a method are bound
once, when the layer is bound to it, not looked up per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from alphaswarm_controller.layers import Context, Layer, StreamNext, UnaryNext
from alphaswarm_controller.methods import Kind, MethodInfo
from alphaswarm_core.call import CallContext

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


class Telemetry(Layer):
    """Metrics, tracing and the access log (``alphaswarm.access`` at DEBUG) of every method;
    absent (no frame at all) when all three are off when the method is first called."""

    def __init__(self, metrics: RpcMetrics | None = None, tracing: Tracing | None = None) -> None:
        self._metrics = metrics
        self._tracing = tracing

    def bind(self, method: MethodInfo) -> Layer | None:
        if (
            self._metrics is None
            and self._tracing is None
            and not access_log.isEnabledFor(logging.DEBUG)
        ):
            return None
        return _MethodTelemetry(method, self._metrics, self._tracing)


class _MethodTelemetry(Layer):
    def __init__(self, method: MethodInfo, metrics: RpcMetrics | None, tracing: Tracing | None):
        self._path = method.path
        self._tracing = tracing
        kind = str(method.kind)
        self._metrics = metrics
        if metrics is not None:
            labels = (method.service, method.name, kind)
            self._started = metrics.started.labels(*labels)
            self._handled = {
                code: metrics.handled.labels(*labels, metrics.code_label(code))
                for code in grpc.StatusCode
            }
            self._received = metrics.msg_received.labels(*labels)
            self._seconds = metrics.handling_seconds.labels(*labels)
            self._sent = metrics.msg_sent.labels(*labels)
            self._open = (
                metrics.open_streams.labels(method.service, method.name)
                if method.kind is Kind.SERVER_STREAM
                else None
            )

    def _begin(self, call: CallContext, context: Context) -> tuple[float, Any, object]:
        if self._metrics is not None:
            self._started.inc()
            self._received.inc()
            if self._open is not None:
                self._open.inc()
        span = token = None
        if self._tracing is not None:
            span, token = self._tracing.start_rpc(
                self._path, context.invocation_metadata(), call.peer
            )
        return time.perf_counter(), span, token

    def _finish(
        self,
        call: CallContext,
        begun: tuple[float, Any, object],
        code: grpc.StatusCode,
        unary_ok: bool,
    ) -> None:
        started, span, token = begun
        elapsed = time.perf_counter() - started
        if self._metrics is not None:
            self._handled[code].inc()
            self._seconds.observe(elapsed)
            if unary_ok:
                self._sent.inc()
            if self._open is not None:
                self._open.dec()
        if self._tracing is not None and span is not None:
            self._tracing.end_rpc(span, token, code.name, call.alias, call.request_id)
        access_log.debug("%s %s %.1f ms", self._path, code.name, elapsed * 1000)

    async def unary(
        self, call: CallContext, request: Any, context: Context, proceed: UnaryNext
    ) -> Any:
        begun = self._begin(call, context)
        try:
            response = await proceed(call, request, context)
        except BaseException as error:
            self._finish(call, begun, status_of(context, error), False)
            raise
        code = status_of(context, None)
        self._finish(call, begun, code, code is grpc.StatusCode.OK)
        return response

    async def stream(
        self, call: CallContext, request: Any, context: Context, proceed: StreamNext
    ) -> AsyncIterator[Any]:
        begun = self._begin(call, context)
        error: BaseException | None = None
        try:
            async for item in proceed(call, request, context):
                if self._metrics is not None:
                    self._sent.inc()  # live, so that a scrape sees a long stream's progress
                yield item
        except BaseException as raised:
            error = raised
            raise
        finally:
            with contextlib.suppress(Exception):
                self._finish(call, begun, status_of(context, error), False)
