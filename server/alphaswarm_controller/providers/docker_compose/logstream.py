"""One StreamLogs call: a reader per replica, the event watcher, the merge by time.

Merging follows ``docker compose logs``, with the lines of all replicas in time
order as far as it can be known. Each reader delivers its replica's lines in
order, so the next line to send is the earliest head among the readers. Without
follow every reader ends, and waiting for each one's head gives an exact merge.
With follow a quiet replica has no head, perhaps for hours; a reader without a
head holds the others back only while it has been quiet for less than
``MERGE_WINDOW`` (it may be about to deliver an earlier line), after which the
others' lines go out. So a follow's backlog is merged exactly, and live lines
are merged across replicas whose lines reach the controller within that window.

Replicas that appear later (scale-up, a replacement in a config roll, a container
restarting) are found through the engine's event stream, never by polling: a
start of a container of the service opens a reader for it, from the beginning of
its retained log for a new container, and from just after the last line read for
one read before.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections import deque
from collections.abc import Awaitable, Callable

from alphaswarm_core.providers.models import LogEntry, LogQuery

from .compose import ContainerRef
from .engine import DeadlineAPIClient
from .logframes import nanoseconds
from .logreaders import ContainerLogReader, EventWatcher, ReaderSlots, ReadFrom

#: How long a following stream waits for a quiet replica before sending other replicas'
#: earlier lines: long enough for lines written at the same moment to meet here.
MERGE_WINDOW = 0.25
#: Events are asked for from this long before the replicas were listed, so that a
#: container started meanwhile is not missed (the engine's clock may differ a little).
EVENTS_OVERLAP_NS = 2_000_000_000
#: Replicas read before whose reader ended (stopped or removed) are remembered by the
#: timestamp of their last line, so that a restart resumes after it; the oldest are
#: forgotten beyond this many (a follow may outlive thousands of replaced replicas).
REMEMBERED_REPLICAS = 4096

Relist = Callable[[], Awaitable[list[ContainerRef]]]


class LogSession:
    """The readers of one StreamLogs call; ``next()`` gives its entries in order."""

    def __init__(
        self,
        api: Callable[[], DeadlineAPIClient],
        slots: ReaderSlots,
        query: LogQuery,
        project: str,
        service: str,
        *,
        relist: Relist,
    ) -> None:
        self._api = api
        self._slots = slots
        self._query = query
        self._project = project
        self._service = service
        self._relist = relist
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._readers: dict[str, ContainerLogReader] = {}
        self._ended: dict[str, int] = {}  # container id -> last line read (ns), oldest first
        self._started: deque[str] = deque()  # container ids, appended by the watcher thread
        self._resync = False
        self._since_ns = nanoseconds(query.since) if query.since else 0
        self._watcher: EventWatcher | None = None

    # -- opening and closing ---------------------------------------------------------------

    def open(self, replicas: list[ContainerRef], listed_ns: int) -> None:
        """Start reading ``replicas`` (the last ``query.tail`` lines of each), and with
        follow, watching for replicas that start after ``listed_ns`` (when they were
        listed, in nanoseconds since the epoch)."""
        try:
            for ref in replicas:
                if self._wanted(ref.id):
                    self._read(ref.id, ReadFrom(self._query.tail, self._since_ns))
            if self._query.follow:
                self._slots.take()
                self._watcher = EventWatcher(
                    self._api,
                    self._project,
                    self._service,
                    listed_ns - EVENTS_OVERLAP_NS,
                    on_start=self._on_start,
                    on_resync=self._on_resync,
                    slots=self._slots,
                )
                self._start_thread(self._watcher)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop every thread of this call (each ends within moments; none is waited for)."""
        for reader in self._readers.values():
            reader.stop()
        if self._watcher is not None:
            self._watcher.stop()

    def threads(self) -> int:
        """Threads of this call still running (for tests and diagnostics)."""
        running = [reader.thread for reader in self._readers.values()]
        if self._watcher is not None:
            running.append(self._watcher.thread)
        return sum(1 for thread in running if thread.is_alive())

    def buffered(self) -> dict[str, int]:
        """Lines each reader holds for the caller right now."""
        return {reader.instance_id: reader.buffered() for reader in self._readers.values()}

    # -- the entries -----------------------------------------------------------------------

    async def next(self) -> LogEntry | None:
        """The next entry in time order; None when a non-following stream has sent all."""
        while True:
            self._wake.clear()  # before looking: a later notify wakes the wait below
            await self._take_news()
            choice = self._choose()
            if isinstance(choice, ContainerLogReader):
                entry = choice.pop()
                if self._query.wants(entry):
                    return entry
                continue
            if choice is _Done.DONE:
                return None
            if choice is None:
                await self._wake.wait()
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(choice):
                    await self._wake.wait()

    def _choose(self) -> ContainerLogReader | float | _Done | None:
        """The reader whose head goes next; else how long to wait (None: until woken),
        or ``_Done.DONE``."""
        best: ContainerLogReader | None = None
        best_ns = 0
        quiet_waits: list[float] = []
        waiting_for_all = False
        now = time.monotonic()
        for reader in self._readers.values():
            head = reader.head()
            if head is not None:
                if best is None or head[0] < best_ns:
                    best, best_ns = reader, head[0]
                continue
            if reader.finished:
                if reader.error is not None:
                    raise reader.error
                continue
            if not self._query.follow:
                waiting_for_all = True
                continue
            quiet = now - reader.last_arrival
            if quiet < MERGE_WINDOW:
                quiet_waits.append(MERGE_WINDOW - quiet)
        if waiting_for_all:
            return None
        if quiet_waits:
            return min(quiet_waits)
        if best is not None:
            return best
        return None if self._query.follow else _Done.DONE

    async def _take_news(self) -> None:
        """Open readers for what the watcher reported: started containers, and after a
        reconnect of the event stream, the running replicas (events may have been lost)."""
        while self._started:
            self._seen(self._started.popleft(), started=True)
        if self._resync:
            self._resync = False
            for ref in await self._relist():
                if ref.state == "running":
                    self._seen(ref.id, started=False)
        for container_id, reader in list(self._readers.items()):
            if not reader.finished or reader.head() is not None or reader.error is not None:
                continue
            del self._readers[container_id]
            if reader.restart_pending:
                self._resume(container_id, reader.last_ns)  # the container started again
            elif self._query.follow:
                self._ended[container_id] = reader.last_ns
                while len(self._ended) > REMEMBERED_REPLICAS:
                    del self._ended[next(iter(self._ended))]

    def _seen(self, container_id: str, *, started: bool) -> None:
        if not self._wanted(container_id):
            return
        reader = self._readers.get(container_id)
        if reader is not None:
            # Started while still read (or the start was replayed): once this reader
            # has ended, another one resumes after its last line.
            reader.restart_pending = reader.restart_pending or started or reader.finished
        elif container_id in self._ended:
            self._resume(container_id, self._ended.pop(container_id))
        else:
            self._read(container_id, ReadFrom(since_ns=self._since_ns))  # a new replica

    def _resume(self, container_id: str, last_ns: int) -> None:
        """Read a replica read before again, from just after its last line."""
        since = last_ns + 1 if last_ns else self._since_ns
        self._read(container_id, ReadFrom(since_ns=max(since, self._since_ns)))

    def _wanted(self, container_id: str) -> bool:
        wanted = self._query.instance_id
        return not wanted or container_id[:12] == wanted

    def _read(self, container_id: str, start: ReadFrom) -> None:
        self._slots.take()
        reader = ContainerLogReader(
            self._api,
            container_id,
            start,
            follow=self._query.follow,
            notify=self._notify,
            slots=self._slots,
        )
        self._readers[container_id] = reader
        self._start_thread(reader)

    def _start_thread(self, reader: ContainerLogReader | EventWatcher) -> None:
        try:
            reader.start()
        except BaseException:
            self._slots.give()  # the thread that would give it back never ran
            raise

    # -- called from reader threads --------------------------------------------------------

    def _notify(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._wake.set)

    def _on_start(self, container_id: str) -> None:
        self._started.append(container_id)
        self._notify()

    def _on_resync(self) -> None:
        self._resync = True
        self._notify()


class _Done(enum.Enum):
    DONE = enum.auto()
