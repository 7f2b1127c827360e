"""Bounded retries: transient ARM answers in the SDK pipeline, 409s of a changing group here.

Every ARM request goes through azure-core's ``RetryPolicy``, which retries
connection errors, 408, 429 and 5xx (POST and PATCH only on 500/503/504, which
ARM did not act on) with exponential backoff and honours ``Retry-After``.
``DeadlineRetryPolicy`` bounds it: a few attempts, never a wait longer than
``MAX_RETRY_WAIT`` nor past the caller's deadline. When ARM asks for a longer
wait the answer goes back to the caller at once as UNAVAILABLE carrying that
``Retry-After``, so a gRPC client decides instead of a worker thread sleeping.

ACI refuses stop, start and tag updates with 409 Conflict while a container
group is still changing (provisioning, starting, being deleted);
``retry_conflicts`` retries those (and a delete answered 409) with capped
exponential backoff and jitter within the deadline, then reports the conflict
clearly (ABORTED).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy

from alphaswarm_core.providers.concurrency import remaining_timeout
from alphaswarm_core.providers.protocol import BackendConflictError

T = TypeVar("T")

MAX_RETRY_WAIT = 5.0
"""Longest Retry-After (seconds) the provider waits out itself."""
RETRY_TOTAL = 3
"""Retries of one request (connection, read and status errors alike) after its first try."""
CONFLICT_ATTEMPTS = 6
CONFLICT_FIRST_DELAY = 0.25
CONFLICT_MAX_DELAY = 4.0


class DeadlineRetryPolicy(RetryPolicy[Any, Any]):
    """azure-core's retry policy, bounded in attempts, in each wait and by the deadline."""

    def __init__(self, *, max_wait: float = MAX_RETRY_WAIT, **kwargs: Any) -> None:
        for key in ("retry_total", "retry_connect", "retry_read", "retry_status"):
            kwargs.setdefault(key, RETRY_TOTAL)
        kwargs.setdefault("retry_backoff_factor", 0.4)
        kwargs.setdefault("retry_backoff_max", max_wait)
        super().__init__(**kwargs)
        self.max_wait = max_wait

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
        if not super().is_retry(settings, response):
            return False
        wait = self.get_retry_after(response)
        if wait is None:
            wait = self.get_backoff_time(settings)
        # remaining_timeout() reads the caller's deadline (the context is copied into the
        # worker thread that runs the SDK call); without one it is the 30 s backend cap.
        return wait <= min(self.max_wait, remaining_timeout())


async def retry_conflicts(call: Callable[[], Awaitable[T]], what: str) -> T:
    """``call()``, again after a 409 while attempts and the deadline last."""
    deadline = time.monotonic() + remaining_timeout()
    delay = CONFLICT_FIRST_DELAY
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            return await call()
        except BackendConflictError as error:
            pause = random.uniform(delay / 2, delay)  # jitter, not a secret
            if attempt == CONFLICT_ATTEMPTS or time.monotonic() + pause >= deadline:
                raise BackendConflictError(
                    f"cannot {what} yet: Azure refused it {attempt} times because the "
                    f"container group is still changing (provisioning, starting or being "
                    f"deleted); retry in a few seconds ({error.message})",
                    metadata={**error.metadata, "attempts": str(attempt)},
                ) from error
            await asyncio.sleep(pause)
            delay = min(delay * 2, CONFLICT_MAX_DELAY)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
