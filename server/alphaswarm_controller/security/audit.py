"""One structured line per mutating call: who, what, where, outcome, how long.

Written to the ``alphaswarm.audit`` logger as JSON. Request bodies are never
logged, so neither are env or config values (secrets among them). JSON escapes
every control character, and each caller-chosen value is clipped, so a request
can neither forge a line nor make one huge.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import grpc

from alphaswarm_controller.interception import BehaviorInterceptor, Context, UnaryBehavior
from alphaswarm_controller.observability.logs import clip_for_log

from .auth import OPERATOR_METHODS, SERVICE_PREFIX, current_principal
from .scope import request_scope

audit_log = logging.getLogger("alphaswarm.audit")


class AuditInterceptor(BehaviorInterceptor):
    def __init__(self, default_provider: str) -> None:
        super().__init__()
        self._default_provider = default_provider

    def applies_to(self, method: str) -> bool:
        return method.startswith(SERVICE_PREFIX) and method.rsplit("/", 1)[-1] in OPERATOR_METHODS

    async def unary(
        self, method: str, request: Any, context: Context, behavior: UnaryBehavior
    ) -> Any:
        started = time.perf_counter()
        outcome = "UNKNOWN"
        try:
            response = await behavior(request, context)
            outcome = "OK"
            return response
        except grpc.aio.AbortError:
            outcome = context.code().name if context.code() else "ABORTED"
            raise
        finally:
            scope = request_scope(request, self._default_provider)
            audit_log.info(
                json.dumps(
                    {
                        "event": "audit",
                        "principal": current_principal.get().name,
                        "peer": context.peer(),
                        "rpc": method.rsplit("/", 1)[-1],
                        "provider": clip_for_log(scope.provider),
                        "namespace": clip_for_log(scope.namespace),
                        "service": clip_for_log(scope.service_id),
                        "outcome": outcome,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    },
                    separators=(",", ":"),
                )
            )
