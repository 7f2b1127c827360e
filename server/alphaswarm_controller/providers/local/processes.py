"""OS process plumbing: how a replica is spawned and how its whole tree is ended.

Every replica is the leader of its own session (``start_new_session``) and, in
the forked child before exec, joins its tree (containment.py), drops to the
replica user (identity.py) and asks to die with the server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psutil

from .containment import ReplicaTree
from .identity import ReplicaIdentity
from .launch import LaunchPlan
from .proctable import libc

log = logging.getLogger(__name__)

T = TypeVar("T")
Runner = Callable[..., Awaitable[Any]]
"""Runs a blocking callable off the event loop (the provider's ``run_blocking``)."""

KILL_WAIT = 5.0
"""How long a SIGKILLed tree may take to disappear before we give up waiting."""
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38

# -- spawning ---------------------------------------------------------------------------------


def _child_setup(
    identity: ReplicaIdentity, join: Callable[[], None], pdeathsig: bool
) -> Callable[[], None]:
    """The preexec_fn: join the tree, drop to the replica user, die with the server.

    Everything is resolved before fork, so the child makes only a few system
    calls. Order matters: joining a cgroup needs the server's privileges, and
    the parent-death signal is cleared by a change of credentials, so it comes
    last. If the server is already gone by then, the child exits instead of
    running unsupervised. The signal follows the forking thread: spawns happen
    on the event loop's.
    """
    prctl = libc().prctl
    parent = os.getpid()
    sigkill = int(signal.SIGKILL)
    uid, gid, switch = identity.uid, identity.gid, identity.switch
    no_new_privs = uid != 0

    def hook() -> None:
        join()
        if switch:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        if no_new_privs:  # set-uid binaries (su, sudo) cannot hand the replica root
            prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        if pdeathsig:
            prctl(_PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
            if os.getppid() != parent:
                os._exit(1)

    return hook


class SpawnError(OSError):
    """The child could not be set up (its user, its cgroup) or exec failed."""


@dataclass(frozen=True, slots=True)
class Spawned:
    process: asyncio.subprocess.Process
    stdout: int
    """The read end of the replica's stdout pipe (the caller owns it)."""
    stderr: int


async def spawn(
    plan: LaunchPlan,
    ordinal: int,
    *,
    identity: ReplicaIdentity,
    tree: ReplicaTree,
    pdeathsig: bool,
) -> Spawned:
    """Start one replica (argv, never a shell) with its stdout and stderr on two pipes.

    The server reads the pipes (logcapture.py): a replica never holds a file of
    the state directory, so it can neither write beyond its log's bounds nor
    into anyone else's lines.
    """
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        try:
            process = await asyncio.create_subprocess_exec(
                *plan.argv,
                executable=plan.executable,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out_write,
                stderr=err_write,
                env=plan.env_for(ordinal),
                cwd=plan.cwd,
                start_new_session=True,
                preexec_fn=_child_setup(identity, tree.child_hook(), pdeathsig),
            )
        except subprocess.SubprocessError as exc:
            raise SpawnError(f"cannot set up the replica process: {exc}") from exc
    except BaseException:
        os.close(out_read)
        os.close(err_read)
        raise
    finally:
        os.close(out_write)  # the replica holds the only write ends: EOF once it is gone
        os.close(err_write)
        tree.spawned()
    return Spawned(process, out_read, err_read)


def running(pid: int) -> bool:
    """Whether ``pid`` is still a live process (not gone, not a zombie), as /proc says.

    The event loop learns of an exit only when its callback runs; under load that can
    be long enough for an exited replica to pass for ready."""
    if sys.platform != "linux":
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: trust the event loop
    return bool(fields) and fields[0] not in (b"Z", b"X")


def create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


# -- ending a tree ----------------------------------------------------------------------------


async def _call(tree: ReplicaTree, run: Runner, fn: Callable[..., T], *args: Any) -> T:
    """cgroup trees answer from one small file: on the loop; session scans read all of /proc."""
    if tree.inline:
        return fn(*args)
    result: T = await run(fn, *args)
    return result


async def _wait_gone(tree: ReplicaTree, run: Runner, within: float) -> bool:
    deadline = time.monotonic() + within
    while not await _call(tree, run, tree.gone):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def terminate(
    process: asyncio.subprocess.Process, tree: ReplicaTree, grace: float, run: Runner
) -> int:
    """SIGTERM every process of the replica, SIGKILL what is left after ``grace``.

    Returns the leader's exit code once no process of the tree is left.
    """
    await _call(tree, run, tree.signal, signal.SIGTERM)
    if not await _wait_gone(tree, run, grace):
        await _call(tree, run, tree.kill)
    code = await process.wait()
    await end_tree(tree, run)
    return code


async def end_tree(tree: ReplicaTree, run: Runner) -> None:
    """SIGKILL whatever is left of the tree, wait (bounded) until it is gone, release it."""
    if not await _call(tree, run, tree.gone):
        await _call(tree, run, tree.kill)
        if not await _wait_gone(tree, run, KILL_WAIT):
            log.warning("processes of replica tree %s survived SIGKILL", tree)
    tree.release()


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def still_running(recorded: list[tuple[int, float]]) -> list[int]:
    """Recorded pids whose create time still matches (the pid was not reused since)."""
    alive = []
    for pid, created in recorded:
        actual = create_time(pid)
        if actual is not None and abs(actual - created) < 0.5:
            alive.append(pid)
    return alive
