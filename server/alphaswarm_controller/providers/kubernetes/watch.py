"""One long-lived HTTP response (a watch, a followed pod log), read on its own thread.

A watch or a followed log is a long poll: its read blocks until the server has
more. Running that on the shared bounded executor would let a handful of
streaming callers occupy every slot, so each response gets its own daemon
thread, and closing the consumer shuts the socket down so that thread ends at
once. Lines are split here with a bound on their length (a server cannot make
the controller buffer an endless line); with ``maxsize`` the hand-over queue is
bounded too, so a slow consumer slows the read instead of filling memory
(backpressure down to TCP).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Generic, TypeVar

from .transport import JsonObj

T = TypeVar("T")
_END = object()
CHUNK = 64 * 1024
#: A watch event is one object; the API server's request limit is 3 MiB.
MAX_EVENT_BYTES = 8 * 1024 * 1024


class LineTooLong(ValueError):
    """A line longer than the stream allows."""


def split_lines(chunks: Iterator[bytes], limit: int, *, cut: bool) -> Iterator[bytes]:
    """Lines (without the newline) of a byte stream. A line longer than ``limit`` is cut to
    ``limit + 1`` bytes (the rest dropped up to its newline) when ``cut``, else an error."""
    buffer = bytearray()
    skipping = False  # the rest of a line that was cut
    for chunk in chunks:
        pos = 0
        while True:
            end = chunk.find(b"\n", pos)
            piece = chunk[pos:] if end < 0 else chunk[pos:end]
            if not skipping:
                buffer += piece
                if len(buffer) > limit:
                    if not cut:
                        raise LineTooLong(f"a line longer than {limit} bytes")
                    del buffer[limit + 1 :]
                    yield bytes(buffer)
                    buffer.clear()
                    skipping = True
            if end < 0:
                break
            if skipping:
                skipping = False
            else:
                yield bytes(buffer)
                buffer.clear()
            pos = end + 1
    if buffer:
        yield bytes(buffer)


class ResponseStream(Generic[T]):
    """Items parsed from the lines of one streaming response, consumed as async items.

    ``open_response()`` (blocking, on the thread) sends the request and returns
    the urllib3 response; ``parse(line)`` turns a line into an item (None skips it).
    """

    def __init__(
        self,
        open_response: Callable[[], Any],
        parse: Callable[[bytes], T | None],
        *,
        max_line: int,
        cut_long_lines: bool = False,
        maxsize: int = 0,
    ) -> None:
        self._open = open_response
        self._parse = parse
        self._max_line = max_line
        self._cut = cut_long_lines
        self._maxsize = maxsize
        self._response: Any = None
        self._closed = threading.Event()

    def _reader(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[object]) -> None:
        def put(item: object) -> bool:
            """Hand ``item`` over, waiting for room; False once nobody is listening."""
            if self._closed.is_set():
                return False
            try:
                future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            except RuntimeError:  # the loop is gone
                self._closed.set()
                return False
            while not self._closed.is_set():
                with contextlib.suppress(TimeoutError):
                    future.result(timeout=0.5)
                    return True
            future.cancel()
            return False

        try:
            response = self._open()
            self._response = response
            if self._closed.is_set():
                self._shutdown()
                return
            chunks = response.stream(CHUNK, decode_content=True)
            for line in split_lines(chunks, self._max_line, cut=self._cut):
                if self._closed.is_set():
                    break
                if not line.strip():
                    continue
                item = self._parse(line)
                if item is not None and not put(item):
                    break
            put(_END)
        except BaseException as exc:  # handed to the consumer, which decides
            put(exc)
        finally:
            self._release()

    async def items(self) -> AsyncIterator[T]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue(self._maxsize)
        thread = threading.Thread(
            target=self._reader, args=(loop, queue), name="alphaswarm-k8s-stream", daemon=True
        )
        thread.start()
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
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
                response.close()  # a streaming connection is never reused


def _event(line: bytes) -> JsonObj:
    event = json.loads(line)
    if not isinstance(event, dict):
        raise ValueError("a watch event is an object")
    return event


class WatchStream(ResponseStream[JsonObj]):
    """Events (``{"type": ..., "object": ...}``) of one watch request."""

    def __init__(self, open_response: Callable[[], Any]) -> None:
        super().__init__(open_response, _event, max_line=MAX_EVENT_BYTES)

    def events(self) -> AsyncIterator[JsonObj]:
        return self.items()
