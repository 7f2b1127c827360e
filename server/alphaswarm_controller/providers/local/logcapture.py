"""The server's end of a replica's stdout and stderr: pipes read on the event loop.

Each read (at most READ_BYTES) is cut into lines, stamped with the time it arrived,
the pid and the stream, and appended to the replica's log at once (logfiles.py):
nothing waits in the server's memory but the unfinished last line, whatever the
replica writes. A line longer than MAX_LOG_LINE_BYTES keeps its first
MAX_LOG_LINE_BYTES, is marked truncated, and the rest of it is dropped as it
arrives. Each slot may write ``rate_bytes`` of records a second on average
(logfiles.ReplicaLog.throttle): beyond that, and whenever the server is busy, the
capture stops reading for a while, the pipe fills and the replica's writes wait.
Output is slowed down, not lost and not buffered without bound, and a replica
cannot make the server spend more than its share on its output.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator

from alphaswarm_core.providers.models import MAX_LOG_LINE_BYTES

from .logfiles import ReplicaLog

log = logging.getLogger(__name__)

READ_BYTES = 64 * 1024
BATCH_LINES = 2048
"""Lines per write (the log splits a write at its size limit)."""


class OutputCapture:
    """One pipe of one replica process, read until every writer of it is gone."""

    def __init__(self, fd: int, replica_log: ReplicaLog, pid: int, stream: bytes) -> None:
        self._fd = fd
        self._log = replica_log
        self._tag = b" %d %s" % (pid, stream)
        self._partial = b""
        self._discarding = False
        """In the middle of a line that was cut: drop bytes until its newline."""
        self._paused: asyncio.TimerHandle | None = None
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._done: asyncio.Future[None] = loop.create_future()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._readable)
        replica_log.attach(self)

    @property
    def done(self) -> asyncio.Future[None]:
        return self._done

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, READ_BYTES)
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("reading the output of replica %s failed: %s", self._log.path, exc)
            data = b""
        if not data:
            self.close()
            return
        pause = self._log.throttle(self._feed(data))
        if pause > 0:
            self._loop.remove_reader(self._fd)
            self._paused = self._loop.call_later(pause, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if not self._done.done():
            self._loop.add_reader(self._fd, self._readable)

    def _feed(self, data: bytes) -> int:
        """Write the lines completed by ``data``; the bytes written."""
        if self._discarding:
            cut = data.find(b"\n")
            if cut < 0:
                return 0
            data = data[cut + 1 :]
            self._discarding = False
        if self._partial:
            data = self._partial + data
        lines = data.split(b"\n")
        rest = lines.pop()
        self._partial = b""
        if len(rest) > MAX_LOG_LINE_BYTES:  # its head is kept now, the rest dropped
            lines.append(rest)
            self._discarding = True
        else:
            self._partial = rest
        return self._write(lines)

    def _write(self, lines: list[bytes]) -> int:
        written = 0
        if lines:
            for blob in self._blobs(lines, self._log.now()):
                self._log.append(blob)
                written += len(blob)
        return written

    def _blobs(self, lines: list[bytes], when: bytes) -> Iterator[bytes]:
        whole = when + self._tag + b"- "
        cut = when + self._tag + b"+ "
        for first in range(0, len(lines), BATCH_LINES):
            batch = lines[first : first + BATCH_LINES]
            if max(map(len, batch)) <= MAX_LOG_LINE_BYTES:
                yield whole + (b"\n" + whole).join(batch) + b"\n"
            else:
                yield b"".join(
                    whole + line + b"\n"
                    if len(line) <= MAX_LOG_LINE_BYTES
                    else cut + line[:MAX_LOG_LINE_BYTES] + b"\n"
                    for line in batch
                )

    def close(self) -> None:
        """End of the output (or the owner gives up on it): keep an unfinished last line."""
        if self._done.done():
            return
        if self._paused is not None:
            self._paused.cancel()
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        if self._partial:
            self._write([self._partial])
            self._partial = b""
        self._log.detach(self)
        self._done.set_result(None)
