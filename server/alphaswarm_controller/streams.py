"""Server-side streaming helpers: end streams cleanly when the server shuts down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TypeVar

from .errors import ServerShuttingDown

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


async def until_shutdown(source: AsyncIterator[T], shutdown: ShutdownSignal) -> AsyncIterator[T]:
    """Yield from ``source`` until it ends or the server shuts down.

    On shutdown the stream ends with UNAVAILABLE (ServerShuttingDown) so clients
    know to reconnect; either way ``source`` is closed, releasing its backend
    resources (pollers, watches, stats streams).
    """
    stopping = asyncio.ensure_future(shutdown.wait())
    pending: asyncio.Future[T] | None = None
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
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()
