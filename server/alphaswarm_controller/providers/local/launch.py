"""What a replica runs, as whom, where and with which environment; what it may not run.

A plan is checked before anything changes: ``command[0]`` is resolved as the
replica would resolve it (after the chdir, on its PATH, as its user), then
through symlinks and ``..``, and held against the allow-lists; the working
directory likewise. Everything here reads the filesystem but starts nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from alphaswarm_core.providers.errors import FieldViolation, InvalidSpecError
from alphaswarm_core.providers.models import DeploymentSpec, config_environment

from .identity import ReplicaIdentity
from .proctable import OWNER_ENV
from .settings import ALLOWED_COMMANDS_ENV, ALLOWED_CWDS_ENV, DEFAULT_PATH, INHERITED_ENV

#: Env markers every replica carries (with ``OWNER_ENV``, which lets a restarted
#: server recognise replicas of its state directory that it never got to record).
SERVICE_ENV = "ALPHASWARM_SERVICE_ID"
NAMESPACE_ENV = "ALPHASWARM_NAMESPACE"
REPLICA_ENV = "ALPHASWARM_REPLICA"

DEFAULT_CWD = "/"


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


OPTIONS = ("cwd",)
"""provider_options keys the local provider understands."""


_POINTER = 8


def too_large_for_exec(plan: LaunchPlan, ordinal: int) -> bool:
    """Whether argv and environment together exceed what exec hands to a process
    (``ARG_MAX``: a quarter of the stack limit on Linux). exec then fails with E2BIG,
    which a PATH search may report as another error of an earlier directory."""
    try:
        limit = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError):
        return False
    strings = [*plan.argv, *(f"{k}={v}" for k, v in plan.env_for(ordinal).items())]
    return sum(len(text.encode()) + 1 + _POINTER for text in strings) > limit


def require_command(spec: DeploymentSpec) -> None:
    if not spec.command:
        what = "an image alone cannot run here" if spec.image else "it is empty"
        raise InvalidSpecError.single(
            "spec.command",
            "the local provider runs commands, not images: set spec.command to the "
            f"program and its arguments ({what})",
        )
    unsupported = unsupported_fields(spec)
    if unsupported:
        raise InvalidSpecError(unsupported)


def unsupported_fields(spec: DeploymentSpec) -> list[FieldViolation]:
    """What a spec asks that this provider would otherwise silently ignore: unknown options,
    published ports (replicas bind what they like on the host) and resource limits (not
    enforced on plain processes). Refused, so nobody believes they are in force."""
    found = [
        FieldViolation(
            f"spec.provider_options[{key!r}]",
            f"unknown option; the local provider accepts {', '.join(OPTIONS)}",
        )
        for key in spec.provider_options
        if key not in OPTIONS
    ]
    if spec.ports:
        found.append(
            FieldViolation("spec.ports", "the local provider publishes no ports: leave it empty")
        )
    for name in ("cpu", "memory"):
        if getattr(spec.resources, name):
            found.append(
                FieldViolation(
                    f"spec.resources.{name}",
                    "the local provider does not enforce limits on processes: leave it empty",
                )
            )
    return found


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
