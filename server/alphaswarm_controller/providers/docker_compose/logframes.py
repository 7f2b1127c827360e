"""The Engine's log stream, decoded: frames, timestamps and lines.

``GET /containers/{id}/logs?timestamps=1`` sends one frame per log *message*.
Without a TTY the body is multiplexed: each frame is an 8-byte header (stream
type 1 = stdout, 2 = stderr; 4-byte big-endian length) and the message; with a
TTY it is the raw messages back to back. Each message starts with its
timestamp (RFC 3339, nanoseconds) and a space.

A message is one line with its newline, except that the engine cuts a longer
line into 16 KiB pieces (moby ``daemon/logger/copier.go``, ``bufSize``) stored as
*partial* messages without a newline, and that a last line written without a
newline before the container stopped comes without one. So pieces are joined
until a newline, keeping at most ``MAX_LOG_LINE_BYTES`` of a line and whether it
was longer (``LogEntry.bounded`` marks it truncated); the rest is dropped as it
arrives, never buffered. A line keeps the timestamp of its first piece.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta

from alphaswarm_core.providers.models import MAX_LOG_LINE_BYTES, LogEntry, LogStreamKind

HEADER_BYTES = 8
#: Room for a message's timestamp and its space ("2006-01-02T15:04:05.000000000Z ").
TIMESTAMP_ROOM = 64
#: Kept of one message: a line at the limit, one byte more (it marks a longer line
#: truncated), the timestamp. The rest of a longer message is read and dropped.
KEEP_BYTES = MAX_LOG_LINE_BYTES + 1 + TIMESTAMP_ROOM
_KINDS = {0: LogStreamKind.STDOUT, 1: LogStreamKind.STDOUT, 2: LogStreamKind.STDERR}
_TIMESTAMP = re.compile(
    rb"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) "
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Appended to a line cut at the limit before ``LogEntry.bounded`` sees it: one byte
#: beyond the limit that is not a newline (which ``bounded`` would strip), so it marks
#: the entry truncated and keeps exactly the limit.
_BEYOND = b"\0"

Read = Callable[[int], bytes]


def split_timestamp(message: bytes) -> tuple[int | None, bytes]:
    """A message's timestamp in nanoseconds since the epoch (None without one) and
    the text after it."""
    match = _TIMESTAMP.match(message)
    if match is None:
        return None, message
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction = (match[7] or b"").ljust(9, b"0")
    zone = match[8]
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if zone != b"Z":
        sign = 1 if zone[:1] == b"+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds * 1_000_000_000 + int(fraction), message[match.end() :]


def to_datetime(nanoseconds: int) -> datetime:
    """The instant as a datetime (microseconds: what a datetime holds)."""
    return _EPOCH + timedelta(microseconds=nanoseconds // 1000)


def nanoseconds(moment: datetime) -> int:
    """Nanoseconds since the epoch of an aware datetime."""
    delta = moment.astimezone(UTC) - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def since_param(nanoseconds: int) -> str:
    """The engine's ``since`` (seconds.nanoseconds, inclusive) for an instant."""
    seconds, rest = divmod(nanoseconds, 1_000_000_000)
    return f"{seconds}.{rest:09d}"


def read_exactly(read: Read, size: int) -> bytes:
    """``size`` bytes, or fewer only when the stream ended."""
    chunks: list[bytes] = []
    missing = size
    while missing:
        chunk = read(missing)
        if not chunk:
            break
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def multiplexed_frames(read: Read) -> Iterator[tuple[LogStreamKind, bytes]]:
    """(stream, message) per frame of a multiplexed body, until it ends."""
    while True:
        header = read_exactly(read, HEADER_BYTES)
        if len(header) < HEADER_BYTES:
            return
        kind = _KINDS.get(header[0], LogStreamKind.STDOUT)
        length = int.from_bytes(header[4:8], "big")
        message = read_exactly(read, min(length, KEEP_BYTES))
        if len(message) < min(length, KEEP_BYTES):
            return
        left, last = length - len(message), b""
        while left:
            chunk = read_exactly(read, min(65536, left))
            if not chunk:
                return
            left -= len(chunk)
            last = chunk[-1:]
        yield kind, message + (b"\n" if last == b"\n" else b"")


def raw_messages(chunks: Iterable[bytes]) -> Iterator[tuple[LogStreamKind, bytes]]:
    """Messages of a TTY container's body (no frames), split at newlines; each kept to
    ``KEEP_BYTES``. A TTY merges stdout and stderr: the stream is not known."""
    pending = bytearray()
    for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            pending += piece[: max(0, KEEP_BYTES - len(pending))]
            if end < 0:
                break
            yield LogStreamKind.UNSPECIFIED, bytes(pending) + b"\n"
            pending.clear()
            start = end + 1
    if pending:
        yield LogStreamKind.UNSPECIFIED, bytes(pending)


class LineAssembler:
    """One replica's lines from its log messages: pieces of a line joined, bounded."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self._pending: dict[LogStreamKind, tuple[int, bytearray, bool]] = {}

    def message(self, kind: LogStreamKind, stamp: int, text: bytes) -> tuple[int, LogEntry] | None:
        """Take one message (its timestamp and text); the line it ends, if any, with the
        timestamp of the line's first piece."""
        complete = text.endswith(b"\n")
        body = text[:-1] if complete else text
        start, line, over = self._pending.pop(kind, (stamp, bytearray(), False))
        room = MAX_LOG_LINE_BYTES - len(line)
        line += body[:room]
        over = over or len(body) > room
        if not complete:
            self._pending[kind] = (start, line, over)
            return None
        return start, self._entry(kind, start, line, over)

    def flush(self) -> list[tuple[int, LogEntry]]:
        """The lines begun and not ended (the stream ended after a partial message)."""
        done = [
            (start, self._entry(kind, start, line, over))
            for kind, (start, line, over) in self._pending.items()
        ]
        self._pending.clear()
        return sorted(done, key=lambda pair: pair[0])

    def _entry(self, kind: LogStreamKind, start: int, line: bytearray, over: bool) -> LogEntry:
        data = bytes(line) + _BEYOND if over else bytes(line)
        return LogEntry.bounded(self.instance_id, to_datetime(start), data, kind)


__all__ = [
    "LineAssembler",
    "multiplexed_frames",
    "nanoseconds",
    "raw_messages",
    "read_exactly",
    "since_param",
    "split_timestamp",
    "to_datetime",
]
