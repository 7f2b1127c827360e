"""A provider that fails on demand the way real backends do: blocking hangs, dying streams."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncGenerator

from alphaswarm_core.providers.concurrency import remaining_timeout
from alphaswarm_core.providers.errors import BackendUnavailableError
from alphaswarm_core.providers.models import DEFAULT_NAMESPACE, DeploymentStatus, MetricSample
from tests.fakes.memory_provider import MemoryProvider


class FaultProvider(MemoryProvider):
    provider_kind = "faulty"
    provider_alias = "faulty"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.blocking_hang_seconds = 0.0
        self.stream_fail_after: int | None = None
        self.active_blocking_calls = 0
        self._lock = threading.Lock()

    def _blocking_backend_call(self) -> None:
        """Like an SDK call given ``timeout=remaining_timeout()``: it gives up at the deadline."""
        with self._lock:
            self.active_blocking_calls += 1
        try:
            time.sleep(min(self.blocking_hang_seconds, remaining_timeout()))
        finally:
            with self._lock:
                self.active_blocking_calls -= 1

    async def status(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        if self.blocking_hang_seconds:
            await self.run_blocking(self._blocking_backend_call)
        return await super().status(service_id, namespace=namespace)

    async def stream_metrics(
        self,
        service_id: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        interval_seconds: float = 10.0,
    ) -> AsyncGenerator[MetricSample, None]:
        sent = 0
        # aclosing: the failure closes the backend's stream before it propagates, not later
        # in a task the event loop's finalizer hook schedules (a test counts open streams).
        async with contextlib.aclosing(
            super().stream_metrics(
                service_id, namespace=namespace, interval_seconds=interval_seconds
            )
        ) as samples:
            async for sample in samples:
                if self.stream_fail_after is not None and sent >= self.stream_fail_after:
                    raise BackendUnavailableError(
                        "metrics backend went away", retry_after_seconds=3
                    )
                sent += 1
                yield sample
