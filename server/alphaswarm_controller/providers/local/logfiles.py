"""Replica logs on disk: written by the server alone, one set of files per replica slot.

Replicas never hold these files: their stdout and stderr are pipes that the server
reads (logcapture.py), so the time, the pid and the stream of every line are the
server's. A line cannot contain a newline, so nothing a replica prints can pass for
a record; each replica slot (ordinal) has files of its own, so no replica writes
where another's lines are. Sizes are bounded: a file holds at most ``log_file_bytes`` of
whole records, then it is rotated, and ``log_rotated_files`` older ones are kept.

    logs/<namespace>/<service>/<n>.log       replica n, current file
    logs/<namespace>/<service>/<n>.log.1     the one before it ... .log.K, the oldest

One record per line::

    2025-06-01T12:00:00.123456Z 4242 o- the text of the line

the UTC time the line arrived (fixed width, so records compare as bytes, and never
earlier than the record before it), the pid that wrote it, the stream (``o``
stdout, ``e`` stderr) and ``+`` when the line was cut at MAX_LOG_LINE_BYTES (``-``
otherwise).

Readers follow a slot across rotations by generation: the current file is
generation ``ReplicaLog.generation`` (counted from 0 in each run of the server),
``<n>.log.k`` is that minus k. Writes, rotations and a reader's opening of a file
by generation all happen on the event loop, so a reader never opens the wrong
file, and a file it holds open stays readable after it was rotated away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from .statedir import make_private_dir, open_private

log = logging.getLogger(__name__)

STDOUT = b"o"
STDERR = b"e"
TIME_WIDTH = len("2025-06-01T12:00:00.123456Z")
_FILE = re.compile(r"(\d{1,3})\.log(?:\.\d{1,2})?")
_WARN_EVERY = 60.0
"""Seconds between two warnings about one replica's log that cannot be written."""


def stamp(when: datetime) -> bytes:
    """``when`` in the records' fixed-width form (a naive time is taken as UTC)."""
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return (
        f"{when.year:04d}-{when.month:02d}-{when.day:02d}T{when.hour:02d}:{when.minute:02d}:"
        f"{when.second:02d}.{when.microsecond:06d}Z"
    ).encode()


@dataclass(frozen=True, slots=True)
class LogLimits:
    file_bytes: int
    rotated_files: int
    rate_bytes: int = 8 * 1024 * 1024
    """Records written per second for one slot, on average (bursts of one second's worth)."""

    @property
    def retained_bytes(self) -> int:
        """About the most one replica slot keeps on disk."""
        return self.file_bytes * (self.rotated_files + 1)


@dataclass(frozen=True, slots=True)
class Record:
    time: bytes
    pid: int
    stream: bytes
    truncated: bool
    text: bytes


def parse(line: bytes) -> Record | None:
    """The record on one line of a log file; None for anything else (a torn write)."""
    parts = line.split(b" ", 3)
    if len(parts) != 4:
        return None
    when, pid, flags, text = parts
    if (
        len(when) != TIME_WIDTH
        or not pid.isdigit()
        or len(flags) != 2
        or flags[:1] not in (STDOUT, STDERR)
    ):
        return None
    return Record(when, int(pid), flags[:1], flags[1:] == b"+", text)


@dataclass(frozen=True, order=True, slots=True)
class Position:
    """A byte offset in one generation of a slot's files."""

    generation: int
    offset: int


@dataclass(slots=True)
class Snapshot:
    """A slot's files as they were at one moment: open descriptors and where they ended."""

    log: ReplicaLog
    fds: dict[int, int] = field(default_factory=dict)
    """Generation -> a descriptor open for reading (the reader closes them)."""
    end: Position = Position(0, 0)


class Capture(Protocol):
    """A writer of a slot's log (logcapture.OutputCapture)."""

    @property
    def done(self) -> asyncio.Future[None]: ...

    def close(self) -> None: ...


class ReplicaLog:
    """The files of one replica slot: appended by its captures, read by StreamLogs calls."""

    def __init__(self, directory: Path, ordinal: int, limits: LogLimits) -> None:
        self.ordinal = ordinal
        self.path = directory / f"{ordinal}.log"
        self.limits = limits
        self.generation = 0
        self.seq = 0
        """Bumped by every append: a follower waits for it to move."""
        self.closed = False
        self._changed = asyncio.Event()
        self._fd: int | None = None
        self._size = 0
        self._last = b""
        self._captures: set[Capture] = set()
        self._warned = -_WARN_EVERY
        self._budget = float(limits.rate_bytes)
        self._refilled = -1e9  # a full budget to begin with

    # -- files ----------------------------------------------------------------------------

    def file(self, back: int) -> Path:
        """The file ``back`` rotations old (0: the current one)."""
        return self.path if back == 0 else self.path.with_name(f"{self.path.name}.{back}")

    @property
    def oldest_generation(self) -> int:
        return self.generation - self.limits.rotated_files

    def open_generation(self, generation: int) -> int | None:
        """A descriptor on that generation's file; None when it is not (or no longer) kept."""
        back = self.generation - generation
        if not 0 <= back <= self.limits.rotated_files:
            return None
        try:
            return os.open(self.file(back), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None

    def snapshot(self) -> Snapshot:
        """Every kept file, opened now, and the end of the current one."""
        snapshot = Snapshot(self, end=Position(self.generation, 0))
        try:
            for generation in range(self.oldest_generation, self.generation + 1):
                fd = self.open_generation(generation)
                if fd is not None:
                    snapshot.fds[generation] = fd
            current = snapshot.fds.get(self.generation)
            if current is not None:
                snapshot.end = Position(self.generation, os.fstat(current).st_size)
        except BaseException:
            for fd in snapshot.fds.values():
                os.close(fd)
            raise
        return snapshot

    # -- writing --------------------------------------------------------------------------

    def now(self) -> bytes:
        """The time of lines arriving now; never before the previous record's."""
        # max: when the clock stepped back, the records stay in order
        current = max(stamp(datetime.now(UTC)), self._last)
        self._last = current
        return current

    def append(self, blob: bytes) -> None:
        """Write whole records, rotating whenever the next one would not fit in the file.

        A write that fails (disk full) is undone and its lines are dropped: the
        replica is never held up by its log.
        """
        if self.closed or not blob:
            return
        wrote = False
        try:
            if self._fd is None:
                self._open()
            limit = self.limits.file_bytes
            while blob:
                room = limit - self._size
                if len(blob) <= room:
                    cut = len(blob)
                else:  # the whole records that fit
                    cut = blob.rfind(b"\n", 0, room) + 1 if room > 0 else 0
                if not cut:  # not one more record fits
                    if self._size:
                        self._rotate()
                        continue
                    cut = blob.find(b"\n") + 1 or len(blob)  # larger than a file: alone
                self._write(blob[:cut])
                wrote = True
                blob = blob[cut:]
        except OSError as exc:
            self._failed(exc)
        finally:
            if wrote:
                self.seq += 1
                self._changed.set()
                self._changed = asyncio.Event()

    def throttle(self, cost: int, now: float | None = None) -> float:
        """Charge ``cost`` bytes written to the slot's rate; how long its captures should
        wait before reading on (0: at once). Their pipes fill meanwhile, so a replica that
        writes faster is slowed down, and the server's work for its output is bounded."""
        rate = self.limits.rate_bytes
        now = time.monotonic() if now is None else now
        self._budget = min(float(rate), self._budget + (now - self._refilled) * rate) - cost
        self._refilled = now
        return 0.0 if self._budget >= 0 else -self._budget / rate

    def _open(self) -> None:
        make_private_dir(self.path.parent)
        fd = open_private(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = os.fstat(fd).st_size
        self._fd = fd

    def _rotate(self) -> None:
        self._close_fd()
        keep = self.limits.rotated_files
        if keep == 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        else:
            for back in range(keep, 1, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.file(back - 1), self.file(back))
            os.replace(self.path, self.file(1))
        self.generation += 1
        self._open()

    def _write(self, blob: bytes) -> None:
        fd = self._fd
        assert fd is not None
        view = memoryview(blob)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            with contextlib.suppress(OSError):  # no torn record for readers to trip on
                os.ftruncate(fd, self._size)
            raise
        self._size += len(blob)

    def _failed(self, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY:
            self._warned = now
            log.warning(
                "cannot write the log of replica %s (%s): its output is dropped until it can",
                self.path,
                exc.strerror or exc,
            )

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- captures and followers -----------------------------------------------------------

    def attach(self, capture: Capture) -> None:
        self._captures.add(capture)

    def detach(self, capture: Capture) -> None:
        self._captures.discard(capture)
        if not self._captures:
            self._close_fd()  # an idle slot holds no descriptor

    async def drained(self, within: float) -> None:
        """Wait (at most ``within``) for the captures to read their pipes to the end."""
        pending = [capture.done for capture in self._captures]
        if pending:
            await asyncio.wait(pending, timeout=within)
        for capture in list(self._captures):  # a pipe someone still holds: let go of it
            capture.close()

    async def changed(self, seen: int, within: float) -> None:
        """Return once ``seq`` moved past ``seen``, the log closed, or ``within`` passed."""
        if self.seq != seen or self.closed:
            return
        event = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await event.wait()

    def close(self) -> None:
        self.closed = True
        for capture in list(self._captures):
            capture.close()
        self._close_fd()
        self._changed.set()


class LogBook:
    """The logs of one service: a ReplicaLog for every slot that has (or had) files."""

    def __init__(self, directory: Path, limits: LogLimits) -> None:
        self.directory = directory
        self.limits = limits
        self.closed = False
        self.version = 0
        """Bumped when a slot is added: a follower then reads it too."""
        self._changed = asyncio.Event()
        self._logs = {n: ReplicaLog(directory, n, limits) for n in self._on_disk()}

    def _on_disk(self) -> set[int]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return set()
        return {int(found.group(1)) for found in map(_FILE.fullmatch, names) if found}

    def replica(self, ordinal: int) -> ReplicaLog:
        found = self._logs.get(ordinal)
        if found is None:
            found = self._logs[ordinal] = ReplicaLog(self.directory, ordinal, self.limits)
            self.version += 1
            self._changed.set()
            self._changed = asyncio.Event()
        return found

    def replicas(self) -> list[ReplicaLog]:
        return [self._logs[n] for n in sorted(self._logs)]

    async def changed(self, seen: int, within: float) -> None:
        if self.version != seen or self.closed:
            return
        event = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await event.wait()

    def close(self) -> None:
        """Stop every capture and wake every follower (which then ends)."""
        self.closed = True
        for replica_log in self._logs.values():
            replica_log.close()
        self._changed.set()
