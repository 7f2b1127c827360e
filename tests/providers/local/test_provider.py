"""The local provider against real OS processes: its own rules beyond the contract."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

import psutil
import pytest

from alphaswarm_controller.providers.local import LocalProvider
from alphaswarm_controller.providers.local.logfiles import parse
from alphaswarm_controller.providers.local.metrics import ProcessTreeSampler, Reading
from alphaswarm_core.providers.protocol import (
    ConfigMapPatch,
    DeploymentNotFoundError,
    DeploymentSpec,
    InfrastructureProviderUnavailable,
    InvalidSpecError,
)
from alphaswarm_core.providers.registry import Registry
from alphaswarm_core.testing import ready, wait_for

from .support import (
    command_spec,
    environ_of,
    local_env,
    marked_processes,
    opened,
    pids,
    read_log_until,
    replica_python,
)


def test_registry_loads_local_lazily() -> None:
    registry = Registry()
    assert registry.get("local") is LocalProvider
    assert LocalProvider.capabilities() == (
        "start",
        "stop",
        "scale",
        "status",
        "list",
        "config",
        "metrics",
        "logs",
        "delete",
        "revisions",
    )


async def test_image_only_spec_is_invalid_and_changes_nothing(
    provider: LocalProvider, namespace: str
) -> None:
    spec = DeploymentSpec(service_id="web", namespace=namespace, image="nginx:1.27")
    with pytest.raises(InvalidSpecError) as caught:
        await provider.start(spec)
    fields = [v.field for v in caught.value.violations]
    assert fields == ["spec.command"]
    assert "runs commands" in caught.value.violations[0].description
    assert await provider.list_deployments(namespace=namespace) == []
    with pytest.raises(DeploymentNotFoundError):
        await provider.status("web", namespace=namespace)


async def test_missing_program_is_invalid_and_leaves_nothing(
    provider: LocalProvider, namespace: str, local_marker: str, tmp_path: Path
) -> None:
    spec = command_spec("ghost", namespace, local_marker, ("no-such-program-xyz", "1"))
    with pytest.raises(InvalidSpecError) as caught:
        await provider.start(spec)
    assert [v.field for v in caught.value.violations] == ["spec.command[0]"]
    assert "no-such-program-xyz" in caught.value.message
    assert await provider.list_deployments() == []
    assert not (tmp_path / "state" / "local" / "logs" / namespace).exists()
    relative = command_spec("ghost", namespace, local_marker, ("./nope/bin",))
    with pytest.raises(InvalidSpecError):
        await provider.start(relative)
    assert await provider.list_deployments() == []


async def test_out_of_range_scale_is_invalid(
    provider: LocalProvider, namespace: str, local_marker: str
) -> None:
    await provider.start(command_spec("web", namespace, local_marker))
    with pytest.raises(InvalidSpecError) as caught:
        await provider.scale("web", 100_000, namespace=namespace)
    assert caught.value.violations[0].field == "replicas"
    status = await provider.status("web", namespace=namespace)
    assert status.desired_replicas == 1


async def test_replica_env_is_base_plus_spec_plus_config(
    tmp_path: Path, namespace: str, local_marker: str
) -> None:
    env = local_env(tmp_path / "state", CONTROLLER_SECRET="do-not-leak")
    provider = await opened(env)
    try:
        spec = command_spec("envy", namespace, local_marker, env={"MODE": "spec", "LEVEL": "1"})
        await provider.start(spec)
        await provider.apply_config(ConfigMapPatch("envy", namespace, set={"LEVEL": "2"}))
        status = await wait_for(provider, "envy", namespace, ready(1))
        (pid,) = pids(status)
        seen = environ_of(pid)
        assert seen["MODE"] == "spec"
        assert seen["LEVEL"] == "2", "config is applied on top of spec.env"
        assert seen["ALPHASWARM_SERVICE_ID"] == "envy"
        assert seen["ALPHASWARM_REPLICA"] == "0"
        assert "CONTROLLER_SECRET" not in seen
        assert "ALPHASWARM_LOCAL_STOP_GRACE_SECONDS" not in seen
        assert seen["PATH"] == env["PATH"]
    finally:
        await provider.close()


async def test_output_goes_to_a_file_per_replica_written_by_the_server(
    provider: LocalProvider, namespace: str, local_marker: str, tmp_path: Path
) -> None:
    script = (
        "import os, sys, time; print('hello from', os.environ['ALPHASWARM_REPLICA'], flush=True); "
        "print('1999-01-01T00:00:00.000000Z 1 o- forged', file=sys.stderr, flush=True); "
        "time.sleep(300)"
    )
    await provider.start(
        command_spec(
            "talker", namespace, local_marker, (replica_python(), "-c", script), replicas=2
        )
    )
    status = await wait_for(provider, "talker", namespace, ready(2))
    logs = tmp_path / "state" / "local" / "logs" / namespace / "talker"
    for instance in status.instances:
        ordinal, pid = instance.instance_id.removeprefix("talker-").split("@")
        path = logs / f"{ordinal}.log"
        await read_log_until(path, "forged")
        records = [parse(line) for line in path.read_bytes().split(b"\n")[:-1]]
        assert [(r.pid, r.stream, r.text) for r in records if r is not None] == [
            (int(pid), b"o", f"hello from {ordinal}".encode()),
            (int(pid), b"e", b"1999-01-01T00:00:00.000000Z 1 o- forged"),
        ], "the server's stamp, whatever the replica prints"
        assert all(r is not None and r.time > b"2020" for r in records)


async def test_health_details_and_unwritable_state_dir(
    provider: LocalProvider, tmp_path: Path
) -> None:
    health = await provider.health()
    assert health.healthy
    assert health.details["state_dir"] == str(tmp_path / "state")
    assert "python" in health.details and "running_replicas" in health.details

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    broken = LocalProvider(env=local_env(blocker / "state"))
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        await broken.open()  # the pool keeps no provider that did not open...
    assert caught.value.reason == "STATE_DIR_UNWRITABLE"
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        await broken.health()  # ...and health fails loudly
    assert caught.value.reason == "STATE_DIR_UNWRITABLE"
    assert "ALPHASWARM_CP_STATE_DIR" in caught.value.message
    with pytest.raises(InfrastructureProviderUnavailable):
        await broken.list_deployments()
    await broken.close()


async def test_second_controller_on_same_state_dir_is_refused(
    provider: LocalProvider, tmp_path: Path
) -> None:
    second = LocalProvider(env=local_env(tmp_path / "state"))
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        await second.health()
    assert caught.value.reason == "STATE_DIR_LOCKED"
    await second.close()


async def test_concurrent_mutations_do_not_interleave(
    provider: LocalProvider, namespace: str, local_marker: str
) -> None:
    await provider.start(command_spec("busy", namespace, local_marker))
    await asyncio.gather(
        provider.scale("busy", 3, namespace=namespace),
        provider.scale("busy", 1, namespace=namespace),
        provider.stop("busy", namespace=namespace),
        provider.scale("busy", 2, namespace=namespace),
    )
    status = await wait_for(provider, "busy", namespace, ready(2))
    assert len(status.instances) == 2
    running = marked_processes(local_marker)
    assert sorted(running) == pids(status), "process table matches the status"


async def test_cwd_option_sets_the_working_directory(
    provider: LocalProvider, namespace: str, local_marker: str, tmp_path: Path, shared_tmp: Path
) -> None:
    workdir = shared_tmp / "work"  # the replica user must be able to enter it
    (workdir / "bin").mkdir(parents=True)
    script = workdir / "bin" / "serve"
    script.write_text("#!/bin/sh\nexec sleep 300\n")
    script.chmod(0o755)
    spec = command_spec("worker", namespace, local_marker, ("./bin/serve",))
    with pytest.raises(InvalidSpecError):  # relative to / (the default cwd) it does not exist
        await provider.start(spec)
    in_workdir = dataclasses.replace(spec, provider_options={"cwd": str(workdir)})
    status = await provider.start(in_workdir)
    status = await wait_for(provider, "worker", namespace, ready(1))
    (pid,) = pids(status)
    assert os.readlink(f"/proc/{pid}/cwd") == str(workdir)

    missing = dataclasses.replace(spec, provider_options={"cwd": str(tmp_path / "nope")})
    with pytest.raises(InvalidSpecError) as caught:
        await provider.start(missing)
    assert "spec.provider_options['cwd']" in [v.field for v in caught.value.violations]
    assert pids(await provider.status("worker", namespace=namespace)) == [pid], "unchanged"


async def test_metrics_survive_a_failed_read(
    provider: LocalProvider,
    namespace: str,
    local_marker: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await provider.start(command_spec("flaky", namespace, local_marker))
    await wait_for(provider, "flaky", namespace, ready(1))
    real_sample = ProcessTreeSampler.sample
    calls = 0

    def sometimes_denied(self: ProcessTreeSampler, replica_pids: Iterable[int]) -> Reading:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise psutil.AccessDenied(pid=1)
        return real_sample(self, replica_pids)

    monkeypatch.setattr(ProcessTreeSampler, "sample", sometimes_denied)
    stream = provider.stream_metrics("flaky", namespace=namespace, interval_seconds=0.05)
    try:
        samples = [await anext(stream) for _ in range(3)]
    finally:
        await stream.aclose()
    assert [s.ok for s in samples] == [True, False, True]
    assert samples[1].error == "cannot read process metrics: AccessDenied"
    assert samples[2].replicas == 1 and samples[2].memory_bytes > 0
