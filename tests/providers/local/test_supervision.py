"""Supervision guarantees of the local provider, checked against the real process table.

Crash restarts with backoff, SIGTERM-then-SIGKILL stops, one-at-a-time config
rollouts, and recovery after the controller is killed (-9) or closed. How
rollouts end (failure, deadline, rollback) is in test_rollouts.py.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from alphaswarm_core.providers.protocol import (
    ConfigMapPatch,
    DeploymentState,
    DeploymentStatus,
)
from alphaswarm_core.testing import ready, unique_name, wait_for
from alphaswarm_core.testing.contract import rollout_done

from .support import (
    alive,
    command_spec,
    environ_of,
    local_env,
    marked_processes,
    opened,
    pids,
    replica_python,
    wait_gone,
)

PY = replica_python()


async def test_crashing_replica_is_restarted_with_backoff(
    tmp_path: Path, local_marker: str
) -> None:
    # Ready needs 1.5 s of uptime, so a replica dying at 0.2 s is never ready, even
    # on a loaded machine where the interpreter starts slowly.
    env = local_env(tmp_path / "state", ALPHASWARM_LOCAL_READY_SECONDS="1.5")
    provider = await opened(env)
    namespace = unique_name("ns")
    try:
        crash = (PY, "-c", "import time; time.sleep(0.2); raise SystemExit(3)")
        await provider.start(command_spec("crashy", namespace, local_marker, crash))
        delays: set[str] = set()
        seen_pids: set[int] = set()
        states: set[DeploymentState] = set()
        deadline = time.monotonic() + 30
        status = await provider.status("crashy", namespace=namespace)
        while status.restarts < 4:
            assert time.monotonic() < deadline, status
            states.add(status.state)
            seen_pids.update(pids(status))
            (instance,) = status.instances
            if instance.state == "backoff":
                assert "exited with code 3" in instance.message
                delays.add(instance.message.rsplit("restarting in ", 1)[1])
            await asyncio.sleep(0.03)
            status = await provider.status("crashy", namespace=namespace)
        assert status.instances[0].restarts == status.restarts >= 4
        assert {"0.2s", "0.4s", "0.8s"} <= delays, f"backoff doubles: {sorted(delays)}"
        assert len(seen_pids) >= 3, "each restart is a new process"
        assert DeploymentState.DEGRADED in states
        assert DeploymentState.RUNNING not in states, "a replica that dies at 0.2 s is never ready"
    finally:
        await provider.close()
    assert marked_processes(local_marker) == []


async def test_stop_escalates_to_sigkill_and_leaves_no_process(
    tmp_path: Path, local_marker: str
) -> None:
    grace = 1.0
    env = local_env(tmp_path / "state", ALPHASWARM_LOCAL_STOP_GRACE_SECONDS=str(grace))
    provider = await opened(env)
    namespace = unique_name("ns")
    # Ignores SIGTERM, and so does its child (ignored dispositions survive exec).
    stubborn = (
        PY,
        "-c",
        "import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "subprocess.Popen(['sleep', '300']); time.sleep(300)",
    )
    try:
        await provider.start(command_spec("stubborn", namespace, local_marker, stubborn))
        status = await wait_for(provider, "stubborn", namespace, ready(1))
        (leader,) = pids(status)
        for _ in range(100):
            children = psutil.Process(leader).children(recursive=True)
            if children:
                break
            await asyncio.sleep(0.05)
        family = [leader, *(c.pid for c in children)]
        assert len(family) == 2
        assert sorted(marked_processes(local_marker)) == sorted(family)

        began = time.monotonic()
        stopped = await provider.stop("stubborn", namespace=namespace)
        took = time.monotonic() - began
        assert stopped.state is DeploymentState.STOPPED
        # The upper bound only tells a kill after the grace from none (the sleep is 300 s):
        # wide, so that a loaded two-core machine's slow signals and scans cannot flap it.
        assert grace <= took < grace + 15, f"SIGKILL after the grace period, took {took:.2f}s"
        assert not any(alive(pid) for pid in family), "leader and child are gone"
        assert marked_processes(local_marker) == []
        assert "stubborn" in {s.service_id for s in await provider.list_deployments()}
        again = await provider.stop("stubborn", namespace=namespace)
        assert again.state is DeploymentState.STOPPED
    finally:
        await provider.close()


async def test_scale_down_stops_highest_ordinals(tmp_path: Path, local_marker: str) -> None:
    provider = await opened(local_env(tmp_path / "state"))
    namespace = unique_name("ns")
    try:
        await provider.start(command_spec("web", namespace, local_marker, replicas=3))
        three = await wait_for(provider, "web", namespace, ready(3))
        by_ordinal = {i.instance_id.split("@")[0]: i for i in three.instances}
        assert sorted(by_ordinal) == ["web-0", "web-1", "web-2"]
        keep = by_ordinal["web-0"].instance_id
        await provider.scale("web", 1, namespace=namespace)
        one = await wait_for(provider, "web", namespace, ready(1))
        assert [i.instance_id for i in one.instances] == [keep]
        assert marked_processes(local_marker) == pids(one)
    finally:
        await provider.close()


async def test_apply_config_rolls_one_replica_at_a_time(tmp_path: Path, local_marker: str) -> None:
    provider = await opened(local_env(tmp_path / "state"))
    namespace = unique_name("ns")
    try:
        await provider.start(command_spec("roll", namespace, local_marker, replicas=2))
        before = pids(await wait_for(provider, "roll", namespace, ready(2)))

        samples: list[list[int]] = []

        async def observe() -> None:
            while True:
                samples.append(marked_processes(local_marker))
                await asyncio.sleep(0.01)

        observer = asyncio.create_task(observe())
        try:
            applied = await provider.apply_config(
                ConfigMapPatch("roll", namespace, set={"GREETING": "hello"})
            )
            await wait_for(provider, "roll", namespace, rollout_done(2))
        finally:
            observer.cancel()
        after_status = await wait_for(provider, "roll", namespace, ready(2))
        after = pids(after_status)

        assert applied.version == "2"
        assert not set(after) & set(before), "every replica was restarted"
        assert all(environ_of(pid)["GREETING"] == "hello" for pid in after)
        assert len(samples) > 5
        assert min(len(sample) for sample in samples) >= 1, "never zero replicas running"
        # One at a time: an old and a new replica were alive together at some point,
        # and there was never a moment with both old ones gone before a new one came up.
        mixed = [s for s in samples if set(s) & set(before) and set(s) & set(after)]
        assert mixed, "the second old replica outlived the first new one"
        assert marked_processes(local_marker) == after
    finally:
        await provider.close()


_CONTROLLER = r"""
import asyncio, json, sys
from alphaswarm_controller.providers.local import LocalProvider
from alphaswarm_core.providers.protocol import DeploymentSpec

async def main() -> None:
    env, spec = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    provider = LocalProvider(env=env)
    await provider.open()
    await provider.start(DeploymentSpec(
        service_id=spec["service_id"], namespace=spec["namespace"],
        command=tuple(spec["command"]), env=spec["env"], replicas=2))
    while True:
        status = await provider.status(spec["service_id"], namespace=spec["namespace"])
        if status.ready_replicas == 2:
            break
        await asyncio.sleep(0.05)
    print(json.dumps(sorted(int(i.instance_id.split("@")[1]) for i in status.instances)),
          flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def _run_and_kill_controller(
    env: dict[str, str], namespace: str, marker: str, command: tuple[str, ...] = ("sleep", "300")
) -> list[int]:
    """Start a 2-replica deployment from a controller in a subprocess, then kill -9 it."""
    spec = {
        "service_id": "survivor",
        "namespace": namespace,
        "command": list(command),
        "env": {"ALPHASWARM_TEST_MARKER": marker},
    }
    controller = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CONTROLLER,
        json.dumps(env),
        json.dumps(spec),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert controller.stdout is not None
        line = await asyncio.wait_for(controller.stdout.readline(), timeout=60)
        old = [int(pid) for pid in json.loads(line)]
        assert len(old) == 2 and all(alive(pid) for pid in old)
        assert set(old) <= set(marked_processes(marker))
    finally:
        controller.send_signal(signal.SIGKILL)
        await controller.wait()
    return old


async def _reopen_and_converge(
    env: dict[str, str], namespace: str, marker: str, old: list[int]
) -> DeploymentStatus:
    provider = await opened(env)
    try:
        assert not any(alive(pid) for pid in old), "open() killed the previous run's replicas"
        listed = await provider.list_deployments(namespace=namespace)
        assert [s.service_id for s in listed] == ["survivor"]
        status = await wait_for(provider, "survivor", namespace, ready(2))
        new = pids(status)
        assert len(new) == 2 and not set(new) & set(old)
        assert sorted(marked_processes(marker)) == new, "exactly the new replicas run"
        return status
    finally:
        await provider.close()


@pytest.mark.parametrize("pdeathsig", ["1", "0"], ids=["pdeathsig", "no-pdeathsig"])
async def test_recovery_after_controller_is_killed(
    tmp_path: Path, local_marker: str, pdeathsig: str
) -> None:
    env = local_env(tmp_path / "state", ALPHASWARM_LOCAL_PDEATHSIG=pdeathsig)
    namespace = unique_name("ns")
    old = await _run_and_kill_controller(env, namespace, local_marker)
    if pdeathsig == "1":
        await wait_gone(old, within=5)  # the kernel killed them with the controller
    else:
        await asyncio.sleep(0.5)
        assert all(alive(pid) for pid in old), "without PDEATHSIG they are orphans now"
    status = await _reopen_and_converge(env, namespace, local_marker, old)
    print(f"recovery ({pdeathsig=}): old pids {old} -> new pids {pids(status)}")
    assert marked_processes(local_marker) == []


async def test_graceful_close_and_reopen_converges(tmp_path: Path, local_marker: str) -> None:
    env = local_env(tmp_path / "state")
    namespace = unique_name("ns")
    first = await opened(env)
    try:
        await first.start(command_spec("steady", namespace, local_marker, replicas=2))
        old = pids(await wait_for(first, "steady", namespace, ready(2)))
        config = await first.apply_config(ConfigMapPatch("steady", namespace, set={"K": "v"}))
        await first.scale("steady", 3, namespace=namespace)
        await first.start(command_spec("idle", namespace, local_marker))
        await first.stop("idle", namespace=namespace)
        old = pids(await wait_for(first, "steady", namespace, ready(3)))
    finally:
        await first.close()
    assert not any(alive(pid) for pid in old), "close() stops every replica"
    assert marked_processes(local_marker) == []

    second = await opened(env)
    try:
        listed = {s.service_id: s for s in await second.list_deployments(namespace=namespace)}
        assert set(listed) == {"steady", "idle"}
        assert listed["idle"].state is DeploymentState.STOPPED
        status = await wait_for(second, "steady", namespace, ready(3))
        new = pids(status)
        assert not set(new) & set(old)
        assert all(environ_of(pid)["K"] == "v" for pid in new)
        assert (await second.get_config("steady", namespace=namespace)).version == config.version
        print(f"graceful reopen: old pids {old} -> new pids {new}")
    finally:
        await second.close()


async def test_metrics_include_children_of_a_replica(tmp_path: Path, local_marker: str) -> None:
    provider = await opened(local_env(tmp_path / "state"))
    namespace = unique_name("ns")
    parent = (
        PY,
        "-c",
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
        "'b = bytearray(64 * 2**20); import time; time.sleep(300)']); time.sleep(300)",
    )
    try:
        await provider.start(command_spec("family", namespace, local_marker, parent))
        await wait_for(provider, "family", namespace, ready(1))
        stream = provider.stream_metrics("family", namespace=namespace, interval_seconds=0.1)
        try:
            async with asyncio.timeout(30):
                async for sample in stream:
                    if sample.ok and sample.memory_bytes > 64 * 2**20:
                        break
        finally:
            await stream.aclose()
        assert sample.replicas == 1
        assert sample.extra["replica_0_rss_bytes"] == sample.memory_bytes
    finally:
        await provider.close()


async def test_recovery_kills_what_replicas_forked(tmp_path: Path, local_marker: str) -> None:
    """PDEATHSIG reaches only the replica itself; its children are found by their env marker."""
    env = local_env(tmp_path / "state")
    namespace = unique_name("ns")
    forking = ("sh", "-c", "sleep 300 & wait")
    old = await _run_and_kill_controller(env, namespace, local_marker, forking)
    await wait_gone(old, within=5)
    orphans = marked_processes(local_marker)
    assert len(orphans) == 2, "each replica's child outlived its parent"
    provider = await opened(env)
    try:
        assert not any(alive(pid) for pid in orphans), "open() killed the orphaned children"
        status = await wait_for(provider, "survivor", namespace, ready(2))
        assert not set(pids(status)) & set(old)
        print(f"forked children: orphans {orphans} killed; new replicas {pids(status)}")
    finally:
        await provider.close()
