"""A service's output read back from CloudWatch Logs: the retained tail of each task,
then (follow) every new line, those of tasks that start later included.

The requests are chosen by what bounds them (CloudWatch Logs API reference, botocore
logs 2014-03-28 model):

* **Tail**: one ``GetLogEvents`` per task, newest first (``startFromHead=false``) with
  ``limit`` = the lines wanted (at most 10,000, the model's ``EventsLimit``), from
  ``since``: the last N lines of a task cost one request however long its stream is. A
  page holds at most 1 MB, so large lines take more pages (backwards, at most
  ``MAX_TAIL_PAGES``) until N are read.
  The tasks are those ECS lists for the service (desired RUNNING, and the stopped ones it
  still reports, about an hour); an older task's stream stays in the group until the
  group's retention removes it, readable with ``aws logs tail``. Lines are sent merged by
  time across tasks; at most ``MERGE_BUDGET`` lines are held for the merge, beyond that
  tasks are merged and sent in groups (one task's lines are never split).
* **Follow**: one ``FilterLogEvents`` on the group per poll (``ALPHASWARM_AWS_LOGS_POLL``,
  default 2 s), however many tasks run, plus a page per 10,000 events or 1 MB; a task
  that starts later is a new stream in the same group, so its lines come without any
  extra request. Polls are not sent back to back: FilterLogEvents has an account-wide
  quota of 5 requests a second (AWS knowledge center, "How do I determine throttling in
  my CloudWatch logs?"), shared by every follower. Each poll reads the window from
  ``LOOKBACK_MS`` before the previous poll's end to now: the awslogs driver sends a
  task's lines every 5 s (moby ``daemon/logger/awslogs``, ``batchPublishFrequency``), so
  a line reaches CloudWatch seconds after its timestamp, and a line later than the
  lookback is not followed (a call without follow shows it). The window makes each poll
  read the last ``LOOKBACK_MS`` of events again; they are recognised by a cursor per
  stream (newest timestamp sent, and how many lines of that millisecond), which works
  because one task's driver sends its lines in order.

A transient failure during follow (throttling past the retries, a 5xx) waits with capped
backoff and polls again from where the last good poll ended; the group's deletion (the
service was deleted) ends the stream. ``awslogs`` does not keep stdout and stderr apart,
so every entry's stream is unspecified.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import AsyncGenerator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from alphaswarm_core.providers.models import MAX_TAIL_LINES
from alphaswarm_core.providers.protocol import (
    BackendTimeoutError,
    BackendUnavailableError,
    InfrastructureProvider,
    InfrastructureProviderError,
    LogEntry,
    LogQuery,
)

from .clients import Clients, JsonDict
from .logs import stream_of, task_of

log = logging.getLogger(__name__)

PAGE_EVENTS = 10_000
"""GetLogEvents/FilterLogEvents ``limit``: 1 to 10,000 (model, ``EventsLimit``)."""
LOOKBACK_MS = 15_000
MERGE_BUDGET = MAX_TAIL_LINES
MAX_TAIL_PAGES = 50
"""Pages one task's tail may take (each at most 1 MB): 50 MB of large lines at most."""
TAIL_CONCURRENCY = 4
"""GetLogEvents in flight at once for one call (the quota is per account: be modest)."""
RETRY_MAX_SECONDS = 30.0


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_ms(moment: datetime) -> int:
    """The first whole millisecond at or after ``moment`` (CloudWatch's timestamps are
    milliseconds; integer arithmetic, so a millisecond time maps to itself)."""
    micros = (moment - EPOCH) // timedelta(microseconds=1)
    return max(0, -(-micros // 1000))  # Timestamp: "min": 0 (model)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _entry(task_id: str, event: JsonDict) -> LogEntry:
    stamp = EPOCH + timedelta(milliseconds=int(event.get("timestamp", 0)))
    return LogEntry.bounded(task_id, stamp, str(event.get("message", "")))


def _not_found(error: InfrastructureProviderError) -> bool:
    return error.metadata.get("aws_error_code") == "ResourceNotFoundException"


@dataclass(slots=True)
class Cursor:
    """Where one stream's sent lines end."""

    timestamp: int
    count: int
    """Lines of that millisecond already sent."""
    seen: int = 0
    """Lines of that millisecond met in the current poll."""


@dataclass
class TailResult:
    task_id: str
    entries: list[LogEntry]
    cursor: Cursor | None


class LogReader:
    """Blocking reads of one service's log group (run them off the event loop)."""

    def __init__(self, clients: Clients, group: str) -> None:
        self._clients = clients
        self.group = group

    def tail(self, task_id: str, query: LogQuery) -> TailResult:
        """The last ``query.tail`` lines of task ``task_id`` from ``query.since``, oldest
        first; none when its stream (or the group) does not exist."""
        wanted = query.tail
        args: JsonDict = {
            "logGroupName": self.group,
            "logStreamName": stream_of(task_id),
            "startFromHead": False,
        }
        if query.since is not None:
            args["startTime"] = to_ms(query.since)
        pages: list[list[LogEntry]] = []
        cursor: Cursor | None = None
        got = 0
        token: str | None = None
        for _ in range(MAX_TAIL_PAGES):
            remaining = wanted - got
            if remaining <= 0:
                break
            args["limit"] = min(remaining, PAGE_EVENTS)
            try:
                page = self._clients.call("logs", "GetLogEvents", **args)
            except InfrastructureProviderError as exc:
                if _not_found(exc):
                    break
                raise
            events = list(page.get("events", []))[-remaining:]
            if events and cursor is None:  # the newest page: where the tail ends
                newest = int(events[-1].get("timestamp", 0))
                same = sum(1 for event in events if int(event.get("timestamp", 0)) == newest)
                cursor = Cursor(newest, same)
            pages.append([_entry(task_id, event) for event in events])
            got += len(events)
            # A page may be partial or empty with more before it; the end is the token
            # coming back unchanged ("If you have reached the end of the stream, it returns
            # the same token you passed in", GetLogEventsResponse.nextBackwardToken).
            backward = page.get("nextBackwardToken")
            if not backward or backward == token:
                break
            token = args["nextToken"] = backward
        entries = [entry for page_entries in reversed(pages) for entry in page_entries]
        return TailResult(task_id, entries, cursor)

    def page(
        self, start: int, end: int, streams: Sequence[str], token: str | None
    ) -> tuple[list[JsonDict], str | None]:
        """One FilterLogEvents page of the window [start, end] (ms), oldest first."""
        args: JsonDict = {"logGroupName": self.group, "startTime": start, "endTime": end}
        if streams:
            args["logStreamNames"] = list(streams)
        if token:
            args["nextToken"] = token
        found = self._clients.call("logs", "FilterLogEvents", **args)
        return list(found.get("events", [])), found.get("nextToken") or None


@dataclass
class Follower:
    """The windows of successive polls and which of their events are new."""

    since: int
    last_end: int
    cursors: dict[str, Cursor] = field(default_factory=dict)

    def window(self) -> tuple[int, int]:
        for cursor in self.cursors.values():
            cursor.seen = 0
        start = max(self.since, self.last_end - LOOKBACK_MS)
        return start, max(start, now_ms())

    def accept(self, stream: str, timestamp: int) -> bool:
        """Whether an event of ``stream`` at ``timestamp`` was not sent yet (and mark it)."""
        if timestamp < self.since:
            return False
        cursor = self.cursors.get(stream)
        if cursor is None or timestamp > cursor.timestamp:
            self.cursors[stream] = Cursor(timestamp, 1, 1)
            return True
        if timestamp < cursor.timestamp:
            return False
        cursor.seen += 1
        if cursor.seen <= cursor.count:
            return False
        cursor.count += 1
        return True

    def done(self, start: int, end: int) -> None:
        """The window [start, end] was read whole: the next one begins from ``end``."""
        self.last_end = end
        # Events of a stream up to its cursor are older than any later window.
        for stream in [s for s, c in self.cursors.items() if c.timestamp < start]:
            del self.cursors[stream]


def _merged(results: Iterable[TailResult], query: LogQuery) -> list[LogEntry]:
    merged = heapq.merge(*(r.entries for r in results), key=lambda e: e.time)
    return [entry for entry in merged if query.wants(entry)]


async def read_logs(
    provider: InfrastructureProvider,
    reader: LogReader,
    task_ids: Sequence[str],
    query: LogQuery,
    *,
    poll_seconds: float,
    only_task: str = "",
) -> AsyncGenerator[LogEntry, None]:
    """The tail of each of ``task_ids``, merged by time, then with ``query.follow`` new
    lines of the group's tasks (of ``only_task`` when given) until the caller closes."""
    began = now_ms()
    cursors: dict[str, Cursor] = {}
    held: list[TailResult] = []
    size = 0
    for start in range(0, len(task_ids), TAIL_CONCURRENCY):
        chunk = task_ids[start : start + TAIL_CONCURRENCY]
        results = await asyncio.gather(
            *(provider.run_blocking(reader.tail, task_id, query) for task_id in chunk)
        )
        for result in results:
            if result.cursor is not None:
                cursors[stream_of(result.task_id)] = result.cursor
            if held and size + len(result.entries) > MERGE_BUDGET:
                for entry in _merged(held, query):
                    yield entry
                held, size = [], 0
            held.append(result)
            size += len(result.entries)
    for entry in _merged(held, query):
        yield entry
    del held
    if not query.follow:
        return
    follower = Follower(
        since=to_ms(query.since) if query.since else 0, last_end=began, cursors=cursors
    )
    streams = [stream_of(only_task)] if only_task else []
    failures = 0
    while True:
        await asyncio.sleep(poll_seconds)
        start, end = follower.window()
        token: str | None = None
        try:
            while True:
                events, token = await provider.run_blocking(reader.page, start, end, streams, token)
                for event in events:
                    stream = str(event.get("logStreamName", ""))
                    task_id = task_of(stream)
                    if task_id is None:  # not a task's stream: nothing of ours
                        continue
                    if follower.accept(stream, int(event.get("timestamp", 0))):
                        entry = _entry(task_id, event)
                        if query.wants(entry):
                            yield entry
                if token is None:
                    break
        except (BackendUnavailableError, BackendTimeoutError) as exc:
            failures += 1
            wait = min(RETRY_MAX_SECONDS, poll_seconds * 2**failures)
            log.warning("reading %s failed (%s); again in %.0f s", reader.group, exc, wait)
            await asyncio.sleep(wait)
            continue
        except InfrastructureProviderError as exc:
            if _not_found(exc):  # the group is gone: the service was deleted
                return
            raise
        failures = 0
        follower.done(start, end)
