"""Cloud Logging v2 ``LoggingServiceV2`` emulator: ListLogEntries and TailLogEntries over gRPC.

Entries: what Cloud Run writes for the instances of the Cloud Run emulator (each line of
``Instance.line`` as a ``textPayload`` entry in ``run.googleapis.com%2Fstdout`` or
``%2Fstderr``, plus the "Starting new instance" entry in ``run.googleapis.com%2Fvarlog%2Fsystem``;
resource ``cloud_run_revision`` with project_id, service_name, revision_name, location and
configuration_name; ``labels.instanceId``), computed from the instances' lifetimes, plus
whatever a test adds with ``write``. Entries outlive the service, as in a log bucket.

Rules, from google/logging/v2/logging.proto ([proto]) and
https://cloud.google.com/logging/quotas ([quotas]):

* ListLogEntries: ``resource_names`` is REQUIRED, "A maximum of 100 resources may be
  specified in a single request" (this emulator serves ``projects/[PROJECT_ID]``);
  ``page_size`` "Default is 50. If the value is negative or exceeds 1000, the request is
  rejected"; ``order_by``: "the only permitted values are "timestamp asc" (default) and
  "timestamp desc""; "Entries with equal timestamps are returned in order of their
  insert_id values"; ``page_token`` "must be the value of next_page_token from the
  previous response" and "The values of other method parameters should be identical"
  (a token used with other parameters is INVALID_ARGUMENT); the filter is evaluated as
  ``gcp_logging_filter`` says, malformed filters are INVALID_ARGUMENT. With
  ``empty_pages`` set, a query's first pages come back empty with a ``next_page_token``
  ("the search found no log entries so far but it did not have time to search all the
  possible log entries"), which a reader must follow.
* Reads are a per-minute, per-project quota ([quotas]: "Read requests per minute",
  60); ``list_quota_per_minute`` enforces it as the real service answers, with
  RESOURCE_EXHAUSTED and ErrorInfo RATE_LIMIT_EXCEEDED. It is off by default: the contract
  suite polls logs every half second (the background THROTTLED faults stand in for it).
* TailLogEntries: the first request names ``resource_names`` (REQUIRED) and the filter;
  ``buffer_window`` "Valid values are between 0-60000 milliseconds. Defaults to 2000
  milliseconds": entries are held that long after they arrive, then sent in increasing
  timestamp order within a response. [quotas] "Number of open live-tailing sessions: 10
  per Google Cloud project": one more is RESOURCE_EXHAUSTED. Only entries that arrive after
  the session opened are sent. ``tail_session_seconds`` ends sessions early (the server
  may end a stream at any time; readers resume).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from google.cloud.logging_v2 import types as logging_v2
from google.protobuf import duration_pb2, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from . import gcp_logging_filter as lql
from .gcp_common import (
    EmulatorError,
    Method,
    Plumbing,
    fault_status,
    generic_handler,
    invalid,
    serialize,
)
from .gcp_run import CloudRunEmulator, Instance

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
MAX_RESOURCE_NAMES = 100
MAX_TAIL_SESSIONS = 10
READ_QUOTA_PER_MINUTE = 60
MAX_BUFFER_WINDOW_MS = 60_000
DEFAULT_BUFFER_WINDOW = 2.0
TAIL_TICK = 0.1
_PROJECT = re.compile(r"projects/([a-z][-a-z0-9]{4,28}[a-z0-9])")
_ORDERS = {"": False, "timestamp asc": False, "timestamp desc": True}
STARTING = (
    "Starting new instance. Reason: MANUAL_OR_CUSTOMER_MIN_INSTANCE - Instance started "
    "because of customer-configured min-instances or manual scaling."
)


def log_name(project: str, log_id: str) -> str:
    """``projects/P/logs/LOG_ID`` with the id URL-encoded ([proto] LogEntry.log_name)."""
    return f"projects/{project}/logs/{log_id.replace('/', '%2F')}"


@dataclass(frozen=True)
class Record:
    """One log entry, light enough to compute thousands per request."""

    project: str
    timestamp: float
    insert_id: str
    log_id: str
    resource_type: str
    resource_labels: dict[str, str]
    labels: dict[str, str]
    text: str | None = None
    json_payload: dict[str, Any] | None = None
    severity: str = "DEFAULT"
    received: float = 0.0

    @property
    def key(self) -> tuple[float, str]:
        return (self.timestamp, self.insert_id)

    def get(self, name: str) -> str | None:
        if name == "logName":
            return log_name(self.project, self.log_id)
        if name == "timestamp":
            return datetime.fromtimestamp(self.timestamp, UTC).isoformat()
        if name == "resource.type":
            return self.resource_type
        if name.startswith("resource.labels."):
            return self.resource_labels.get(name.removeprefix("resource.labels."))
        if name.startswith("labels."):
            return self.labels.get(name.removeprefix("labels."))
        if name == "insertId":
            return self.insert_id
        if name == "textPayload":
            return self.text
        if name == "severity":
            return self.severity
        return None

    def to_proto(self) -> logging_v2.LogEntry:
        entry = logging_v2.LogEntry(
            log_name=log_name(self.project, self.log_id),
            resource={"type": self.resource_type, "labels": self.resource_labels},
            timestamp=datetime.fromtimestamp(self.timestamp, UTC),
            receive_timestamp=datetime.fromtimestamp(self.received or self.timestamp, UTC),
            insert_id=self.insert_id,
            labels=self.labels,
            severity=self.severity,
        )
        if self.json_payload is not None:
            payload = struct_pb2.Struct()
            payload.update(self.json_payload)
            entry.json_payload = payload
        elif self.text is not None:
            entry.text_payload = self.text
        return entry


def _instance_resource(instance: Instance) -> dict[str, str]:
    return {
        "project_id": instance.project,
        "service_name": instance.service_name,
        "revision_name": instance.revision,
        "location": instance.location,
        "configuration_name": instance.service_name,
    }


def _instance_fields(instance: Instance) -> Callable[[str], str | None]:
    """The fields every entry of ``instance`` shares (to skip its entries early)."""
    resource = _instance_resource(instance)

    def get(name: str) -> str | None:
        if name == "resource.type":
            return "cloud_run_revision"
        if name.startswith("resource.labels."):
            return resource.get(name.removeprefix("resource.labels."))
        if name == "labels.instanceId":
            return instance.instance_id
        return None

    return get


def instance_records(instance: Instance, interval: float, now: float) -> Iterator[Record]:
    """What Cloud Run has logged for ``instance`` up to ``now``."""
    resource = _instance_resource(instance)
    labels = {"instanceId": instance.instance_id}
    yield Record(
        instance.project,
        instance.started,
        f"{instance.instance_id[:16]}-start",
        "run.googleapis.com/varlog/system",
        "cloud_run_revision",
        resource,
        labels,
        text=STARTING,
        severity="INFO",
    )
    until = min(now, instance.stopped) if instance.stopped is not None else now
    count = int((until - instance.started) / interval) if until > instance.started else 0
    for number in range(count):
        stream, text = instance.line(number)
        yield Record(
            instance.project,
            instance.started + (number + 1) * interval,
            f"{instance.instance_id[:16]}-{number:08d}",
            f"run.googleapis.com/{stream}",
            "cloud_run_revision",
            resource,
            labels,
            text=text,
            severity="ERROR" if stream == "stderr" else "DEFAULT",
        )


@dataclass
class _Quota:
    """Requests per project in the last minute (a sliding window)."""

    limit: int | None
    seen: dict[str, deque[float]] = field(default_factory=dict)

    def spend(self, project: str) -> None:
        if self.limit is None:
            return
        now = time.monotonic()
        window = self.seen.setdefault(project, deque())
        while window and window[0] <= now - 60:
            window.popleft()
        if len(window) >= self.limit:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int((60 - (now - window[0])) * 1e9))
            raise EmulatorError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "Quota exceeded for quota metric 'Read requests' and limit 'Read requests "
                f"per minute' of service 'logging.googleapis.com' for consumer '{project}'.",
                [
                    error_details_pb2.ErrorInfo(
                        reason="RATE_LIMIT_EXCEEDED",
                        domain="googleapis.com",
                        metadata={
                            "service": "logging.googleapis.com",
                            "quota_metric": "logging.googleapis.com/read_requests",
                        },
                    ),
                    error_details_pb2.RetryInfo(retry_delay=delay),
                ],
            )
        window.append(now)


class LoggingEmulator:
    def __init__(
        self,
        plumbing: Plumbing,
        run: CloudRunEmulator,
        *,
        list_quota_per_minute: int | None = None,
        tail_session_seconds: float | None = None,
    ) -> None:
        self.plumbing = plumbing
        self.run = run
        self.written: list[Record] = []
        self.quota = _Quota(list_quota_per_minute)
        self.tail_session_seconds = tail_session_seconds
        self.empty_pages = 0
        """How many empty pages (with a token) each new query returns first."""
        self.tail_sessions: dict[str, int] = {}
        self.tail_opened = 0
        self._counter = 0
        self._sessions_lock = threading.Lock()

    # -- the entries -----------------------------------------------------------------------

    def write(
        self,
        instance: Instance,
        text: str | None = None,
        *,
        json_payload: dict[str, Any] | None = None,
        stream: str = "stdout",
        at: float | None = None,
    ) -> Record:
        """Add one entry as ``instance`` would have written it (lock held or not running)."""
        self._counter += 1
        now = time.time()
        record = Record(
            instance.project,
            now if at is None else at,
            f"written-{self._counter:08d}",
            f"run.googleapis.com/{stream}",
            "cloud_run_revision",
            _instance_resource(instance),
            {"instanceId": instance.instance_id},
            text=text,
            json_payload=json_payload,
            received=now,
        )
        self.written.append(record)
        return record

    def _records(self, projects: set[str], query: lql.Query, now: float) -> Iterator[Record]:
        early = query.restricted_to(("resource.", "labels.instanceId"))
        for instance in self.run.instances:
            if instance.project in projects and early.matches(_instance_fields(instance)):
                for record in instance_records(instance, self.run.log_interval, now):
                    if query.matches(record.get):
                        yield record
        for record in self.written:
            if record.project in projects and record.received <= now and query.matches(record.get):
                yield record

    # -- ListLogEntries --------------------------------------------------------------------

    @staticmethod
    def _projects(names: Iterable[str]) -> set[str]:
        names = list(names)
        if not names:
            raise invalid("resource_names: at least one parent resource is required")
        if len(names) > MAX_RESOURCE_NAMES:
            raise invalid(f"resource_names: at most {MAX_RESOURCE_NAMES} resources")
        projects = set()
        for name in names:
            match = _PROJECT.fullmatch(name)
            if match is None:
                raise invalid(f"resource_names: {name[:80]!r} is not projects/[PROJECT_ID]")
            projects.add(match.group(1))
        return projects

    def list_log_entries(
        self, request: logging_v2.ListLogEntriesRequest
    ) -> logging_v2.ListLogEntriesResponse:
        projects = self._projects(request.resource_names)
        if request.order_by not in _ORDERS:
            raise invalid(
                f'order_by {request.order_by[:40]!r}: only "timestamp asc" and '
                '"timestamp desc" are permitted'
            )
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            raise invalid(f"page_size must be 0 to {MAX_PAGE_SIZE}, not {request.page_size}")
        query = lql.parse(request.filter)
        for project in sorted(projects):
            self.quota.spend(project)
        fingerprint = hashlib.sha256(
            json.dumps([sorted(request.resource_names), request.filter, request.order_by]).encode()
        ).hexdigest()[:16]
        cursor, empties = self._cursor(request.page_token, fingerprint)
        if empties < self.empty_pages:
            token = self._token(fingerprint, cursor, empties + 1)
            return logging_v2.ListLogEntriesResponse(entries=[], next_page_token=token)
        descending = _ORDERS[request.order_by]
        records = sorted(
            self._records(projects, query, time.time()), key=lambda r: r.key, reverse=descending
        )
        if cursor is not None:
            records = [r for r in records if (r.key < cursor if descending else r.key > cursor)]
        size = request.page_size or DEFAULT_PAGE_SIZE
        page = records[:size]
        token = self._token(fingerprint, page[-1].key, empties) if len(records) > size else ""
        return logging_v2.ListLogEntriesResponse(
            entries=[r.to_proto() for r in page], next_page_token=token
        )

    @staticmethod
    def _token(fingerprint: str, cursor: tuple[float, str] | None, empties: int) -> str:
        body = json.dumps({"q": fingerprint, "c": cursor, "e": empties}).encode()
        return base64.urlsafe_b64encode(body).decode()

    @staticmethod
    def _cursor(token: str, fingerprint: str) -> tuple[tuple[float, str] | None, int]:
        if not token:
            return None, 0
        try:
            body = json.loads(base64.urlsafe_b64decode(token.encode()))
            cursor = tuple(body["c"]) if body["c"] is not None else None
            empties = int(body["e"])
            same = body["q"] == fingerprint
        except (ValueError, KeyError, TypeError):
            raise invalid("page_token: not a token this method returned") from None
        if not same:
            raise invalid("page_token: the other parameters differ from the previous call's")
        return (float(cursor[0]), str(cursor[1])) if cursor else None, empties

    # -- TailLogEntries --------------------------------------------------------------------

    def _open_tail(
        self, request: logging_v2.TailLogEntriesRequest
    ) -> tuple[set[str], lql.Query, float]:
        projects = self._projects(request.resource_names)
        query = lql.parse(request.filter)
        window = DEFAULT_BUFFER_WINDOW
        if "buffer_window" in request:
            window_pb = logging_v2.TailLogEntriesRequest.pb(request).buffer_window
            milliseconds = window_pb.seconds * 1000 + window_pb.nanos / 1e6
            if not 0 <= milliseconds <= MAX_BUFFER_WINDOW_MS:
                raise invalid("buffer_window: valid values are between 0-60000 milliseconds")
            window = milliseconds / 1000
        with self._sessions_lock:
            for project in projects:
                if self.tail_sessions.get(project, 0) >= MAX_TAIL_SESSIONS:
                    raise EmulatorError(
                        grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"Quota exceeded: at most {MAX_TAIL_SESSIONS} open live-tailing "
                        f"sessions per project ({project}).",
                    )
            for project in projects:
                self.tail_sessions[project] = self.tail_sessions.get(project, 0) + 1
            self.tail_opened += 1
        return projects, query, window

    def _close_tail(self, projects: set[str]) -> None:
        with self._sessions_lock:
            for project in projects:
                self.tail_sessions[project] -= 1

    def tail_log_entries(
        self,
        requests: Iterator[logging_v2.TailLogEntriesRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[logging_v2.TailLogEntriesResponse]:
        first = next(requests, None)
        if first is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no TailLogEntriesRequest sent")
        resource = first.resource_names[0] if first.resource_names else ""
        fault = self.plumbing.faults.take("logging:TailLogEntries", resource)
        if fault is not None:
            context.abort_with_status(
                rpc_status.to_status(
                    fault_status(
                        fault, service="logging.googleapis.com", conflict=grpc.StatusCode.ABORTED
                    )
                )
            )
        try:
            with self.plumbing.lock:
                projects, query, window = self._open_tail(first)
        except EmulatorError as exc:
            context.abort_with_status(rpc_status.to_status(exc.status()))
        context.send_initial_metadata(())  # the session is registered: headers go out
        opened = time.time()
        sent_until = opened
        try:
            while context.is_active():
                if (
                    self.tail_session_seconds is not None
                    and time.time() - opened >= self.tail_session_seconds
                ):
                    return
                time.sleep(TAIL_TICK)
                horizon = time.time() - window
                if horizon <= sent_until:
                    continue
                with self.plumbing.lock:
                    self.plumbing.settle()
                    due = [
                        r
                        for r in self._records(projects, query, time.time())
                        if sent_until < (r.received or r.timestamp) <= horizon
                    ]
                sent_until = horizon
                if due:
                    due.sort(key=lambda r: r.key)
                    yield logging_v2.TailLogEntriesResponse(entries=[r.to_proto() for r in due])
        finally:
            self._close_tail(projects)

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        methods: dict[str, tuple[Method, Callable[[bytes], Any]]] = {
            "ListLogEntries": (
                self.list_log_entries,
                logging_v2.ListLogEntriesRequest.deserialize,
            ),
        }
        tail = grpc.stream_stream_rpc_method_handler(
            self.tail_log_entries,
            request_deserializer=logging_v2.TailLogEntriesRequest.deserialize,
            response_serializer=serialize,
        )
        return generic_handler(
            "google.logging.v2.LoggingServiceV2",
            "logging",
            self.plumbing,
            methods,
            streaming={"TailLogEntries": tail},
        )
