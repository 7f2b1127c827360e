"""The server's own bound on each unary call: ALPHASWARM_CP_CALL_TIMEOUT_SECONDS.

``CallSetup`` computed the call's deadline (the caller's, capped by the budget; for
a mutating call, the budget alone, since its work outlives an impatient caller).
Backend calls read it through ``remaining_timeout()``; this layer makes sure the
call ends by then whatever a provider does, as BACKEND_TIMEOUT.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alphaswarm_core.call import CallContext

from .layers import Context, Layer, UnaryNext
from .methods import Kind, MethodInfo


class CallBudget(Layer):
    def bind(self, method: MethodInfo) -> Layer | None:
        return self if method.ours and method.kind is Kind.UNARY else None

    async def unary(
        self, call: CallContext, request: Any, context: Context, proceed: UnaryNext
    ) -> Any:
        # The loop's clock is time.monotonic, the clock of call.deadline.
        async with asyncio.timeout_at(call.deadline):
            return await proceed(call, request, context)
