"""One structured line per mutating call: who, what, where, outcome, how long.

Written to the ``alphaswarm.audit`` logger as JSON. Request bodies are never
logged, so neither are env or config values (secrets among them); the provider,
namespace and service come from the call context, where they were validated, and
JSON escapes every control character, so a request cannot forge a line.

A mutating call, once accepted, runs to its end even when its caller goes away
(cancels, or its deadline passes): stopping a change half-way would leave the
backend in a state nobody asked for. The server's call budget
(ALPHASWARM_CP_CALL_TIMEOUT_SECONDS) still bounds it. The audit line records the
final outcome, and ``caller_gone`` when the caller did not wait for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import grpc

from alphaswarm_controller.errors import as_provider_error
from alphaswarm_controller.layers import Context, Layer, UnaryNext
from alphaswarm_controller.methods import MethodInfo
from alphaswarm_core.call import CallContext

audit_log = logging.getLogger("alphaswarm.audit")


def outcome_of(error: BaseException | None, context: Context) -> str:
    """The status code name a call ended with."""
    if error is None:
        return "OK"
    if isinstance(error, grpc.aio.AbortError):
        code = context.code()
        return code.name if isinstance(code, grpc.StatusCode) else "ABORTED"
    if isinstance(error, asyncio.CancelledError):
        return "CANCELLED"
    return as_provider_error(error).code


class Audit(Layer):
    def __init__(self) -> None:
        self._running: set[asyncio.Task[Any]] = set()

    def bind(self, method: MethodInfo) -> Layer | None:
        return self if method.ours and method.mutating else None

    async def unary(
        self, call: CallContext, request: Any, context: Context, proceed: UnaryNext
    ) -> Any:
        work = asyncio.ensure_future(self._audited(call, request, context, proceed))
        self._running.add(work)
        work.add_done_callback(self._running.discard)
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            if not work.done():
                call.caller_gone = True  # the work goes on; its audit line follows
            raise

    async def _audited(
        self, call: CallContext, request: Any, context: Context, proceed: UnaryNext
    ) -> Any:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return await proceed(call, request, context)
        except BaseException as raised:
            error = raised
            raise
        finally:
            line = {
                "event": "audit",
                "principal": call.caller.name,
                "peer": call.peer,
                "rpc": call.method,
                "provider": call.alias,
                "namespace": call.namespace,
                "service": call.service_id,
                "outcome": outcome_of(error, context),
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            }
            if call.caller_gone:
                line["caller_gone"] = True
            audit_log.info(json.dumps(line, separators=(",", ":")))

    async def drain(self, seconds: float) -> None:
        """Wait (up to ``seconds``) for changes whose callers left; shutdown calls it."""
        if self._running:
            await asyncio.wait(set(self._running), timeout=max(seconds, 0.0))
