"""StreamLogs of the local provider: a service's retained lines, then the new ones.

For each replica slot (logfiles.py) the start of its last ``tail`` wanted lines is
found by reading its files backwards, off the event loop; the slots are then read
forwards from there and merged by time, up to where their files ended when the
call began. With ``follow`` every slot is then read on from that point by a task
of its own as lines are appended (woken by the writer, and at least every
FOLLOW_POLL seconds), and slots that appear later (scale-up) from their first
line. Nothing is sent twice and nothing is skipped across a rotation: a cursor
follows its slot by generation, and a file it holds open stays readable after it
was rotated away. A reader so far behind that a file it had not opened yet was
dropped gets one marker entry saying so, then goes on with the oldest file left.

Memory is bounded by one chunk per slot and a short queue: a slow caller slows
the reading down, and the files are the buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any, TypeVar

from alphaswarm_core.providers.models import MAX_LOG_LINE_BYTES, LogEntry, LogQuery, LogStreamKind

from .logfiles import STDOUT, LogBook, Position, Record, ReplicaLog, Snapshot, parse, stamp

T = TypeVar("T")
Runner = Callable[..., Awaitable[Any]]

READ_BYTES = 64 * 1024
FOLLOW_POLL = 1.0
"""A follower looks at its files at least this often, even when nobody wakes it."""
QUEUE_BATCHES = 4
"""Chunks read ahead for a following caller (one chunk: at most READ_BYTES of records);
with one chunk per slot, the only buffer between the files and the caller."""
_MAX_RECORD = MAX_LOG_LINE_BYTES + 64
_STREAMS = {STDOUT: LogStreamKind.STDOUT}


@dataclass(frozen=True, slots=True)
class LogSelector:
    """Which slots and lines of a service a query wants.

    ``instance_id`` may name a process (``<service>-<n>@<pid>``, as in status and
    in entries) or a replica slot (``<service>-<n>``: every process it had).
    """

    service_id: str
    ordinal: int | None = None
    pid: int | None = None
    since: bytes | None = None
    nothing: bool = False
    """The instance named is no replica of this service."""

    @classmethod
    def of(cls, service_id: str, query: LogQuery) -> LogSelector:
        since = stamp(query.since) if query.since is not None else None
        if not query.instance_id:
            return cls(service_id, since=since)
        found = re.fullmatch(
            re.escape(service_id) + r"-(\d{1,3})(?:@(\d{1,10}))?", query.instance_id
        )
        if found is None:
            return cls(service_id, since=since, nothing=True)
        pid = int(found.group(2)) if found.group(2) else None
        return cls(service_id, int(found.group(1)), pid, since)

    def wants_slot(self, ordinal: int) -> bool:
        return not self.nothing and (self.ordinal is None or self.ordinal == ordinal)

    def wants(self, record: Record) -> bool:
        return (self.pid is None or record.pid == self.pid) and (
            self.since is None or record.time >= self.since
        )


@dataclass(frozen=True, slots=True)
class Gap:
    """Files of a slot were rotated away before the reader got to them."""

    files: int


# -- where the tail begins ----------------------------------------------------------------------


def lines_backwards(fd: int, end: int, block: int = READ_BYTES) -> Iterator[tuple[int, bytes]]:
    """(offset, line) of the file's lines before ``end``, last first (blocking).

    A stretch longer than any record without a newline (a damaged or foreign file)
    is not kept whole: it comes out as a shorter line that does not parse.
    """
    position = end
    carry = b""  # the file from ``position`` up to the newline ending the last line given
    at_end = True  # no newline seen yet: what follows the last one is a torn record
    while position > 0:
        size = min(block, position)
        position -= size
        parts = (os.pread(fd, size, position) + carry).split(b"\n")
        if len(parts) > 1:
            starts = list(accumulate((len(part) + 1 for part in parts[:-1]), initial=position))
            if parts[-1] or not at_end:
                yield starts[-1], parts[-1]
            at_end = False
            for index in range(len(parts) - 2, 0, -1):
                yield starts[index], parts[index]
        carry = parts[0] if len(parts[0]) <= _MAX_RECORD else b""
    if carry or not at_end:
        yield 0, carry


def tail_start(snapshot: Snapshot, count: int, selector: LogSelector) -> Position:
    """Where the last ``count`` wanted records of a slot begin (blocking)."""
    for generation in sorted(snapshot.fds, reverse=True):
        fd = snapshot.fds[generation]
        end = snapshot.end.offset if generation == snapshot.end.generation else os.fstat(fd).st_size
        for start, line in lines_backwards(fd, end):
            record = parse(line)
            if record is None:
                continue
            if selector.since is not None and record.time < selector.since:
                return Position(generation, start + len(line) + 1)
            if selector.wants(record):
                count -= 1
                if count == 0:
                    return Position(generation, start)
    return Position(min(snapshot.fds, default=snapshot.end.generation), 0)


# -- reading forwards ---------------------------------------------------------------------------


class Cursor:
    """Reads one slot's records forwards from a position, across its rotations."""

    def __init__(
        self,
        replica_log: ReplicaLog,
        start: Position,
        fds: dict[int, int],
        read: Callable[[int, int, int], Awaitable[bytes]],
    ) -> None:
        self.log = replica_log
        self.generation = start.generation
        self.offset = start.offset
        self.end: Position | None = None
        """Stop there (the end of the files when the call began); None: follow."""
        self.last_time: datetime | None = None
        self._fds = fds
        for generation in [g for g in fds if g < start.generation]:
            os.close(fds.pop(generation))
        self._fd: int | None = None
        self._buffer = b""
        self._lines: list[bytes] = []
        self._read_at = read

    def descriptors(self) -> list[int]:
        return [*self._fds.values(), *([self._fd] if self._fd is not None else [])]

    def forget_descriptors(self) -> None:
        self._fds = {}
        self._fd = None

    async def next_lines(self, *, follow: bool) -> list[bytes] | Gap | None:
        """The lines of the next chunk; None at ``end``, or when following and the log
        was closed."""
        while True:
            if self._lines:
                lines, self._lines = self._lines, []
                return lines
            seen = self.log.seq
            progress = await self._read()
            if isinstance(progress, Gap):
                return progress
            if progress:
                continue
            if not follow or self.log.closed:
                return None
            await self.log.changed(seen, FOLLOW_POLL)

    async def _read(self) -> bool | Gap:
        """Read a chunk: True when there was something to do, False when nothing is left now."""
        end = self.end
        if end is not None and Position(self.generation, self.offset) >= end:
            return False
        if self._fd is None:
            fd = self._fds.pop(self.generation, None)
            if fd is None:
                fd = self.log.open_generation(self.generation)
            if fd is None:
                if self.generation < self.log.oldest_generation:
                    lost = self.log.oldest_generation - self.generation
                    self._advance(self.log.oldest_generation)
                    return Gap(lost)
                if self.generation < self.log.generation:  # never written: the next one
                    self._advance(self.generation + 1)
                    return True
                return False  # nothing written yet
            self._fd = fd
        complete = self.generation < self.log.generation  # rotated: it will not grow
        size = READ_BYTES
        if end is not None and end.generation == self.generation:
            size = min(size, end.offset - self.offset)
        data = await self._read_at(self._fd, size, self.offset)
        if data:
            self.offset += len(data)
            self._split(data)
            return True
        if complete:
            self._advance(self.generation + 1)
            return True
        return self.generation < self.log.generation  # rotated meanwhile: read it to the end

    def _split(self, data: bytes) -> None:
        parts = (self._buffer + data).split(b"\n")
        self._buffer = parts.pop()
        if len(self._buffer) > _MAX_RECORD:  # not a record (a damaged file): skip it
            self._buffer = b""
        self._lines += parts

    def _advance(self, generation: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.generation = generation
        self.offset = 0
        self._buffer = b""  # a torn record at the end of a file is not one


# -- one StreamLogs call ------------------------------------------------------------------------


class LogReader:
    def __init__(self, book: LogBook, selector: LogSelector, tail: int, run: Runner) -> None:
        self._book = book
        self._selector = selector
        self._tail = tail
        self._run = run
        self._cursors: dict[int, Cursor] = {}
        self._inflight: set[asyncio.Future[Any]] = set()
        self._time_text = b""
        self._time = datetime.min.replace(tzinfo=UTC)

    async def entries(self, *, follow: bool) -> AsyncGenerator[LogEntry, None]:
        snapshots: list[Snapshot] = []
        try:
            for replica_log in self._book.replicas():
                if self._selector.wants_slot(replica_log.ordinal):
                    snapshots.append(replica_log.snapshot())
            starts = await self._blocking(self._tail_starts, snapshots)
            for snapshot, start in zip(snapshots, starts, strict=True):
                cursor = Cursor(snapshot.log, start, snapshot.fds, self._pread)
                cursor.end = snapshot.end
                self._cursors[snapshot.log.ordinal] = cursor
            snapshots = []
            async with contextlib.aclosing(self._merged()) as merged:
                async for entry in merged:
                    yield entry
            if follow:
                for cursor in self._cursors.values():
                    cursor.end = None
                async with contextlib.aclosing(self._followed()) as followed:
                    async for entry in followed:
                        yield entry
        finally:
            fds = [fd for snapshot in snapshots for fd in snapshot.fds.values()]
            for cursor in self._cursors.values():
                fds += cursor.descriptors()
                cursor.forget_descriptors()
            self._close_when_idle(fds)

    def _tail_starts(self, snapshots: list[Snapshot]) -> list[Position]:
        return [tail_start(snapshot, self._tail, self._selector) for snapshot in snapshots]

    async def _merged(self) -> AsyncGenerator[LogEntry, None]:
        """Every slot up to its end, merged by time (each slot's records are in order)."""
        batches: dict[int, list[LogEntry]] = {}
        heads: list[tuple[datetime, int, int]] = []  # (time, ordinal, index in its batch)
        for ordinal in self._cursors:
            batch = await self._batch(ordinal, follow=False)
            if batch:
                batches[ordinal] = batch
                heapq.heappush(heads, (batch[0].time, ordinal, 0))
        while heads:
            _, ordinal, index = heapq.heappop(heads)
            batch = batches[ordinal]
            yield batch[index]
            index += 1
            if index == len(batch):
                refill = await self._batch(ordinal, follow=False)
                if not refill:
                    continue
                batch = batches[ordinal] = refill
                index = 0
            heapq.heappush(heads, (batch[index].time, ordinal, index))

    async def _followed(self) -> AsyncGenerator[LogEntry, None]:
        queue: asyncio.Queue[list[LogEntry] | Exception | None] = asyncio.Queue(QUEUE_BATCHES)
        pumps: set[asyncio.Task[None]] = set()

        async def pump(ordinal: int) -> None:
            try:
                while (batch := await self._batch(ordinal, follow=True)) is not None:
                    await queue.put(batch)
            except Exception as exc:  # an I/O error ends the call, with its cause
                await queue.put(exc)

        def start(ordinal: int) -> None:
            pumps.add(asyncio.create_task(pump(ordinal), name=f"alphaswarm-local:logs-{ordinal}"))

        async def watch() -> None:
            """Slots that appear later (scale-up); ends once the service is deleted."""
            book = self._book
            while True:
                seen = book.version
                for replica_log in book.replicas():
                    ordinal = replica_log.ordinal
                    if ordinal not in self._cursors and self._selector.wants_slot(ordinal):
                        start_at = Position(replica_log.oldest_generation, 0)
                        self._cursors[ordinal] = Cursor(replica_log, start_at, {}, self._pread)
                        start(ordinal)
                if book.closed:
                    break
                await book.changed(seen, FOLLOW_POLL)
            await asyncio.gather(*pumps)
            await queue.put(None)

        for ordinal in list(self._cursors):
            start(ordinal)
        watcher = asyncio.create_task(watch(), name="alphaswarm-local:logs-watch")
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                for entry in item:
                    yield entry
        finally:
            for task in (watcher, *pumps):
                task.cancel()
            await asyncio.gather(watcher, *pumps, return_exceptions=True)

    async def _batch(self, ordinal: int, *, follow: bool) -> list[LogEntry] | None:
        """The slot's next wanted entries (one chunk's worth, at least one); None at its end."""
        cursor = self._cursors[ordinal]
        while True:
            lines = await cursor.next_lines(follow=follow)
            if lines is None:
                return None
            if isinstance(lines, Gap):
                return [self._gap(ordinal, cursor, lines)]
            batch = [entry for line in lines if (entry := self._entry(ordinal, line)) is not None]
            if batch:
                cursor.last_time = batch[-1].time
                return batch

    def _entry(self, ordinal: int, line: bytes) -> LogEntry | None:
        record = parse(line)
        if record is None or not self._selector.wants(record):
            return None
        if record.time != self._time_text:  # the lines of one read share their time
            try:
                self._time = datetime.fromisoformat(record.time.decode())
            except ValueError:
                return None
            self._time_text = record.time
        return LogEntry(
            instance_id=f"{self._selector.service_id}-{ordinal}@{record.pid}",
            time=self._time,
            text=record.text.rstrip(b"\r").decode("utf-8", "replace"),
            stream=_STREAMS.get(record.stream, LogStreamKind.STDERR),
            truncated=record.truncated,
        )

    def _gap(self, ordinal: int, cursor: Cursor, gap: Gap) -> LogEntry:
        limits = self._book.limits
        return LogEntry(
            instance_id=f"{self._selector.service_id}-{ordinal}",
            time=cursor.last_time or datetime.now(UTC),
            text=(
                f"[alphaswarm: {gap.files} log file(s) of replica {ordinal} were rotated away "
                "before this reader got to them; their lines are skipped (each replica keeps "
                f"about {limits.retained_bytes // 1024} KiB)]"
            ),
        )

    # -- reads off the event loop, and descriptors closed only once no read uses them ----------

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        task: asyncio.Future[T] = asyncio.ensure_future(self._run(fn, *args))
        self._inflight.add(task)
        task.add_done_callback(self._settled)
        return await asyncio.shield(task)

    def _settled(self, task: asyncio.Future[Any]) -> None:
        self._inflight.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the caller may have gone away meanwhile

    async def _pread(self, fd: int, size: int, offset: int) -> bytes:
        return await self._blocking(os.pread, fd, size, offset)

    def _close_when_idle(self, fds: list[int]) -> None:
        busy = [task for task in self._inflight if not task.done()]

        def close_all() -> None:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

        if not busy:
            close_all()
            return
        remaining = len(busy)

        def one_done(_: asyncio.Future[Any]) -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0:
                close_all()

        for task in busy:
            task.add_done_callback(one_done)
