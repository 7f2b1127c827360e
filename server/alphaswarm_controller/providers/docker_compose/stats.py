"""One engine stats stream per container, shared by every metrics subscriber.

``GET /containers/{id}/stats?stream=1`` costs the engine a cgroup read per
second per open stream, so N callers watching one service must not open N
streams per replica. The hub keeps one stream per container, reference counted:
the first subscriber opens it, the last one to leave closes it.

Each stream blocks a thread for its whole life, so streams get threads of their
own rather than slots of the bounded runner that serves short request/response
calls (a few long-lived metric watchers must never starve starts and stops).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .engine import DeadlineAPIClient

log = logging.getLogger(__name__)

#: Connect and between-frame read timeout: the engine sends a frame every second.
STREAM_TIMEOUT = (10.0, 30.0)
#: Reconnecting after a failed stream waits RECONNECT_DELAY, doubling per failure in a
#: row up to MAX_RECONNECT_DELAY: a container that is gone costs one request per 30 s.
RECONNECT_DELAY = 1.0
MAX_RECONNECT_DELAY = 30.0


@dataclass(slots=True)
class _Stream:
    container_id: str
    subscribers: int = 0
    latest: Mapping[str, Any] | None = None
    error: str = ""
    stopped: threading.Event = field(default_factory=threading.Event)
    first_frame: threading.Event = field(default_factory=threading.Event)
    response: Any = None
    thread: threading.Thread | None = None


class StatsHub:
    """Reference-counted stats streams, keyed by container id."""

    def __init__(self, api: Callable[[], DeadlineAPIClient]) -> None:
        self._api = api
        self._lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}

    def acquire(self, container_id: str) -> None:
        with self._lock:
            stream = self._streams.get(container_id)
            if stream is None:
                stream = _Stream(container_id)
                stream.thread = threading.Thread(
                    target=self._run,
                    args=(stream,),
                    name=f"docker-stats-{container_id[:12]}",
                    daemon=True,
                )
                self._streams[container_id] = stream
                stream.thread.start()
            stream.subscribers += 1

    def release(self, container_id: str) -> None:
        with self._lock:
            stream = self._streams.get(container_id)
            if stream is None:
                return
            stream.subscribers -= 1
            if stream.subscribers > 0:
                return
            del self._streams[container_id]
        # No join: release runs on the event loop, and the reader thread, woken by the
        # socket shutdown, ends on its own within moments.
        _stop(stream, join=False)

    def release_all(self, container_ids: Iterable[str]) -> None:
        for container_id in list(container_ids):
            self.release(container_id)

    def latest(self, container_id: str) -> tuple[Mapping[str, Any] | None, str]:
        """The last frame read for ``container_id`` and the last error (empty when fine)."""
        with self._lock:
            stream = self._streams.get(container_id)
        if stream is None:
            return None, "no stats stream open"
        return stream.latest, stream.error

    def wait_first(self, container_ids: Iterable[str], timeout: float) -> None:
        """Block until each stream has read a frame (or failed), at most ``timeout`` in all."""
        import time

        deadline = time.monotonic() + timeout
        for container_id in container_ids:
            with self._lock:
                stream = self._streams.get(container_id)
            if stream is not None:
                stream.first_frame.wait(max(0.0, deadline - time.monotonic()))

    def open_streams(self) -> dict[str, int]:
        """Container id -> subscriber count; what is open right now."""
        with self._lock:
            return {cid: s.subscribers for cid, s in self._streams.items()}

    def close(self) -> None:
        with self._lock:
            streams = list(self._streams.values())
            self._streams.clear()
        for stream in streams:
            _stop(stream, join=True)

    def _run(self, stream: _Stream) -> None:
        delay = RECONNECT_DELAY
        while not stream.stopped.is_set():
            try:
                # The SDK has no public way to close a stream from another thread,
                # so the request is made with its own helpers to keep the response.
                api: Any = self._api()
                response = api._get(
                    api._url("/containers/{0}/stats", stream.container_id),
                    params={"stream": True},
                    stream=True,
                    timeout=STREAM_TIMEOUT,
                )
                stream.response = response
                if stream.stopped.is_set():
                    break
                api._raise_for_status(response)
                for frame in api._stream_helper(response, decode=True):
                    if stream.stopped.is_set():
                        break
                    if not has_interval(frame):
                        continue  # a stream's first frame: no previous reading to compare
                    stream.latest = frame
                    stream.error = ""
                    stream.first_frame.set()
                    delay = RECONNECT_DELAY
                else:
                    if not stream.stopped.is_set():
                        stream.error = "the engine closed the stats stream"
            except Exception as exc:
                if stream.stopped.is_set():
                    break
                text = str(getattr(exc, "explanation", None) or exc)[:200]
                stream.error = f"reading stats failed: {text}"
                log.debug("stats stream of %s failed: %s", stream.container_id[:12], text)
            finally:
                _close_response(stream)
            stream.first_frame.set()
            stream.stopped.wait(delay)
            delay = min(MAX_RECONNECT_DELAY, delay * 2)


def _stop(stream: _Stream, *, join: bool) -> None:
    stream.stopped.set()
    _close_response(stream)
    if join and stream.thread is not None and stream.thread is not threading.current_thread():
        stream.thread.join(timeout=5)


def _close_response(stream: _Stream) -> None:
    response = stream.response
    if response is None:
        return
    # Shutting the socket down wakes the reader blocked in recv(); close() alone
    # would leave it waiting for the engine's next frame.
    with contextlib.suppress(Exception):  # best effort: the socket may already be gone
        response.raw.shutdown()
    with contextlib.suppress(Exception):
        response.close()


@dataclass(frozen=True, slots=True)
class CpuMark:
    """A container's CPU counters at one frame: its CPU time and the host's, in ns."""

    container_ns: int
    system_ns: int
    cpus: int


def has_interval(frame: Mapping[str, Any]) -> bool:
    """Whether the frame carries the previous reading CPU is measured against. The first
    frame of a stream does not (``precpu_stats`` empty, ``preread`` the zero time)."""
    return bool((frame.get("precpu_stats") or {}).get("system_cpu_usage"))


def cpu_mark(frame: Mapping[str, Any]) -> CpuMark:
    cpu = frame.get("cpu_stats") or {}
    return CpuMark(
        container_ns=int((cpu.get("cpu_usage") or {}).get("total_usage", 0)),
        system_ns=int(cpu.get("system_cpu_usage", 0)),
        cpus=_online_cpus(cpu),
    )


def cpu_percent(frame: Mapping[str, Any], since: CpuMark | None = None) -> float:
    """CPU used between ``since`` (else the frame's own previous reading) and ``frame``,
    in percent of one core (MetricSample.cpu_percent's unit: 100 = one core busy).

    The engine reports ``system_cpu_usage`` as host CPU time summed over all its CPUs,
    so container time / host time is the share of the whole host; times the number
    of online CPUs, it is the share of one core (the docker CLI's arithmetic).
    """
    now = cpu_mark(frame)
    if since is None or now.system_ns <= since.system_ns:
        pre = frame.get("precpu_stats") or {}
        since = CpuMark(
            container_ns=int((pre.get("cpu_usage") or {}).get("total_usage", 0)),
            system_ns=int(pre.get("system_cpu_usage", 0)),
            cpus=now.cpus,
        )
    if not since.system_ns:
        return 0.0  # no previous reading: no interval to measure over
    system_delta = now.system_ns - since.system_ns
    container_delta = now.container_ns - since.container_ns
    if system_delta <= 0 or container_delta < 0:
        return 0.0  # counters went back: the container restarted in between
    return container_delta / system_delta * now.cpus * 100.0


def _online_cpus(cpu: Mapping[str, Any]) -> int:
    per_cpu = (cpu.get("cpu_usage") or {}).get("percpu_usage") or []
    return int(cpu.get("online_cpus") or len(per_cpu) or 1)


def usage(frame: Mapping[str, Any]) -> tuple[int, int, int]:
    """Memory bytes, network rx and tx bytes of one stats frame.

    Memory excludes the page cache, as ``docker stats`` does (cgroup v1 ``cache``,
    v2 ``inactive_file``).
    """
    memory = frame.get("memory_stats") or {}
    details = memory.get("stats") or {}
    cache = details.get("inactive_file", details.get("total_inactive_file", details.get("cache")))
    memory_bytes = max(0, int(memory.get("usage", 0)) - int(cache or 0))
    if memory_bytes == 0:
        memory_bytes = int(memory.get("usage", 0))
    rx = tx = 0
    for interface in (frame.get("networks") or {}).values():
        rx += int(interface.get("rx_bytes", 0))
        tx += int(interface.get("tx_bytes", 0))
    return memory_bytes, rx, tx
