"""One supervised replica: a process kept running, restarted with backoff when it exits.

A single task owns the process from spawn to exit, so a stop request and a
crash can never race each other into two processes for one replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from alphaswarm_core.providers.models import InstanceStatus

from . import processes
from .containment import Containment, ReplicaTree
from .identity import ReplicaIdentity
from .launch import LaunchPlan, too_large_for_exec
from .logcapture import OutputCapture
from .logfiles import STDERR, STDOUT, ReplicaLog
from .processes import Runner
from .settings import LocalSettings

log = logging.getLogger(__name__)

PidHook = Callable[[int, int, float | None], Awaitable[None]]
"""(ordinal, pid, create_time or None when the process is gone)."""

OUTPUT_DRAIN = 2.0
"""After its processes are gone, how long a stopped replica's last output may take to arrive."""


class Replica:
    def __init__(
        self,
        service_id: str,
        ordinal: int,
        plan: LaunchPlan,
        *,
        revision: int,
        log: ReplicaLog,
        settings: LocalSettings,
        on_pid: PidHook,
        label: str,
        identity: ReplicaIdentity,
        containment: Containment,
        run: Runner,
    ) -> None:
        self.service_id = service_id
        self.ordinal = ordinal
        self.plan = plan
        self.revision = revision
        """The service revision ``plan`` is (rollout.py)."""
        self.previous: tuple[int, LaunchPlan] | None = None
        """The revision and plan of the replica this one replaced in its slot, if any."""
        self.log = log
        self._settings = settings
        self._on_pid = on_pid
        self._label = label
        self._identity = identity
        self._containment = containment
        self._run = run
        self._process: asyncio.subprocess.Process | None = None
        self._tree: ReplicaTree | None = None
        self._started_at = 0.0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.restarts = 0
        self.state = "starting"
        self.message = ""
        self.last_exit_code: int | None = None
        self.last_failure = ""
        self.started_wall: float | None = None
        """When the current process started (the kernel's create time), for started_at."""
        self.exits_in_a_row = 0
        """Exits (or failed starts) with no run of ``stable_after`` seconds in between."""
        self.start_errno: int | None = None
        """Why the last start failed (errno), None when it started."""

    # -- observed state ---------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    @property
    def ready(self) -> bool:
        pid = self.pid
        return (
            pid is not None
            and not self._stop.is_set()
            and time.monotonic() - self._started_at >= self._settings.ready_after
            and processes.running(pid)  # exited, but the loop has not heard of it yet
        )

    @property
    def failed_since_start(self) -> bool:
        return self.restarts > 0 or self.state == "backoff"

    def status(self) -> InstanceStatus:
        pid = self.pid
        state = self.state
        if state == "starting" and self.ready:
            state = "running"
        instance_id = f"{self.service_id}-{self.ordinal}"
        message = self.message
        if pid is not None:
            instance_id += f"@{pid}"
            message = f"pid {pid}, revision {self.revision}"
            if self.last_failure:
                message += f"; last exit: {self.last_failure}"
        started = self.started_wall if pid is not None else None
        return InstanceStatus(
            instance_id=instance_id,
            state=state,
            ready=self.ready,
            restarts=self.restarts,
            message=message,
            started_at=datetime.fromtimestamp(started, UTC) if started is not None else None,
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn the first process, then supervise it in a task.

        A spawn that fails (binary removed, log dir unwritable) puts the replica
        in backoff like a crash would, rather than failing the whole convergence.
        """
        try:
            await self._spawn_or_fail()
        except BaseException:
            self.kill_now()
            raise
        self._task = asyncio.create_task(
            self._supervise(), name=f"alphaswarm-local:{self.service_id}-{self.ordinal}"
        )

    async def stop(self) -> None:
        """SIGTERM, SIGKILL after the grace period; returns once no process is left and
        what they wrote is in the log."""
        self._stop.set()
        if self._task is not None:
            await asyncio.shield(self._task)
        elif self._process is not None and self._tree is not None:
            await processes.terminate(
                self._process, self._tree, self._settings.stop_grace, self._run
            )
        self.state = "stopped"
        await self.log.drained(OUTPUT_DRAIN)

    def kill_now(self) -> None:
        """For a cancelled owner or a shutdown out of time: SIGKILL the whole tree, no waiting."""
        self._stop.set()
        if self._tree is not None:
            self._tree.kill()
        if self._task is not None:
            self._task.cancel()

    async def _spawn(self) -> None:
        self.state = "starting"
        tree = self._containment.new_tree(self._label)
        try:
            with self._containment.spawning():
                spawned = await processes.spawn(
                    self.plan,
                    self.ordinal,
                    identity=self._identity,
                    tree=tree,
                    pdeathsig=self._settings.pdeathsig,
                )
                process = spawned.process
                pipes = [spawned.stdout, spawned.stderr]
                try:
                    tree.attach(process.pid)
                    for stream in (STDOUT, STDERR):
                        OutputCapture(pipes[0], self.log, process.pid, stream)
                        pipes.pop(0)
                finally:
                    for fd in pipes:  # not handed to a capture
                        os.close(fd)
        except BaseException:
            tree.kill()
            tree.release()
            raise
        self._tree = tree
        self._process = process
        self._started_at = time.monotonic()
        created = processes.create_time(process.pid)
        self.started_wall = created if created is not None else time.time()
        if created is not None:
            await self._on_pid(self.ordinal, process.pid, created)

    async def _spawn_or_fail(self) -> None:
        try:
            await self._spawn()
        except OSError as exc:
            self.exits_in_a_row += 1
            self.start_errno = exc.errno
            why = exc.strerror or str(exc)
            if exc.errno != errno.E2BIG and too_large_for_exec(self.plan, self.ordinal):
                self.start_errno = errno.E2BIG
                why = f"{why}; the environment is larger than exec allows (E2BIG)"
            self._failed(f"cannot start {self.plan.argv[0]!r}: {why}")
        else:
            self.start_errno = None

    async def _supervise(self) -> None:
        settings = self._settings
        delay = settings.backoff_initial
        try:
            while True:
                process = self._process
                if process is not None:
                    code = await self._wait_exit_or_stop(process)
                    self._process = None
                    self._tree = None
                    await self._on_pid(self.ordinal, process.pid, None)
                    if self._stop.is_set():
                        return
                    if time.monotonic() - self._started_at >= settings.stable_after:
                        delay = settings.backoff_initial
                        self.exits_in_a_row = 0
                    self.exits_in_a_row += 1
                    self.restarts += 1
                    self.last_exit_code = code
                    self._failed(processes.describe_exit(code))
                self.message = f"{self.last_failure}; restarting in {delay:.1f}s"
                log.info("replica %s-%d: %s", self.service_id, self.ordinal, self.message)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
                if self._stop.is_set():
                    return
                delay = min(delay * 2, settings.backoff_max)
                await self._spawn_or_fail()
        finally:
            if self._process is not None and self._tree is not None:
                self._tree.kill()  # cancelled mid-way: nothing of it may outlive the task
            self.state = "stopped"

    def _failed(self, why: str) -> None:
        self.state = "backoff"
        self.last_failure = why

    async def _wait_exit_or_stop(self, process: asyncio.subprocess.Process) -> int:
        exited = asyncio.ensure_future(process.wait())
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            exited.cancel()
            raise
        finally:
            stopping.cancel()
        tree = self._tree
        assert tree is not None
        if not exited.done():
            self.state = "stopping"
            return await processes.terminate(process, tree, self._settings.stop_grace, self._run)
        # The leader is gone; whatever it started goes with it.
        await processes.end_tree(tree, self._run)
        return exited.result()
