"""Child processes of the control plane: own process group, log file, bounded stop.

Each component runs in a new session (its own process group), so a Ctrl-C at
the terminal reaches pytest alone and the fixture stops the components in
order; a stop signals the whole group, waits a bounded time, then kills it.
``setpriv --pdeathsig KILL`` (util-linux) makes the kernel kill a component if
pytest itself dies without running its teardown (SIGKILL, a crash).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

STOP_GRACE = 5.0
LOG_TAIL_LINES = 40


class ComponentFailed(RuntimeError):
    """A component exited or did not become ready; the message carries its log tail."""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (a start that loses the race retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Component:
    def __init__(
        self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = dict(env) if env is not None else None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Component:
        setpriv = shutil.which("setpriv")
        prefix = [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*prefix, *self.argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
            )
        return self

    @property
    def exited(self) -> bool:
        return self.process is None or self.process.poll() is not None

    def log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def failure(self, what: str) -> ComponentFailed:
        code = None if self.process is None else self.process.poll()
        state = "running" if code is None else f"exited with {code}"
        return ComponentFailed(
            f"{self.name} {what} ({state}); last lines of {self.log.name}:\n{self.log_tail()}"
        )

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds; always reaps."""
        process = self.process
        if process is None:
            return
        self._signal_group(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
        # The group may hold children that outlive the leader: kill it either way.
        self._signal_group(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def wait_until(
    check: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    watched: Sequence[Component],
    interval: float = 0.25,
) -> None:
    """Poll ``check`` until it holds; fail early if a watched component exits."""
    deadline = time.monotonic() + timeout
    while True:
        for component in watched:
            if component.exited:
                raise component.failure(f"exited while waiting until {what}")
        try:
            if check():
                return
        except OSError:  # not listening yet, connection reset, TLS not up yet
            pass
        if time.monotonic() > deadline:
            raise watched[-1].failure(f"did not reach '{what}' within {timeout:.0f}s")
        time.sleep(interval)


def port_in_use(component: Component) -> bool:
    return "address already in use" in component.log_tail()
