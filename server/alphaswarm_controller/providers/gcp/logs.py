"""A Cloud Run service's logs, read from Cloud Logging.

Cloud Run sends what each instance writes to stdout and stderr to Cloud Logging, one
entry per line, in the logs ``run.googleapis.com%2Fstdout`` and ``%2Fstderr`` of
resource type ``cloud_run_revision`` (labels service_name, revision_name, location), the
instance in the entry label ``instanceId``. Only those two logs are read (not the request
log, nor Cloud Run's system log); a structured (JSON) line is a ``jsonPayload`` entry,
sent as its ``message`` field, else as the JSON text. Lines older than the service's
``create_time`` are never read, so a deleted and re-created service of the same name does
not show its predecessor's lines.

* Retained lines (``retained``): ListLogEntries, newest first, 1000 entries a page and
  at most ``MAX_PAGES`` pages a call (every page is a request against the project's
  per-minute read quota), keeping the newest ``query.tail`` lines of each instance, sent
  oldest first, instances interleaved by time.
* Follow (``follow``): TailLogEntries, the streaming API made for this, rather than
  polling ListLogEntries: a poll a second would take the project's whole read quota (60
  requests a minute). Its limits, from https://cloud.google.com/logging/quotas: 10 open
  sessions per project (an 11th follower gets RESOURCE_EXHAUSTED, reported as throttling)
  and 60,000 entries a minute; entries are held ``BUFFER_WINDOW`` seconds at the server
  so that each response is in timestamp order. A session delivers only entries that
  arrive after it opened, so every session is opened *before* the catch-up read
  (retained lines first, then, after a resumption, everything since the last line sent);
  entries seen twice are dropped by insert id, and so is an entry older than a line of
  its instance already sent (one the catch-up left out because of ``tail_lines``, or
  one that reached Cloud Logging more than the buffer window late): one instance's
  lines never go backwards. When Cloud Logging ends a session or
  it fails transiently, a new one is opened after a growing pause (0.5 s to 8 s); after
  ``MAX_RESUME_FAILURES`` failures in a row the stream ends with the error.
  Entries Cloud Logging omits (``suppression_info``: rate limit, or a reader too slow
  to consume) are reported as one marker line per response, with no instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2AsyncClient
from google.cloud.logging_v2.types import (
    ListLogEntriesRequest,
    TailLogEntriesRequest,
    TailLogEntriesResponse,
)
from google.cloud.logging_v2.types import LogEntry as CloudLogEntry
from google.protobuf import duration_pb2, json_format

from alphaswarm_core.providers.concurrency import remaining_timeout
from alphaswarm_core.providers.protocol import (
    InfrastructureProviderError,
    LogEntry,
    LogQuery,
    LogStreamKind,
)

from . import retry
from .errors import api_errors

log = logging.getLogger(__name__)

STDOUT_LOG = "run.googleapis.com%2Fstdout"
STDERR_LOG = "run.googleapis.com%2Fstderr"
#: ListLogEntriesRequest.page_size: "If the value is negative or exceeds 1000, the request
#: is rejected" (google/logging/v2/logging.proto).
PAGE_SIZE = 1000
MAX_PAGES = 5
BUFFER_WINDOW = 2.0  # TailLogEntriesRequest.buffer_window's default
SESSION_SECONDS = 3600.0
RESUME_INITIAL = 0.5
RESUME_MAX = 8.0
MAX_RESUME_FAILURES = 6
#: How long a session's first response may take before the catch-up read goes ahead.
OPEN_WAIT = BUFFER_WINDOW
#: Insert ids are remembered this long past the newest entry sent (duplicates come close).
DEDUPE_SECONDS = 120.0

_RESUMABLE = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.ResourceExhausted,
    gexc.TooManyRequests,
    gexc.InternalServerError,
    gexc.Aborted,
    gexc.Unknown,
)


def quote(value: str) -> str:
    """A Logging query language string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _text(entry: CloudLogEntry) -> str | None:
    raw = CloudLogEntry.pb(entry)
    kind = raw.WhichOneof("payload")
    if kind == "text_payload":
        return str(raw.text_payload)
    if kind == "json_payload":
        payload = json_format.MessageToDict(raw.json_payload)
        message = payload.get("message")
        return message if isinstance(message, str) else json.dumps(payload, sort_keys=True)
    return None  # a proto payload is not a line a replica wrote


def to_entry(entry: CloudLogEntry) -> LogEntry | None:
    text = _text(entry)
    if text is None:
        return None
    if entry.log_name.endswith(STDOUT_LOG):
        stream = LogStreamKind.STDOUT
    elif entry.log_name.endswith(STDERR_LOG):
        stream = LogStreamKind.STDERR
    else:
        stream = LogStreamKind.UNSPECIFIED
    stamp: Any = entry.timestamp
    when = stamp if isinstance(stamp, datetime) else datetime.now(UTC)
    return LogEntry.bounded(str(entry.labels.get("instanceId", "")), when, text, stream)


class _Sent:
    """What a follow has sent: insert ids (forgotten once far older than the newest line)
    and each instance's newest line, so that no instance's lines go backwards."""

    def __init__(self) -> None:
        self.ids: dict[str, datetime] = {}
        self.last: dict[str, datetime] = {}
        self.newest: datetime | None = None

    def add(self, insert_id: str, entry: LogEntry) -> bool:
        """Whether ``entry`` is to be sent: False if it was sent already, or if a newer line
        of its instance was (an entry that reached Cloud Logging late, or one the catch-up
        read left out because of ``tail_lines``)."""
        if insert_id and insert_id in self.ids:
            return False
        last = self.last.get(entry.instance_id)
        if last is not None and entry.time < last:
            return False
        self.last[entry.instance_id] = entry.time
        if insert_id:
            self.ids[insert_id] = entry.time
        if self.newest is None or entry.time > self.newest:
            self.newest = entry.time
            horizon = entry.time - timedelta(seconds=DEDUPE_SECONDS)
            if len(self.ids) > 1024:
                self.ids = {k: v for k, v in self.ids.items() if v >= horizon}
        return True


class CloudRunLogs:
    """The logs of one Cloud Run service (``service_name`` is its short name)."""

    def __init__(
        self,
        client: LoggingServiceV2AsyncClient,
        project: str,
        region: str,
        service_name: str,
        created: datetime,
    ) -> None:
        self.client = client
        self.project = project
        self.region = region
        self.service_name = service_name
        self.created = created

    def filter(self, query: LogQuery, after: datetime | None = None) -> str:
        """The service's stdout/stderr entries from ``after`` (else since the query's
        ``since`` or the service's creation, whichever is later)."""
        logs = " OR ".join(
            f"logName = {quote(f'projects/{self.project}/logs/{name}')}"
            for name in (STDOUT_LOG, STDERR_LOG)
        )
        start = max(moment for moment in (self.created, query.since, after) if moment)
        clauses = [
            'resource.type = "cloud_run_revision"',
            f"resource.labels.service_name = {quote(self.service_name)}",
            f"resource.labels.location = {quote(self.region)}",
            f"({logs})",
            f"timestamp >= {quote(rfc3339(start))}",
        ]
        if query.instance_id:
            clauses.append(f"labels.instanceId = {quote(query.instance_id)}")
        return " AND ".join(clauses)

    async def _pages(
        self, query: LogQuery, *, after: datetime | None, newest_first: bool
    ) -> AsyncIterator[list[CloudLogEntry]]:
        request = ListLogEntriesRequest(
            resource_names=[f"projects/{self.project}"],
            filter=self.filter(query, after),
            order_by="timestamp desc" if newest_first else "timestamp asc",
            page_size=PAGE_SIZE,
        )
        with api_errors("logging"):
            pager = await self.client.list_log_entries(
                request=request, retry=retry.policy(), timeout=remaining_timeout()
            )
            pages = 0
            async for page in pager.pages:
                yield list(page.entries)
                pages += 1
                if pages >= MAX_PAGES:
                    return

    async def retained(self, query: LogQuery, seen: _Sent | None = None) -> list[LogEntry]:
        """The newest ``query.tail`` lines of each instance, oldest first."""
        kept: dict[str, list[tuple[str, LogEntry]]] = {}
        async for page in self._pages(query, after=None, newest_first=True):
            for raw in page:
                entry = to_entry(raw)
                if entry is None or not query.wants(entry):
                    continue
                lines = kept.setdefault(entry.instance_id, [])
                if len(lines) < query.tail:
                    lines.append((raw.insert_id, entry))
        ordered = sorted(
            (pair for lines in kept.values() for pair in lines), key=lambda p: (p[1].time, p[0])
        )
        if seen is not None:
            for insert_id, entry in ordered:
                seen.add(insert_id, entry)
        return [entry for _, entry in ordered]

    async def _since(self, query: LogQuery, after: datetime, seen: _Sent) -> list[LogEntry]:
        """Every line from ``after`` on that was not sent yet (a resumption's catch-up)."""
        found = []
        async for page in self._pages(query, after=after, newest_first=False):
            for raw in page:
                entry = to_entry(raw)
                if entry is not None and query.wants(entry) and seen.add(raw.insert_id, entry):
                    found.append(entry)
        return found

    async def follow(self, query: LogQuery) -> AsyncGenerator[LogEntry, None]:
        """The retained lines, then every new one, until the caller closes the stream."""
        seen = _Sent()
        failures = 0
        pause = RESUME_INITIAL
        first = True
        while True:
            if remaining_timeout(SESSION_SECONDS) < 1.0:
                return  # the caller's deadline is (nearly) over
            opened = time.monotonic()
            delivered = False
            try:
                async with self._session(query, seen.newest) as responses:
                    if first:
                        catch_up = await self.retained(query, seen)
                    else:
                        catch_up = await self._since(query, seen.newest or datetime.now(UTC), seen)
                    first = False
                    for entry in catch_up:
                        yield entry
                    async for response in responses:
                        delivered = True
                        for entry in self._entries(response, query, seen):
                            yield entry
            except InfrastructureProviderError as exc:
                if not isinstance(exc.__cause__, _RESUMABLE):
                    raise
                failures += 1
                if failures >= MAX_RESUME_FAILURES and not delivered:
                    raise
                log.info("Cloud Logging tail of %s ended (%s); resuming", self.service_name, exc)
            if delivered or time.monotonic() - opened > 10 * RESUME_MAX:
                # A session that worked: the next failure starts the count afresh.
                failures, pause = 0, RESUME_INITIAL
            await asyncio.sleep(pause)
            pause = min(pause * 2, RESUME_MAX)

    def _entries(
        self, response: TailLogEntriesResponse, query: LogQuery, seen: _Sent
    ) -> list[LogEntry]:
        found = []
        for suppressed in response.suppression_info:
            reason = TailLogEntriesResponse.SuppressionInfo.Reason(suppressed.reason).name
            log.warning(
                "Cloud Logging omitted %d entries of %s (%s)",
                suppressed.suppressed_count,
                self.service_name,
                reason,
            )
            found.append(
                LogEntry(
                    "",
                    datetime.now(UTC),
                    f"[Cloud Logging omitted at least {suppressed.suppressed_count} lines: "
                    f"{reason}]",
                )
            )
        for raw in response.entries:
            entry = to_entry(raw)
            if entry is not None and query.wants(entry) and seen.add(raw.insert_id, entry):
                found.append(entry)
        return found

    def _session(self, query: LogQuery, after: datetime | None) -> _TailSession:
        return _TailSession(self, query, after)


class _TailSession:
    """One TailLogEntries call: opened on enter, its request stream closed on exit."""

    def __init__(self, logs: CloudRunLogs, query: LogQuery, after: datetime | None) -> None:
        self.logs = logs
        self.request = TailLogEntriesRequest(
            resource_names=[f"projects/{logs.project}"],
            filter=logs.filter(query, after),
            buffer_window=duration_pb2.Duration(seconds=int(BUFFER_WINDOW)),
        )
        self.done = asyncio.Event()
        self.call: Any = None

    async def _requests(self) -> AsyncIterator[TailLogEntriesRequest]:
        yield self.request
        await self.done.wait()  # keep the request side open for the session's life

    async def __aenter__(self) -> AsyncIterator[TailLogEntriesResponse]:
        with api_errors("logging"):
            self.call = await self.logs.client.tail_log_entries(
                requests=self._requests(), timeout=remaining_timeout(SESSION_SECONDS)
            )
            # Let the session register before the catch-up read (module doc); a server
            # that sends no headers before its first entries is not waited for long.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.call.initial_metadata(), OPEN_WAIT)
        return self._responses()

    async def _responses(self) -> AsyncIterator[TailLogEntriesResponse]:
        with api_errors("logging"):
            async for response in self.call:
                yield response

    async def __aexit__(self, *exc: object) -> None:
        self.done.set()
        if self.call is not None:
            self.call.cancel()
