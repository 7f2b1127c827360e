"""The ``awslogs`` log driver of the emulated ECS tasks: their output, into moto's CloudWatch
Logs, as Docker's driver sends it for a Fargate task.

For a container whose definition says ``logConfiguration: {logDriver: awslogs, options:
{awslogs-group, awslogs-region, awslogs-stream-prefix}}``:

* when the container starts, the driver creates the stream
  ``<awslogs-stream-prefix>/<container-name>/<ecs-task-id>`` in the group (ECS developer
  guide, "Using the awslogs log driver"). The group must exist: without
  ``awslogs-create-group`` the driver does not create it, and the container fails to
  start (``CannotStartContainerError`` ... ``ResourceNotFoundException: The specified log
  group does not exist.``), which ECS counts as a task that failed to start;
* each line's timestamp is when the container wrote it; lines are sent with PutLogEvents
  every 5 s (moby ``daemon/logger/awslogs``: ``batchPublishFrequency = 5 * time.Second``),
  sooner when a batch is full (10,000 events or 1,048,576 bytes counting 26 bytes per
  event: PutLogEvents' limits, the driver's ``maximumLogEventsPerPut`` /
  ``maximumBytesPerPut``), in order, and what is left when the container stops. A
  PutLogEvents that fails (the group was deleted meanwhile) loses those lines; the task
  runs on.

The emulated program is deterministic, so tests know which lines to expect: a container
with a command writes ``<command> #<n>`` once a second while it runs (the command as a
shell shows it, ``n`` from 1); one without a command (the image's own entrypoint) writes
nothing.
"""

from __future__ import annotations

import logging
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0
LINE_SECONDS = 1.0
MAX_EVENTS_PER_PUT = 10_000
MAX_BYTES_PER_PUT = 1_048_576
PER_EVENT_BYTES = 26
MISSING_GROUP = (
    "CannotStartContainerError: ResourceInitializationError: failed to initialize logging "
    "driver: failed to create Cloudwatch log stream: ResourceNotFoundException: The "
    "specified log group does not exist."
)

Event = dict[str, Any]


@dataclass(frozen=True)
class LogTarget:
    """Where one container's output goes."""

    group: str
    stream_prefix: str
    container: str

    @classmethod
    def of(cls, container: Mapping[str, Any]) -> LogTarget | None:
        configuration = container.get("logConfiguration") or {}
        if configuration.get("logDriver") != "awslogs":
            return None
        options = configuration.get("options") or {}
        return cls(
            group=str(options.get("awslogs-group", "")),
            stream_prefix=str(options.get("awslogs-stream-prefix", "")),
            container=str(container.get("name", "")),
        )

    def stream(self, task_id: str) -> str:
        return f"{self.stream_prefix}/{self.container}/{task_id}"


@dataclass
class Batch:
    group: str
    stream: str
    events: list[Event]


@dataclass
class _Stream:
    target: LogTarget
    name: str
    text: str
    started: float
    """Wall-clock second the container started: line k is written at started + k s."""
    written: int = 0
    pending: list[Event] = field(default_factory=list)
    flushed: float = field(default_factory=time.monotonic)
    closing: bool = False


class AwsLogsDriver:
    """Every running task's driver. The ECS control plane calls ``start`` and ``stop``;
    the driver's own thread (``open``/``close``) collects and sends, every ``tick``
    seconds, whatever the control plane is doing: Docker's driver flushes each
    container's batch on a ticker of its own (moby ``daemon/logger/awslogs``,
    ``processEvents``), so a slow ECS pass never holds lines back (it did: a batch
    reached CloudWatch later than a follower's lookback, in a loaded run)."""

    def __init__(
        self,
        logs: Callable[[], Any],
        *,
        flush_seconds: float = FLUSH_SECONDS,
        line_seconds: float = LINE_SECONDS,
    ) -> None:
        self._logs = logs
        self.flush_seconds = flush_seconds
        self.line_seconds = line_seconds
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._tick = 0.05
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="awslogs-driver", daemon=True)

    def open(self, tick: float = 0.05) -> None:
        self._tick = tick
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._closed.wait(self._tick):
            try:
                self.send(self.collect())
            except Exception:  # the next tick retries, as the control plane's pass does
                log.debug("awslogs driver pass failed", exc_info=True)

    def start(self, task_arn: str, target: LogTarget, command: tuple[str, ...]) -> str:
        """Create the task's stream; the stop reason when the container cannot start."""
        name = target.stream(task_arn.rsplit("/", 1)[-1])
        try:
            self._logs().create_log_stream(logGroupName=target.group, logStreamName=name)
        except Exception as exc:  # botocore's ClientError, by code
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code == "ResourceNotFoundException":
                return MISSING_GROUP
            if code != "ResourceAlreadyExistsException":
                raise
        if command:
            with self._lock:
                self._streams[task_arn] = _Stream(target, name, shlex.join(command), time.time())
        return ""

    def stop(self, task_arn: str) -> None:
        with self._lock:
            stream = self._streams.get(task_arn)
            if stream is not None:
                self._write_due(stream, time.time())
                stream.closing = True

    def collect(self) -> list[Batch]:
        """Lines written since the last call; the batches due to be sent."""
        with self._lock:
            return self._collect()

    def _collect(self) -> list[Batch]:
        now, tick = time.time(), time.monotonic()
        batches: list[Batch] = []
        for arn, stream in list(self._streams.items()):
            if not stream.closing:
                self._write_due(stream, now)
            due = stream.closing or tick - stream.flushed >= self.flush_seconds
            while stream.pending and (due or self._full(stream.pending)):
                batch = self._take(stream)
                batches.append(Batch(stream.target.group, stream.name, batch))
            if due:
                stream.flushed = tick
            if stream.closing and not stream.pending:
                del self._streams[arn]
        return batches

    def send(self, batches: list[Batch]) -> None:
        for batch in batches:
            try:
                self._logs().put_log_events(
                    logGroupName=batch.group, logStreamName=batch.stream, logEvents=batch.events
                )
            except Exception as exc:  # the driver drops what it cannot send
                log.debug("awslogs: %s lost %d lines: %s", batch.stream, len(batch.events), exc)

    def _write_due(self, stream: _Stream, now: float) -> None:
        due = int((now - stream.started) / self.line_seconds) + 1
        while stream.written < due:
            at = stream.started + stream.written * self.line_seconds
            stream.written += 1
            stream.pending.append(
                {"timestamp": int(at * 1000), "message": f"{stream.text} #{stream.written}"}
            )

    @staticmethod
    def _size(event: Event) -> int:
        return len(str(event["message"]).encode()) + PER_EVENT_BYTES

    def _full(self, events: list[Event]) -> bool:
        return (
            len(events) >= MAX_EVENTS_PER_PUT
            or sum(self._size(e) for e in events) >= MAX_BYTES_PER_PUT
        )

    def _take(self, stream: _Stream) -> list[Event]:
        batch: list[Event] = []
        size = 0
        while stream.pending and len(batch) < MAX_EVENTS_PER_PUT:
            event_size = self._size(stream.pending[0])
            if batch and size + event_size > MAX_BYTES_PER_PUT:
                break
            batch.append(stream.pending.pop(0))
            size += event_size
        return batch
