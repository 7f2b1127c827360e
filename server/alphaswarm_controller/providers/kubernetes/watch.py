"""One Kubernetes watch connection, read on its own thread, consumed as async events.

A watch is a long poll: its read blocks until the server has an event. Running
that on the shared bounded executor would let a handful of WatchDeployment
callers occupy every slot, so each connection gets its own daemon thread, and
closing the iterator shuts the socket down so that thread ends at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from .transport import JsonObj

_END = object()


class WatchStream:
    """Events (``{"type": ..., "object": ...}``) of one watch request."""

    def __init__(self, open_stream: Callable[[], tuple[Any, Iterator[str]]]) -> None:
        self._open = open_stream
        self._response: Any = None
        self._closed = threading.Event()

    def _reader(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[object]) -> None:
        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone; nobody is listening any more
                self._closed.set()

        try:
            response, lines = self._open()
            self._response = response
            if self._closed.is_set():
                self._shutdown()
                return
            for line in lines:
                if self._closed.is_set():
                    break
                if line.strip():
                    put(json.loads(line))
            put(_END)
        except BaseException as exc:  # handed to the consumer, which decides
            put(exc)
        finally:
            self._release()

    async def events(self) -> AsyncIterator[JsonObj]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        thread = threading.Thread(
            target=self._reader, args=(loop, queue), name="alphaswarm-k8s-watch", daemon=True
        )
        thread.start()
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, dict)
                yield item
        finally:
            self._closed.set()
            self._shutdown()

    def _shutdown(self) -> None:
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # the socket may already be gone
                response.shutdown()

    def _release(self) -> None:
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # best effort on a dead connection
                response.close()  # a watch connection is never reused
