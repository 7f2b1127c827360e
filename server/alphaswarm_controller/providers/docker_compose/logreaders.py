"""Threads that read the engine's streams for StreamLogs: one per replica, one for events.

Each stream blocks a thread for its whole life (a follow can last hours), so, as
with the stats streams, readers get threads of their own instead of slots of the
bounded runner that serves short calls; ``ReaderSlots`` bounds how many exist in
the whole provider. A reader hands its lines to the event loop through a small
bounded buffer and *waits* when it is full: it then stops reading its socket,
and the engine's write to it blocks. So a slow StreamLogs caller slows the
engine's sending of that one stream, and the controller holds at most
``BUFFER_LINES`` lines (``BUFFER_BYTES``) per replica, never more.

``stop()`` is safe from any thread and ends the reader promptly: it wakes a reader
waiting for room and shuts the socket down under one blocked in ``recv`` (closing
the response alone would leave it waiting for the engine's next byte).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import docker.errors
import requests.exceptions
import urllib3.exceptions

from alphaswarm_core.providers.errors import (
    BackendRejectedError,
    BackendUnavailableError,
    InfrastructureProviderError,
)
from alphaswarm_core.providers.models import MAX_TAIL_LINES, LogEntry
from alphaswarm_core.providers.reasons import ErrorReason

from . import compose
from .engine import DeadlineAPIClient
from .logframes import (
    LineAssembler,
    multiplexed_frames,
    raw_messages,
    since_param,
    split_timestamp,
)

log = logging.getLogger(__name__)

#: A reader holds at most this many lines, and this many bytes of text, for the loop.
BUFFER_LINES = 256
BUFFER_BYTES = 1024 * 1024
#: Connect timeout, and the longest a stream may stay silent before it is reopened
#: (from where it stopped): a dead connection is noticed within that time, and a quiet
#: replica costs one request a minute.
STREAM_TIMEOUT = (10.0, 60.0)
#: After a failed request a stream is reopened after RECONNECT_DELAY, doubling per
#: failure in a row up to MAX_RECONNECT_DELAY.
RECONNECT_DELAY = 0.5
MAX_RECONNECT_DELAY = 30.0
#: The most a TTY container's stream is read by at once (its messages have no frames).
READ_CHUNK = 65536

Notify = Callable[[], None]
_SILENT = (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError)
_TRANSPORT = (
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    OSError,
)


class ReaderLimitReached(InfrastructureProviderError):
    """Every log reader thread this provider allows is in use."""

    reason = ErrorReason.STREAM_LIMIT


class ReaderSlots:
    """The provider-wide bound on log reader threads (replicas and event watchers)."""

    def __init__(self, limit: int, setting: str) -> None:
        self.limit = limit
        self.setting = setting
        self._free = limit
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            if self._free <= 0:
                raise ReaderLimitReached(
                    f"the controller already reads {self.limit} log streams from the Docker "
                    f"engine ({self.setting}); retry when some StreamLogs calls have ended",
                    metadata={"limit": str(self.limit)},
                )
            self._free -= 1

    def give(self) -> None:
        with self._lock:
            self._free = min(self.limit, self._free + 1)

    @property
    def in_use(self) -> int:
        with self._lock:
            return self.limit - self._free


class _Stream:
    """What a reader thread and its stopper share: the flag and the open response.

    Only the reader thread closes its response; ``stop`` (any thread) just shuts the
    socket down, which ends the reader's blocked ``recv`` with EOF. Closing it from
    the other thread as well would race with the reader inside ``http.client``.
    """

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.response: Any = None

    def stop(self) -> None:
        self.stopped.set()
        response = self.response
        if response is not None:
            with contextlib.suppress(Exception):  # best effort: the socket may be gone
                response.raw.shutdown()

    def opened(self, response: Any) -> bool:
        """Record the reader's response; False when stopped meanwhile."""
        self.response = response
        return not self.stopped.is_set()

    def close_response(self) -> None:
        """Close the response (reader thread only)."""
        response, self.response = self.response, None
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()


@dataclass(frozen=True, slots=True)
class ReadFrom:
    """Where a reader starts: the last ``tail`` retained lines, from ``since_ns`` on."""

    tail: int = MAX_TAIL_LINES
    since_ns: int = 0


class ContainerLogReader:
    """One replica's log stream (``GET /containers/{id}/logs``) into a bounded buffer.

    With ``follow`` it reads until the engine ends the stream (the container
    stopped) or it is stopped; a stream that stays silent for the read timeout, or
    breaks, is reopened from just after the last message read.
    """

    def __init__(
        self,
        api: Callable[[], DeadlineAPIClient],
        container_id: str,
        start: ReadFrom,
        *,
        follow: bool,
        notify: Notify,
        slots: ReaderSlots,
    ) -> None:
        self.container_id = container_id
        self.instance_id = container_id[:12]
        self.follow = follow
        self._api = api
        self._start = start
        self._notify = notify
        self._slots = slots
        self._stream = _Stream()
        self._room = threading.Condition()
        self._lines: deque[tuple[int, LogEntry]] = deque()
        self._bytes = 0
        self.last_ns = 0
        """Timestamp of the last message read (nanoseconds): where a reopen resumes."""
        self.last_arrival = time.monotonic()
        self.finished = False
        self.error: InfrastructureProviderError | None = None
        self.restart_pending = False
        """A start of this container was seen while this reader still ran."""
        self.thread = threading.Thread(
            target=self._run, name=f"docker-logs-{self.instance_id}", daemon=True
        )

    def start(self) -> None:
        """Start the thread; the caller took a slot for it, which the thread gives back."""
        self.thread.start()

    def stop(self) -> None:
        self._stream.stop()
        with self._room:
            self._room.notify_all()

    # -- the loop's side -----------------------------------------------------------------

    def head(self) -> tuple[int, LogEntry] | None:
        with self._room:
            return self._lines[0] if self._lines else None

    def pop(self) -> LogEntry:
        with self._room:
            _, entry = self._lines.popleft()
            self._bytes -= len(entry.text)
            self._room.notify_all()
        return entry

    def buffered(self) -> int:
        with self._room:
            return len(self._lines)

    # -- the thread ----------------------------------------------------------------------

    def _put(self, stamp: int, entry: LogEntry) -> bool:
        """Hand a line over, waiting while the buffer is full; False once stopped."""
        with self._room:
            self._room.wait_for(
                lambda: (
                    self._stream.stopped.is_set()
                    or not self._lines
                    or (len(self._lines) < BUFFER_LINES and self._bytes < BUFFER_BYTES)
                )
            )
            if self._stream.stopped.is_set():
                return False
            was_empty = not self._lines
            self._lines.append((stamp, entry))
            self._bytes += len(entry.text)
            self.last_arrival = time.monotonic()
        if was_empty:
            self._notify()
        return True

    def _run(self) -> None:
        try:
            self._read_all()
        except InfrastructureProviderError as exc:
            if not self._stream.stopped.is_set():
                self.error = exc
        except Exception as exc:  # an unexpected failure must still end the stream visibly
            if self._stream.stopped.is_set():
                return  # the socket shut down under a read: how a stop ends it
            log.exception("reading the logs of %s failed", self.instance_id)
            self.error = InfrastructureProviderError(
                f"reading the logs of {self.instance_id} failed ({type(exc).__name__})"
            )
        finally:
            self._stream.close_response()
            self.finished = True
            self._slots.give()
            self._notify()

    def _read_all(self) -> None:
        start = self._start
        delay = RECONNECT_DELAY
        tty: bool | None = None
        driver = ""
        while not self._stream.stopped.is_set():
            assembler = LineAssembler(self.instance_id)
            read_before = self.last_ns
            try:
                api = self._api()
                if tty is None:
                    detail = api.inspect_container(self.container_id)
                    tty = bool((detail.get("Config") or {}).get("Tty"))
                    driver = str(
                        ((detail.get("HostConfig") or {}).get("LogConfig") or {}).get("Type", "")
                    )
                response = self._open(api, start)
                if response is None or response.status_code == 404:
                    return  # stopped, or the container was removed meanwhile
                if response.status_code >= 400:
                    raise self._refused(response, driver)
                if self._pump(response, assembler, tty):
                    self._flush(assembler)
                return  # the engine ended the stream: all sent, or the container stopped
            except docker.errors.NotFound:
                return
            except _SILENT:
                if self._stream.stopped.is_set():
                    return
                if not self.follow:
                    raise self._broken("the engine stopped sending") from None
                delay = 0.0  # a quiet replica, not a failure: reopen at once
            except _TRANSPORT as exc:
                if self._stream.stopped.is_set():
                    return
                if not self.follow:
                    raise self._broken(str(exc)) from exc
                if self.last_ns > read_before:
                    delay = RECONNECT_DELAY  # it was working: a first failure
            finally:
                self._stream.close_response()
            self._flush(assembler)
            start = ReadFrom(MAX_TAIL_LINES, self.last_ns + 1 if self.last_ns else start.since_ns)
            if self._stream.stopped.wait(delay):
                return
            delay = min(MAX_RECONNECT_DELAY, max(RECONNECT_DELAY, delay * 2))

    def _open(self, api: DeadlineAPIClient, start: ReadFrom) -> Any:
        params: dict[str, Any] = {
            "stdout": 1,
            "stderr": 1,
            "timestamps": 1,
            "follow": 1 if self.follow else 0,
            "tail": str(start.tail),
        }
        if start.since_ns:
            params["since"] = since_param(start.since_ns)
        untyped: Any = api
        response = untyped._get(
            untyped._url("/containers/{0}/logs", self.container_id),
            params=params,
            stream=True,
            timeout=STREAM_TIMEOUT,
        )
        return response if self._stream.opened(response) else None

    def _pump(self, response: Any, assembler: LineAssembler, tty: bool) -> bool:
        """Read messages into lines until the stream ends; False when stopped."""
        raw = response.raw
        messages = (
            raw_messages(iter(lambda: raw.read1(READ_CHUNK), b""))  # as they come
            if tty
            else multiplexed_frames(raw.read)
        )
        for kind, message in messages:
            if self._stream.stopped.is_set():
                return False
            stamp, text = split_timestamp(message)
            if stamp is None:
                stamp = time.time_ns()
            self.last_ns = max(self.last_ns, stamp)
            done = assembler.message(kind, stamp, text)
            if done is not None and not self._put(*done):
                return False
        return not self._stream.stopped.is_set()

    def _flush(self, assembler: LineAssembler) -> None:
        for stamp, entry in assembler.flush():
            if not self._put(stamp, entry):
                return

    def _refused(self, response: Any, driver: str) -> InfrastructureProviderError:
        text = ""
        with contextlib.suppress(Exception):
            text = str(response.json().get("message", ""))[:300]
        if response.status_code == 501 or "does not support reading" in text:
            return BackendRejectedError(
                f"the engine cannot read the logs of {self.instance_id}: its log driver "
                f"{driver or '?'!r} does not support reading ({text}); use json-file (the "
                "default), local or journald, or keep the engine's dual logging cache on",
                metadata={"cause": "LOG_DRIVER_UNREADABLE", "driver": driver},
            )
        return InfrastructureProviderError(
            f"the engine refused the logs of {self.instance_id}: {response.status_code} {text}"
        )

    def _broken(self, detail: str) -> InfrastructureProviderError:
        return BackendUnavailableError(
            f"the log stream of {self.instance_id} broke: {detail[:200]}",
            metadata={"cause": "LOG_STREAM_BROKEN"},
        )


class EventWatcher:
    """The containers of one service that start, from the engine's event stream.

    ``on_start(container_id)`` runs for each start; ``on_resync()`` after the stream
    was reopened, since events may have been missed meanwhile (the engine replays
    only its last 256 events for ``since``). The filter (type, event, both Compose
    labels) is applied by the engine, so other services' events never reach here.
    """

    def __init__(
        self,
        api: Callable[[], DeadlineAPIClient],
        project: str,
        service: str,
        since_ns: int,
        *,
        on_start: Callable[[str], None],
        on_resync: Notify,
        slots: ReaderSlots,
    ) -> None:
        self._api = api
        self._filters = json.dumps(
            {
                "type": ["container"],
                "event": ["start"],
                "label": [f"{compose.PROJECT}={project}", f"{compose.SERVICE}={service}"],
            }
        )
        self._since_ns = since_ns
        self._on_start = on_start
        self._on_resync = on_resync
        self._slots = slots
        self._stream = _Stream()
        self.finished = False
        self.thread = threading.Thread(
            target=self._run, name=f"docker-events-{service}"[:40], daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stream.stop()

    def _run(self) -> None:
        delay = RECONNECT_DELAY
        first = True
        try:
            while not self._stream.stopped.is_set():
                try:
                    api: Any = self._api()
                    response = api._get(
                        api._url("/events"),
                        params={"since": since_param(self._since_ns), "filters": self._filters},
                        stream=True,
                        timeout=STREAM_TIMEOUT,
                    )
                    if not self._stream.opened(response):
                        return
                    api._raise_for_status(response)
                    if not first:
                        self._on_resync()
                    first = False
                    for event in api._stream_helper(response, decode=True):
                        if self._stream.stopped.is_set():
                            return
                        stamp = int(event.get("timeNano") or 0)
                        self._since_ns = max(self._since_ns, stamp + 1)
                        container_id = str(event.get("id") or "")
                        if container_id:
                            self._on_start(container_id)
                        delay = RECONNECT_DELAY
                    # The engine ended the stream (it is shutting down?): reopen it.
                except _SILENT:
                    delay = 0.0  # no event for a while: reopen at once
                except Exception as exc:  # any failure: reopen with backoff, never give up
                    if self._stream.stopped.is_set():
                        return  # the socket shut down under a read: how a stop ends it
                    log.warning("the event stream of a StreamLogs call failed: %s", exc)
                finally:
                    self._stream.close_response()
                if self._stream.stopped.wait(delay):
                    return
                delay = min(MAX_RECONNECT_DELAY, max(RECONNECT_DELAY, delay * 2))
        finally:
            self.finished = True
            self._slots.give()
