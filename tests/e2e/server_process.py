"""Start the real ``alphaswarm-server`` as a subprocess on port 0 for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

LISTENING = re.compile(r"listening on (\S+):(\d+)")
REPO = Path(__file__).resolve().parents[2]


@dataclass
class ServerProcess:
    """A running server: its address, environment, state dir and captured log."""

    process: subprocess.Popen[str]
    address: str
    env: dict[str, str]
    state_dir: Path
    log_lines: list[str] = field(default_factory=list)
    pump: threading.Thread | None = None

    @property
    def log(self) -> str:
        return "".join(self.log_lines)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the exit; returns its code once ``log`` holds every line the server
        wrote. The lines come in on a thread of their own, which can still be behind when
        the exit is seen."""
        code = self.process.wait(timeout)
        if self.pump is not None:
            self.pump.join(timeout)  # the pipe ends when the server (and its children) close it
        return code

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.wait(10)


SERVER_COMMAND = (sys.executable, "-m", "alphaswarm_controller")


def server_env(state_dir: Path, extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a test server: port 0, its own state dir, a short grace."""
    return {
        **os.environ,
        "ALPHASWARM_CP_LISTEN": "127.0.0.1:0",
        "ALPHASWARM_CP_STATE_DIR": str(state_dir),
        "ALPHASWARM_CP_SHUTDOWN_GRACE_SECONDS": "5",
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }


def start_server(
    state_dir: Path,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    *,
    user: tuple[int, int] | None = None,
) -> ServerProcess:
    """``user`` (uid, gid): run the server as that unprivileged user (tests/e2e/as_user.py)."""
    env = server_env(state_dir, extra_env)
    command: tuple[str, ...] = SERVER_COMMAND
    if user is not None:
        command = (sys.executable, "-m", "tests.e2e.as_user", str(user[0]), str(user[1]))
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines: list[str] = []
    found: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            match = LISTENING.search(line)
            if match and not found:
                found.append(f"{match.group(1)}:{match.group(2)}")
                ready.set()
        ready.set()

    pumping = threading.Thread(target=pump, daemon=True)
    pumping.start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.1):
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("server did not report its address:\n" + "".join(lines))
    if not found:
        raise RuntimeError("server exited before listening:\n" + "".join(lines))
    return ServerProcess(process, found[0], env, state_dir, lines, pumping)
