"""The server's end of a replica's stdout and stderr: pipes read on the event loop.

Each read (at most READ_BYTES) is cut into lines, stamped with the time it arrived,
the pid and the stream, and appended to the replica's log at once (logfiles.py):
nothing waits in the server's memory but the unfinished last line, whatever the
replica writes. A line longer than MAX_LOG_LINE_BYTES keeps its first
MAX_LOG_LINE_BYTES, is marked truncated, and the rest of it is dropped as it
arrives. When the server is busy the pipe fills and the replica's writes wait:
output is slowed down, not lost and not buffered without bound.
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
        if data:
            self._feed(data)
        else:
            self.close()

    def _feed(self, data: bytes) -> None:
        if self._discarding:
            cut = data.find(b"\n")
            if cut < 0:
                return
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
        self._write(lines)

    def _write(self, lines: list[bytes]) -> None:
        if lines:
            for blob in self._blobs(lines, self._log.now()):
                self._log.append(blob)

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
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        if self._partial:
            self._write([self._partial])
            self._partial = b""
        self._log.detach(self)
        self._done.set_result(None)
