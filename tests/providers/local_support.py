"""Helpers shared by the local provider's test modules."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from alphaswarm_controller.providers.local import LocalProvider
from alphaswarm_core.providers.protocol import DeploymentSpec, DeploymentStatus

from .conftest import MARKER_ENV

#: Short timings so supervision tests run in seconds; the same variables an operator sets.
FAST = {
    "ALPHASWARM_LOCAL_STOP_GRACE_SECONDS": "3",
    "ALPHASWARM_LOCAL_READY_SECONDS": "0.3",
    "ALPHASWARM_LOCAL_BACKOFF_SECONDS": "0.2",
    "ALPHASWARM_LOCAL_BACKOFF_MAX_SECONDS": "2",
    "ALPHASWARM_LOCAL_ROLLOUT_TIMEOUT_SECONDS": "20",
}


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
    deadline = time.monotonic() + within
    while any(alive(pid) for pid in pid_list):
        assert time.monotonic() < deadline, [p for p in pid_list if alive(p)]
        await asyncio.sleep(0.05)


async def opened(env: Mapping[str, str]) -> LocalProvider:
    provider = LocalProvider(env=env)
    await provider.open()
    return provider
