"""Server-side streaming helpers: end streams cleanly when the server shuts down."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, TypeVar

from .errors import ServerShuttingDown
from .layers import Context

T = TypeVar("T")

#: Close tasks started by a call's done-callback, held until they ran.
_closing: set[asyncio.Task[None]] = set()


class ShutdownSignal:
    """Set once when the server begins to stop; ends every open stream.

    A stream waiting on its source is interrupted by cancelling the call's own task
    (grpc.aio runs each call in one), not by a watcher task and a wait per stream:
    thousands of idle streams then cost no task, future or callback of their own.
    """

    def __init__(self) -> None:
        self._set = False
        self._reading: set[asyncio.Task[Any]] = set()
        self._interrupted: set[asyncio.Task[Any]] = set()

    def set(self) -> None:
        self._set = True
        for task in self._reading:
            self._interrupted.add(task)
            task.cancel()

    def is_set(self) -> bool:
        return self._set

    def reading(self, task: asyncio.Task[Any]) -> bool:
        return task in self._reading

    def begin_read(self, task: asyncio.Task[Any]) -> None:
        self._reading.add(task)

    def end_read(self, task: asyncio.Task[Any]) -> bool:
        """Whether the read was interrupted by this signal (then the cancellation is
        taken back: the call goes on to end with ServerShuttingDown)."""
        self._reading.discard(task)
        if task not in self._interrupted:
            return False
        self._interrupted.discard(task)
        task.uncancel()
        return True


async def _close(source: AsyncGenerator[T, None]) -> None:
    with contextlib.suppress(RuntimeError):  # being iterated: its owner closes it
        await source.aclose()


async def until_shutdown(
    source: AsyncGenerator[T, None], shutdown: ShutdownSignal, context: Context | None = None
) -> AsyncIterator[T]:
    """Yield from ``source`` until it ends, the call ends or the server shuts down.

    On shutdown the stream ends with UNAVAILABLE (ServerShuttingDown) so clients
    know to reconnect; either way ``source`` is closed, releasing its backend
    resources (pollers, watches, stats streams). grpc does not close a handler's
    generator when the caller cancels while a message is being sent: the
    generator would linger until garbage collection, holding the backend stream.
    So the call's done-callback closes ``source`` too, unless a read is under
    way (then the cancellation reaches this generator and its ``finally``).
    """
    task = asyncio.current_task()
    assert task is not None, "a stream runs in its call's task"

    def on_call_done(_: Context) -> None:
        if not shutdown.reading(task):
            closing = asyncio.ensure_future(_close(source))
            _closing.add(closing)
            closing.add_done_callback(_closing.discard)

    if context is not None:
        context.add_done_callback(on_call_done)  # type: ignore[arg-type]  # grpc-stubs: DoneCallback of a client call
    try:
        while True:
            if shutdown.is_set():
                raise ServerShuttingDown()
            shutdown.begin_read(task)
            try:
                value = await anext(source)
            except BaseException as error:
                interrupted = shutdown.end_read(task)
                if isinstance(error, StopAsyncIteration):
                    return
                if interrupted:
                    raise ServerShuttingDown() from None
                raise
            shutdown.end_read(task)
            yield value
    finally:
        await _close(source)
