"""Server-side streaming helpers: end streams cleanly when the server shuts down."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TypeVar

from .errors import ServerShuttingDown
from .layers import Context

T = TypeVar("T")


class ShutdownSignal:
    """Set once when the server begins to stop; every open stream watches it."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


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
    stopping = asyncio.ensure_future(shutdown.wait())
    pending: asyncio.Future[T] | None = None
    closing: list[asyncio.Task[None]] = []  # holds the close task until it ran

    def on_call_done(_: Context) -> None:
        if pending is None or pending.done():
            closing.append(asyncio.ensure_future(_close(source)))

    if context is not None:
        context.add_done_callback(on_call_done)  # type: ignore[arg-type]  # grpc-stubs: DoneCallback of a client call
    try:
        while True:
            pending = asyncio.ensure_future(anext(source))
            await asyncio.wait({pending, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not pending.done():
                raise ServerShuttingDown()
            try:
                value = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield value
    finally:
        stopping.cancel()
        if pending is not None and not pending.done():
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
        await _close(source)
