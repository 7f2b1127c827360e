"""OS process plumbing: what a replica runs, as whom, where, and how its tree is ended.

Every replica is the leader of its own session (``start_new_session``) and, in
the forked child before exec, joins its tree (containment.py), drops to the
replica user (identity.py) and asks to die with the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import stat
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import psutil

from alphaswarm_core.providers.errors import FieldViolation, InvalidSpecError
from alphaswarm_core.providers.models import DeploymentSpec, config_environment

from .containment import OWNER_ENV, ReplicaTree, libc
from .identity import ReplicaIdentity
from .settings import ALLOWED_COMMANDS_ENV, ALLOWED_CWDS_ENV, DEFAULT_PATH, INHERITED_ENV
from .statedir import make_private_dir, open_private

log = logging.getLogger(__name__)

T = TypeVar("T")
Runner = Callable[..., Awaitable[Any]]
"""Runs a blocking callable off the event loop (the provider's ``run_blocking``)."""

#: Env markers every replica carries; ``OWNER_ENV`` lets a restarted controller
#: recognise replicas of its state directory that it never got to record.
SERVICE_ENV = "ALPHASWARM_SERVICE_ID"
NAMESPACE_ENV = "ALPHASWARM_NAMESPACE"
REPLICA_ENV = "ALPHASWARM_REPLICA"

LOG_ROTATE_BYTES = 10 * 1024 * 1024
KILL_WAIT = 5.0
"""How long a SIGKILLed tree may take to disappear before we give up waiting."""
DEFAULT_CWD = "/"
_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38

__all__ = ["OWNER_ENV", "LaunchPlan", "LaunchPolicy"]


@dataclass(frozen=True, slots=True)
class LaunchPolicy:
    """What every replica of this server shares: its user, its base environment, the rules."""

    identity: ReplicaIdentity
    base_env: Mapping[str, str]
    owner: str
    """The state directory, as given: the marker value replicas carry."""
    state_dir: str
    """The state directory resolved: no replica may work in it."""
    allowed_commands: tuple[str, ...] = ()
    allowed_cwds: tuple[str, ...] = ()

    @classmethod
    def create(
        cls,
        identity: ReplicaIdentity,
        controller_env: Mapping[str, str],
        state_dir: Path,
        allowed_commands: tuple[str, ...] = (),
        allowed_cwds: tuple[str, ...] = (),
    ) -> LaunchPolicy:
        return cls(
            identity,
            base_env(controller_env, identity),
            str(state_dir),
            os.path.realpath(state_dir),
            allowed_commands,
            allowed_cwds,
        )


def base_env(controller_env: Mapping[str, str], identity: ReplicaIdentity) -> dict[str, str]:
    """The few variables a replica inherits, plus who it is; never the server's secrets."""
    env = {key: controller_env[key] for key in INHERITED_ENV if controller_env.get(key)}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(HOME=identity.home, USER=identity.user, LOGNAME=identity.user)
    if not identity.switch and controller_env.get("TMPDIR"):
        env["TMPDIR"] = controller_env["TMPDIR"]  # the same user: its temp dir is the replica's
    return env


@dataclass(frozen=True, slots=True)
class LaunchPlan:
    """Everything that decides what a replica process is; equal plans need no restart."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str
    fingerprint: str
    executable: str | None = None
    """The resolved file to exec, pinned when an allow-list checked it; else PATH lookup."""
    checked: bool = False
    """check_runnable passed: only such a plan may start a process."""

    def env_for(self, ordinal: int) -> dict[str, str]:
        return {**self.env, REPLICA_ENV: str(ordinal)}


def launch_plan(
    spec: DeploymentSpec, config: Mapping[str, str], policy: LaunchPolicy
) -> LaunchPlan:
    """The replica environment: minimal base, then ``spec.env``, then the config, then markers."""
    env = dict(policy.base_env)
    env.update(spec.env)
    env.update(config_environment(config))
    env.update(
        {OWNER_ENV: policy.owner, SERVICE_ENV: spec.service_id, NAMESPACE_ENV: spec.namespace}
    )
    cwd = spec.provider_options.get("cwd") or DEFAULT_CWD
    digest = hashlib.sha256(
        json.dumps([list(spec.command), sorted(env.items()), cwd]).encode()
    ).hexdigest()
    return LaunchPlan(tuple(spec.command), env, cwd, digest)


# -- what the replica's user may do -----------------------------------------------------------


def _allowed(info: os.stat_result, identity: ReplicaIdentity, bits: tuple[int, int, int]) -> bool:
    user, group, other = bits
    if identity.uid == 0:
        return info.st_mode & (user | group | other) != 0 or stat.S_ISDIR(info.st_mode)
    if info.st_uid == identity.uid:
        return bool(info.st_mode & user)
    if info.st_gid in identity.groups:
        return bool(info.st_mode & group)
    return bool(info.st_mode & other)


_EXEC = (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)


def _reachable(path: str, identity: ReplicaIdentity) -> bool:
    """Every directory above ``path`` may be searched by the replica's user."""
    parent = os.path.dirname(os.path.abspath(path))
    while True:
        try:
            info = os.stat(parent)
        except OSError:
            return False
        if not _allowed(info, identity, _EXEC):
            return False
        if parent == "/":
            return True
        parent = os.path.dirname(parent)


def _runnable_file(path: str, identity: ReplicaIdentity) -> bool:
    try:
        info = os.stat(path)
    except OSError:
        return False
    return (
        stat.S_ISREG(info.st_mode)
        and _allowed(info, identity, _EXEC)
        and _reachable(path, identity)
        and _reachable(os.path.realpath(path), identity)  # a symlink's target dirs count too
    )


def _usable_dir(path: str, identity: ReplicaIdentity) -> bool:
    try:
        info = os.stat(path)
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode)
        and _allowed(info, identity, _EXEC)
        and _reachable(path, identity)
    )


def resolve_program(program: str, cwd: str, path_env: str, identity: ReplicaIdentity) -> str | None:
    """Where exec would find ``program`` for the replica: after chdir, on its PATH, as its user."""
    if "/" in program:
        candidate = os.path.join(cwd, program)
        return candidate if _runnable_file(candidate, identity) else None
    for directory in path_env.split(":"):
        candidate = os.path.join(cwd, directory or ".", program)
        if _runnable_file(candidate, identity):
            return candidate
    return None


def _under(path: str, entries: tuple[str, ...]) -> bool:
    return any(
        path.startswith(entry) if entry.endswith("/") else path == entry for entry in entries
    )


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def require_command(spec: DeploymentSpec) -> None:
    if not spec.command:
        what = "an image alone cannot run here" if spec.image else "it is empty"
        raise InvalidSpecError.single(
            "spec.command",
            "the local provider runs commands, not images: set spec.command to the "
            f"program and its arguments ({what})",
        )


def check_runnable(spec: DeploymentSpec, plan: LaunchPlan, policy: LaunchPolicy) -> LaunchPlan:
    """Refuse, before anything changes, a spec this provider could never (or must not) start.

    Returns the plan with its working directory resolved and, under an
    allow-list, the executable pinned to the file that was checked.
    """
    require_command(spec)
    user = policy.identity.user
    violations: list[FieldViolation] = []
    cwd_field = "spec.provider_options['cwd']"
    cwd = plan.cwd
    if not os.path.isabs(cwd):
        violations.append(FieldViolation(cwd_field, f"{cwd!r} is not an absolute path"))
        raise InvalidSpecError(violations)
    cwd = os.path.realpath(cwd)
    given_cwd = bool(spec.provider_options.get("cwd"))  # the default (/) is always allowed
    if _inside(cwd, policy.state_dir):
        violations.append(FieldViolation(cwd_field, f"{plan.cwd!r} holds the server's state"))
    elif policy.allowed_cwds and given_cwd and not _under(cwd, policy.allowed_cwds):
        violations.append(FieldViolation(cwd_field, f"{plan.cwd!r} is outside {ALLOWED_CWDS_ENV}"))
    elif not _usable_dir(cwd, policy.identity):
        violations.append(
            FieldViolation(
                cwd_field, f"{plan.cwd!r} is not a directory the replica user {user} may enter"
            )
        )
    program = spec.command[0]
    found = resolve_program(program, cwd, plan.env.get("PATH", DEFAULT_PATH), policy.identity)
    executable = None
    if found is None:
        where = "is not a file" if "/" in program else "was not found on PATH as a program"
        violations.append(
            FieldViolation(
                "spec.command[0]", f"{program!r} {where} the replica user {user} may run"
            )
        )
    elif policy.allowed_commands:
        executable = os.path.realpath(found)
        if not _under(executable, policy.allowed_commands):
            violations.append(
                FieldViolation(
                    "spec.command[0]",
                    f"{program!r} is {executable!r}, which {ALLOWED_COMMANDS_ENV} does not allow",
                )
            )
    if violations:
        raise InvalidSpecError(violations)
    return replace(plan, cwd=cwd, executable=executable, checked=True)


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


def _open_log(path: Path) -> int:
    make_private_dir(path.parent)
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > LOG_ROTATE_BYTES:
            path.replace(path.with_name(path.name + ".1"))
    return open_private(path, os.O_WRONLY | os.O_APPEND)


class SpawnError(OSError):
    """The child could not be set up (its user, its cgroup) or exec failed."""


async def spawn(
    plan: LaunchPlan,
    ordinal: int,
    log_path: Path,
    *,
    identity: ReplicaIdentity,
    tree: ReplicaTree,
    pdeathsig: bool,
) -> asyncio.subprocess.Process:
    """Start one replica (argv, never a shell) with its output appended to ``log_path``."""
    log_fd = _open_log(log_path)
    try:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        os.write(log_fd, f"--- {stamp} starting replica {ordinal}: {plan.argv[0]}\n".encode())
        try:
            return await asyncio.create_subprocess_exec(
                *plan.argv,
                executable=plan.executable,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd,
                stderr=asyncio.subprocess.STDOUT,
                env=plan.env_for(ordinal),
                cwd=plan.cwd,
                start_new_session=True,
                preexec_fn=_child_setup(identity, tree.child_hook(), pdeathsig),
            )
        except subprocess.SubprocessError as exc:
            raise SpawnError(f"cannot set up the replica process: {exc}") from exc
    finally:
        os.close(log_fd)
        tree.spawned()


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
