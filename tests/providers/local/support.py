"""Helpers shared by the local provider's test modules (and the end-to-end ones)."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import sqlite3
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path

import psutil

from alphaswarm_controller.providers.local import LocalProvider
from alphaswarm_controller.providers.local import identity as identities
from alphaswarm_controller.providers.local.containment import replica_cgroup_root
from alphaswarm_controller.providers.local.launch import resolve_program
from alphaswarm_controller.providers.local.logfiles import parse
from alphaswarm_controller.providers.local.settings import LocalSettings
from alphaswarm_core.providers.protocol import DeploymentSpec, DeploymentStatus
from tests.waiting import until

MARKER_ENV = "ALPHASWARM_TEST_MARKER"


def marked_processes(marker: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries ``marker``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(MARKER_ENV) == marker:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


#: Short timings so supervision tests run in seconds; the same variables an operator sets.
FAST = {
    "ALPHASWARM_LOCAL_STOP_GRACE_SECONDS": "3",
    "ALPHASWARM_LOCAL_READY_SECONDS": "0.3",
    "ALPHASWARM_LOCAL_BACKOFF_SECONDS": "0.2",
    "ALPHASWARM_LOCAL_BACKOFF_MAX_SECONDS": "2",
}


@functools.cache
def replica_python() -> str:
    """A Python the default replica user may run.

    Under root, replicas run as an unprivileged user, which may not reach the
    interpreter running the tests (e.g. one under /root): take the first that
    the provider itself would accept for that user.
    """
    env = local_env(Path("/nonexistent"))
    identity = identities.resolve(LocalSettings.from_env(env), env)
    candidates = [sys.executable, shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")]
    for candidate in candidates:
        if candidate and resolve_program(candidate, "/", env["PATH"], identity):
            return candidate
    raise AssertionError(f"no Python that {identity.describe()} may run: {candidates}")


def local_env(state_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "ALPHASWARM_CP_STATE_DIR": str(state_dir),
        **FAST,
        **extra,
    }


def command_spec(
    service_id: str,
    namespace: str,
    marker: str,
    command: tuple[str, ...] = ("sleep", "300"),
    *,
    replicas: int = 1,
    env: Mapping[str, str] | None = None,
) -> DeploymentSpec:
    return DeploymentSpec(
        service_id=service_id,
        namespace=namespace,
        command=command,
        env={**(env or {}), MARKER_ENV: marker},
        replicas=replicas,
    )


def pids(status: DeploymentStatus) -> list[int]:
    """Replica pids from instance ids (``<service>-<ordinal>@<pid>``)."""
    return sorted(
        int(instance.instance_id.rsplit("@", 1)[1])
        for instance in status.instances
        if "@" in instance.instance_id
    )


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


async def wait_gone(pid_list: list[int], within: float = 10.0) -> None:
    await until(
        lambda: [p for p in pid_list if alive(p)],
        f"processes {pid_list} gone",
        holds=lambda living: not living,
        within=within,
        every=0.05,
    )


async def opened(env: Mapping[str, str]) -> LocalProvider:
    provider = LocalProvider(env=env)
    await provider.open()
    return provider


# -- attack helpers: process trees that try to escape, and what /proc says about a process ------


def sleep_tokens(count: int) -> list[str]:
    """Durations no other process on the machine uses, so ``sleep <token>`` identifies one."""
    tag = uuid.uuid4().int % 10**6
    return [f"{1000 + index}.{tag:06d}" for index in range(count)]


def escaping_tree(tokens: list[str], *, clear_env: bool = True) -> tuple[str, ...]:
    """A replica that ignores SIGTERM and leaves its session every way a shell can.

    tokens[0]: ``setsid`` child; tokens[1]: ``env -i setsid`` child (no marker left);
    tokens[2]: double fork (its parent exits at once); tokens[3]: the leader.
    SIG_IGN survives fork and exec, so every one of them ignores SIGTERM.
    """
    a, b, c, d = tokens
    anonymous = f"env -i setsid sleep {b} & " if clear_env else f"setsid sleep {b} & "
    script = f"trap '' TERM; setsid sleep {a} & {anonymous}(setsid sleep {c} &); exec sleep {d}"
    return ("sh", "-c", script)


def sleepers(token: str) -> list[int]:
    """Live processes running ``sleep <token>``."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.info["cmdline"] == ["sleep", token] and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def all_sleepers(tokens: list[str]) -> dict[str, list[int]]:
    return {token: sleepers(token) for token in tokens}


def proc_status(pid: int) -> dict[str, str]:
    """/proc/<pid>/status as a dict (Uid, Gid, Groups, NoNewPrivs, ...)."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def log_text(path: Path) -> str:
    """The lines of a replica log file, without the server's record headers (logfiles.py)."""
    if not path.exists():
        return ""
    records = (parse(line) for line in path.read_bytes().split(b"\n"))
    return "".join(record.text.decode() + "\n" for record in records if record is not None)


async def read_log_until(path: Path, marker: str, within: float = 30.0) -> str:
    """The replica's log once it contains ``marker`` (a bounded poll; fails otherwise)."""
    return await until(
        lambda: log_text(path),
        f"{marker!r} in {path}",
        holds=lambda text: marker in text,
        within=within,
        every=0.05,
    )


def replica_cgroups(state_dir: Path) -> list[Path]:
    """Groups the local provider of ``state_dir`` left (it makes them beside our own cgroup)."""
    base = replica_cgroup_root(str(state_dir))
    if base is None or not base.exists():
        return []
    return [base, *(path for path in base.iterdir() if path.is_dir())]


# -- what the machine holds of a service, read without the provider ------------------------------

#: A replica that writes a stdout line every 0.2 s and a stderr line every fifth time.
TALKER = (
    "sh",
    "-c",
    'i=0; while :; do i=$((i+1)); echo "line $i"; '
    'if [ $((i % 5)) -eq 0 ]; then echo "warning $i" >&2; fi; sleep 0.2; done',
)


#: A replica that exits at once (status 3), after one line on stderr.
CRASHER = ("sh", "-c", "echo 'cannot start: missing setting' >&2; exit 3")


def machine_leftovers(state_dir: Path, service_id: str, namespace: str) -> list[str]:
    """What this machine still holds of a local service: processes carrying its markers,
    cgroups of its replicas, rows in the state database (read with sqlite3 itself) and
    its log files."""
    found = []
    owner = str(state_dir)
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            env = proc.environ()
        except psutil.Error:
            continue
        if (
            env.get("ALPHASWARM_LOCAL_STATE_DIR") == owner
            and env.get("ALPHASWARM_SERVICE_ID") == service_id
            and env.get("ALPHASWARM_NAMESPACE") == namespace
        ):
            found.append(f"process {proc.pid}")
    base = replica_cgroup_root(owner)
    if base is not None and base.exists():
        prefix = f"{namespace}.{service_id}."
        found += [f"cgroup {group}" for group in base.iterdir() if group.name.startswith(prefix)]
    database = state_dir / "local" / "state.sqlite3"
    if database.exists():
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            for table in ("deployments", "replicas"):
                (rows,) = db.execute(
                    f"SELECT count(*) FROM {table} WHERE namespace = ? AND service_id = ?",
                    (namespace, service_id),
                ).fetchone()
                if rows:
                    found.append(f"{rows} row(s) in {table}")
    logs = state_dir / "local" / "logs" / namespace / service_id
    if logs.exists():
        found.append(f"log directory {logs}: {sorted(p.name for p in logs.iterdir())}")
    return found
