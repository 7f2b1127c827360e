"""Pod logs (``pods/log``) of a service's replicas, one stream per pod, merged.

The API server proxies ``GET /api/v1/namespaces/<ns>/pods/<pod>/log`` to the
pod's kubelet, which reads the container's log file (the CRI format): with
``timestamps=true`` each line starts with its RFC 3339 time (nanoseconds), so
lines of different pods can be merged by time; ``tailLines`` and ``sinceTime``
are the kubelet's own. The API does not say stdout or stderr: entries are
UNSPECIFIED.

* Retained lines: every pod's stream is read on its own thread into a small
  bounded queue and merged by time (a k-way merge of the heads), at most
  ``MAX_PARALLEL_STREAMS`` pods at once (beyond that, groups one after another).
  Nothing waits in memory beyond those queues: a slow reader slows the reads.
* Follow: after the merged tail, each pod is followed from the second of its
  last line (``sinceTime``, lines up to that time dropped); pods that appear
  later (scale-up, a roll-out, a restart) are followed, with their retained
  lines, as soon as a pod watch (reflector rules) sees their container run. A
  follow that breaks is reopened from its last line with capped backoff. Live
  lines come in the order they arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from alphaswarm_core.providers.models import MAX_LOG_LINE_BYTES, LogEntry, LogQuery

from .reflector import Backoff
from .transport import JsonObj
from .watch import ResponseStream

log = logging.getLogger(__name__)

CONTAINER = "main"
#: Pods whose streams are open at once (threads and sockets).
MAX_PARALLEL_STREAMS = 64
#: Entries waiting per pod stream before its reader blocks (backpressure).
QUEUE_PER_STREAM = 64
#: RFC 3339 with nanoseconds and a space: what ``timestamps=true`` puts before a line.
TIMESTAMP_BYTES = 40
#: A pod's follow that keeps failing this long is given up (the stream goes on).
GIVE_UP_SECONDS = 300.0

OpenLog = Callable[[str, dict[str, Any]], Any]
"""``(pod, query) -> urllib3 response`` of a pods/log request (blocking)."""


def parse_time(text: str) -> datetime | None:
    """An RFC 3339 time with up to nanoseconds (Python keeps microseconds)."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    head, dot, rest = value.partition(".")
    if dot:
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        value = f"{head}.{(digits + '000000')[:6]}{zone}"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def entry_parser(pod: str) -> Callable[[bytes], LogEntry | None]:
    def parse(line: bytes) -> LogEntry | None:
        stamp, _, text = line.partition(b" ")
        time = parse_time(stamp.decode("ascii", "replace"))
        if time is None:  # not a timestamped line (an error text from the kubelet)
            return None
        return LogEntry.bounded(pod, time, text)

    return parse


def rfc3339(time: datetime) -> str:
    """``sinceTime``: whole seconds (metav1.Time), rounded down so nothing is lost."""
    return time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_stream(
    open_log: OpenLog, pod: str, *, tail: int | None, since: datetime | None, follow: bool
) -> ResponseStream[LogEntry]:
    query: dict[str, Any] = {"container": CONTAINER, "timestamps": True}
    if tail is not None:
        query["tailLines"] = tail
    if since is not None:
        query["sinceTime"] = rfc3339(since)
    if follow:
        query["follow"] = True
    return ResponseStream(
        lambda: open_log(pod, query),
        entry_parser(pod),
        max_line=MAX_LOG_LINE_BYTES + TIMESTAMP_BYTES,
        cut_long_lines=True,
        maxsize=QUEUE_PER_STREAM,
    )


def has_log(pod: JsonObj, *, running_only: bool = False) -> bool:
    """The container started (is running, or ran: a crashed one has its last words), so
    the kubelet has a log for it; a pod being deleted is left out."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    states = ("running",) if running_only else ("running", "terminated")
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        state = status.get("state") or {}
        if status.get("name") == CONTAINER and any(s in state for s in states):
            return True
    return False


async def _next_of(stream: AsyncIterator[LogEntry]) -> LogEntry | None:
    """The next entry; None at the end, or when the pod stopped or went meanwhile."""
    try:
        return await anext(stream, None)
    except ApiException as exc:
        if exc.status in (400, 404):
            return None
        raise


async def merged_tail(
    open_log: OpenLog, pods: list[str], query: LogQuery, last: dict[str, datetime]
) -> AsyncGenerator[LogEntry, None]:
    """The retained lines of ``pods`` (``query.tail`` each), merged by time; ``last`` gets
    each pod's newest time."""
    for start in range(0, len(pods), MAX_PARALLEL_STREAMS):
        group = pods[start : start + MAX_PARALLEL_STREAMS]
        streams = [
            pod_stream(open_log, pod, tail=query.tail, since=query.since, follow=False).items()
            for pod in group
        ]
        try:
            heads: list[tuple[datetime, int, LogEntry]] = []
            for index, stream in enumerate(streams):
                first = await _next_of(stream)
                if first is not None:
                    heads.append((first.time, index, first))
            heapq.heapify(heads)
            while heads:
                _, index, entry = heapq.heappop(heads)
                last[entry.instance_id] = entry.time
                if query.wants(entry):
                    yield entry
                following = await _next_of(streams[index])
                if following is not None:
                    heapq.heappush(heads, (following.time, index, following))
        finally:
            for stream in streams:
                await stream.aclose()  # type: ignore[attr-defined]


class Followers:
    """One follow stream per running pod, all feeding one bounded queue.

    A follow that fails (a dropped connection, a read timeout on a quiet pod, a
    5xx) is reopened from the last line's second with capped backoff; one the
    kubelet ends (the container stopped) or refuses (400/404: not running, gone)
    ends, and the pod watch starts it again when the pod's container runs again.
    """

    def __init__(
        self, open_log: OpenLog, query: LogQuery, last: dict[str, datetime] | None = None
    ) -> None:
        self.open_log = open_log
        self.query = query
        self.queue: asyncio.Queue[LogEntry] = asyncio.Queue(QUEUE_PER_STREAM)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.last: dict[str, datetime] = dict(last or {})

    def follow(self, pod: str) -> None:
        """Follow ``pod`` (unless it is followed already or filtered out)."""
        if self.query.instance_id and pod != self.query.instance_id:
            return
        task = self.tasks.get(pod)
        if task is not None and not task.done():
            return
        if task is None and len(self.tasks) >= MAX_PARALLEL_STREAMS:
            log.warning("not following pod %s: %d pods are followed", pod, len(self.tasks))
            return
        self.tasks[pod] = asyncio.create_task(self._follow(pod), name=f"alphaswarm-logs-{pod}")

    def forget(self, pod: str) -> None:
        """A pod that is gone: stop following it."""
        task = self.tasks.pop(pod, None)
        if task is not None:
            task.cancel()

    async def _follow(self, pod: str) -> None:
        backoff = Backoff()
        while True:
            # From the second of the last line sent (or the caller's ``since``); a pod
            # never read from gets its retained lines, at most ``query.tail``.
            since = self.last.get(pod) or self.query.since
            tail = self.query.tail if since is None else None
            stream = pod_stream(self.open_log, pod, tail=tail, since=since, follow=True).items()
            try:
                async for entry in stream:
                    seen = self.last.get(pod)
                    if seen is not None and entry.time <= seen:
                        continue  # sent before: sinceTime has whole seconds only
                    self.last[pod] = entry.time
                    backoff.succeeded()
                    if self.query.wants(entry):
                        await self.queue.put(entry)
                return  # the kubelet ended it: the container stopped
            except ApiException as exc:
                if exc.status in (400, 404):
                    return  # not running (yet) or gone: the pod watch decides
                delay = backoff.failed()
            except Exception:  # a dropped connection, a read timeout, a 5xx
                delay = backoff.failed()
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
            if backoff.outage_seconds() > GIVE_UP_SECONDS:
                log.warning("gave up following the log of pod %s", pod)
                return
            await asyncio.sleep(delay)

    async def close(self) -> None:
        tasks, self.tasks = list(self.tasks.values()), {}
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
