"""OS process plumbing: what a replica runs, how it is spawned, how its group is ended.

Every replica is the leader of its own session (``start_new_session``), so its
pid is also its process-group id and one ``killpg`` reaches whatever it forked.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from alphaswarm_core.providers.errors import FieldViolation, InvalidSpecError
from alphaswarm_core.providers.models import DeploymentSpec, config_environment

from .settings import DEFAULT_PATH, INHERITED_ENV

log = logging.getLogger(__name__)

#: Env markers every replica carries; ``OWNER_ENV`` lets a restarted controller
#: recognise replicas of its state directory that it never got to record.
OWNER_ENV = "ALPHASWARM_LOCAL_STATE_DIR"
SERVICE_ENV = "ALPHASWARM_SERVICE_ID"
NAMESPACE_ENV = "ALPHASWARM_NAMESPACE"
REPLICA_ENV = "ALPHASWARM_REPLICA"

LOG_ROTATE_BYTES = 10 * 1024 * 1024
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class LaunchPlan:
    """Everything that decides what a replica process is; equal plans need no restart."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str | None
    fingerprint: str

    def env_for(self, ordinal: int) -> dict[str, str]:
        return {**self.env, REPLICA_ENV: str(ordinal)}


def base_env(controller_env: Mapping[str, str]) -> dict[str, str]:
    env = {key: controller_env[key] for key in INHERITED_ENV if controller_env.get(key)}
    env.setdefault("PATH", DEFAULT_PATH)
    return env


def launch_plan(
    spec: DeploymentSpec,
    config: Mapping[str, str],
    controller_env: Mapping[str, str],
    owner: str,
) -> LaunchPlan:
    """The replica environment: minimal base, then ``spec.env``, then the config, then markers."""
    env = base_env(controller_env)
    env.update(spec.env)
    env.update(config_environment(config))
    env.update({OWNER_ENV: owner, SERVICE_ENV: spec.service_id, NAMESPACE_ENV: spec.namespace})
    cwd = spec.provider_options.get("cwd") or None
    digest = hashlib.sha256(
        json.dumps([list(spec.command), sorted(env.items()), cwd]).encode()
    ).hexdigest()
    return LaunchPlan(tuple(spec.command), env, cwd, digest)


def check_runnable(spec: DeploymentSpec, plan: LaunchPlan) -> None:
    """Refuse, before anything changes, a spec this provider could never start."""
    if not spec.command:
        what = "an image alone cannot run here" if spec.image else "it is empty"
        raise InvalidSpecError.single(
            "spec.command",
            "the local provider runs commands, not images: set spec.command to the "
            f"program and its arguments ({what})",
        )
    program = spec.command[0]
    violations: list[FieldViolation] = []
    if os.sep in program:
        # A relative path is resolved after the chdir into the replica's cwd.
        path = os.path.join(plan.cwd, program) if plan.cwd else program
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            violations.append(
                FieldViolation("spec.command[0]", f"{program!r} is not an executable file")
            )
    elif shutil.which(program, path=plan.env.get("PATH", DEFAULT_PATH)) is None:
        violations.append(
            FieldViolation("spec.command[0]", f"program {program!r} not found on PATH")
        )
    if plan.cwd is not None and not os.path.isdir(plan.cwd):
        violations.append(
            FieldViolation("spec.provider_options['cwd']", f"{plan.cwd!r} is not a directory")
        )
    if violations:
        raise InvalidSpecError(violations)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _pdeathsig_hook() -> Callable[[], None]:
    """A preexec_fn making the kernel SIGKILL the child when the controller dies.

    Resolved before fork so the child only makes one libc call; if the parent
    is already gone by then, the child exits instead of running unsupervised.
    The signal follows the forking thread: spawns happen on the event loop's.
    """
    prctl = _libc().prctl
    parent = os.getpid()
    sigkill = int(signal.SIGKILL)

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return hook


def _open_log(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > LOG_ROTATE_BYTES:
            path.replace(path.with_name(path.name + ".1"))
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)


async def spawn(
    plan: LaunchPlan, ordinal: int, log_path: Path, *, pdeathsig: bool
) -> asyncio.subprocess.Process:
    """Start one replica (argv, never a shell) with its output appended to ``log_path``."""
    log_fd = _open_log(log_path)
    try:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        os.write(log_fd, f"--- {stamp} starting replica {ordinal}: {plan.argv[0]}\n".encode())
        return await asyncio.create_subprocess_exec(
            *plan.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_fd,
            stderr=asyncio.subprocess.STDOUT,
            env=plan.env_for(ordinal),
            cwd=plan.cwd,
            start_new_session=True,
            preexec_fn=_pdeathsig_hook() if pdeathsig and sys.platform == "linux" else None,
        )
    finally:
        os.close(log_fd)


def create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def signal_group(pgid: int, sig: int) -> bool:
    """Signal a replica's process group; False when no member is left."""
    if pgid <= 1 or pgid == os.getpgrp():
        return False  # never our own group, never init's
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("not allowed to signal process group %d", pgid)
        return False
    return True


def live_members(pgid: int) -> list[int]:
    """Members of a process group that are not zombies.

    Zombies count as gone: where pid 1 does not reap (some containers), an
    orphan killed by us stays a zombie forever but holds no resources.
    """
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return members


def group_alive(pgid: int) -> bool:
    return signal_group(pgid, 0) and bool(live_members(pgid))


async def wait_group_gone(pgid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def terminate(process: asyncio.subprocess.Process, grace: float) -> int:
    """SIGTERM the replica's group, SIGKILL whatever is left after ``grace``; its exit code."""
    pgid = process.pid
    deadline = time.monotonic() + grace
    signal_group(pgid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout=grace)
    except TimeoutError:
        signal_group(pgid, signal.SIGKILL)
    code = await process.wait()
    await end_group(pgid, max(0.0, deadline - time.monotonic()))
    return code


async def end_group(pgid: int, grace: float) -> None:
    """After the leader exited: give the rest of its group ``grace``, then SIGKILL it."""
    if not group_alive(pgid):
        return
    if grace > 0 and await wait_group_gone(pgid, grace):
        return
    signal_group(pgid, signal.SIGKILL)
    if not await wait_group_gone(pgid, 5.0):
        log.warning("process group %d survived SIGKILL (zombies left to their reaper?)", pgid)


def kill_group_now(pgid: int) -> None:
    """Synchronous last resort (task cancelled, interpreter shutting down)."""
    signal_group(pgid, signal.SIGKILL)


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def find_orphans(owner: str, recorded: Iterable[tuple[int, float]]) -> set[int]:
    """Process groups left by a previous run of this state directory.

    Recorded pids count only when their create time still matches (the pid may
    have been reused since); the env marker scan catches replicas spawned just
    before a crash, before their pid reached the database.
    """
    groups: set[int] = set()
    for pid, created in recorded:
        actual = create_time(pid)
        if actual is not None and abs(actual - created) < 0.5 and group_alive(pid):
            groups.add(pid)
    me = os.getpid()
    uid = os.getuid()
    for proc in psutil.process_iter(["pid", "uids"]):
        try:
            if proc.pid == me or proc.info["uids"] is None or proc.info["uids"].real != uid:
                continue
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(OWNER_ENV) == owner:
                groups.add(os.getpgid(proc.pid))
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    groups.discard(os.getpgrp())
    return groups


def kill_orphans(groups: Iterable[int], timeout: float = 5.0) -> list[int]:
    """SIGKILL each group and wait until it is gone; the groups that were signalled."""
    killed = [pgid for pgid in groups if signal_group(pgid, signal.SIGKILL)]
    deadline = time.monotonic() + timeout
    pending = set(killed)
    while pending and time.monotonic() < deadline:
        pending = {pgid for pgid in pending if group_alive(pgid)}
        if pending:
            time.sleep(0.05)
    return killed
