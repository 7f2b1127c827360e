"""Running blocking SDK calls off the event loop, bounded, within the caller's deadline.

Most backend SDKs (docker, kubernetes, boto3, azure-mgmt) are synchronous. A
provider wraps each call in ``run_blocking`` so the event loop never blocks, and
so at most ``ALPHASWARM_CP_MAX_BLOCKING_CALLS`` threads are busy with backend
I/O at once however many RPCs arrive. The gRPC layers publish the call's
deadline in ``alphaswarm_core.call.current_call``; providers pass
``remaining_timeout()`` to SDK timeouts so an expired call also frees its thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from alphaswarm_core.call import current_call

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_BACKEND_TIMEOUT = 30.0


def remaining_timeout(default: float = DEFAULT_BACKEND_TIMEOUT) -> float:
    """Seconds a backend call may take: the caller's remaining deadline, capped by ``default``."""
    call = current_call.get()
    deadline = None if call is None else call.deadline
    if deadline is None:
        return default
    return max(0.001, min(default, deadline - time.monotonic()))


class BlockingRunner:
    """A bounded thread pool shared by every provider of one process."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="alphaswarm-backend")

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        call = functools.partial(context.run, fn, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


_shared: BlockingRunner | None = None


def shared_runner() -> BlockingRunner:
    """The process-wide runner, sized by ``ALPHASWARM_CP_MAX_BLOCKING_CALLS`` (default 16)."""
    global _shared
    if _shared is None:
        _shared = BlockingRunner(int(os.environ.get("ALPHASWARM_CP_MAX_BLOCKING_CALLS", "16")))
    return _shared
