"""Run the ``alphaswarm`` CLI in a pseudo-terminal, as a person at a terminal would.

The CLI gets a pty as its controlling terminal (stdin, stdout and stderr), a
window size, and the foreground process group, so Ctrl-C typed as ``\\x03``
reaches it as SIGINT through the terminal driver, as it does for a user.
Output is read by a thread into a buffer; ``expect`` waits (bounded) for a
pattern in it.
"""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Mapping, Sequence

from tests.e2e.server_process import ServerProcess

#: Removes ANSI CSI and OSC sequences (colours, cursor movement) for reading the text.
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def plain(text: str) -> str:
    return ANSI.sub("", text).replace("\r", "")


class Terminal:
    """One CLI process on a pty of ``columns`` x ``lines``."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        columns: int = 80,
        lines: int = 24,
    ) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        self._master = master
        self.process = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**env, "COLUMNS": str(columns), "LINES": str(lines)},
            start_new_session=True,  # a session of its own, whose controlling tty is the pty
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),  # noqa: PLW1509
        )
        os.close(slave)
        self._raw = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:  # EIO once the last slave fd is closed
                return
            if not data:
                return
            with self._lock:
                self._raw.extend(data)

    @property
    def raw(self) -> str:
        with self._lock:
            return self._raw.decode("utf-8", "replace")

    @property
    def text(self) -> str:
        return plain(self.raw)

    def expect(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """The first match of ``pattern`` in the plain text, waiting for it (bounded)."""
        deadline = time.monotonic() + timeout
        compiled = re.compile(pattern, re.MULTILINE)
        while True:
            found = compiled.search(self.text)
            if found:
                return found
            if time.monotonic() > deadline or self.process.poll() is not None:
                time.sleep(0.2)  # the last output of an exited process
                found = compiled.search(self.text)
                if found:
                    return found
                raise AssertionError(
                    f"{pattern!r} did not appear (exit {self.process.poll()}):\n{self.text[-3000:]}"
                )
            time.sleep(0.05)

    def type(self, keys: str) -> None:
        os.write(self._master, keys.encode())

    def wait(self, timeout: float = 30.0) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._reader.join(5)
        os.close(self._master)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def cli_in_terminal(
    server: ServerProcess,
    *args: str,
    env: Mapping[str, str] | None = None,
    columns: int = 80,
    lines: int = 24,
) -> Terminal:
    argv = [sys.executable, "-m", "alphaswarm_client.cli", "--target", server.address, *args]
    base = {k: v for k, v in server.env.items() if k not in ("NO_COLOR", "TERM")}
    return Terminal(
        argv, {"TERM": "xterm-256color", **base, **(env or {})}, columns=columns, lines=lines
    )
