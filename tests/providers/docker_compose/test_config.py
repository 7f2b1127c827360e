"""Definitions and config kept on the engine; rolling config changes and their roll-back."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import docker

from alphaswarm_controller.providers.docker_compose import DockerComposeProvider, compose
from alphaswarm_core.providers.protocol import (
    ConfigMapPatch,
    DeploymentState,
    RolloutState,
)
from alphaswarm_core.testing import SpecFactory, ready, wait_for
from tests.fakes.docker_images import IDLE_COMMAND
from tests.providers.docker_compose.support import (
    provider_env,
)

# -- state on the engine, rolling config ----------------------------------------------------


async def test_definition_and_config_survive_a_controller_restart(
    spec_factory: SpecFactory,
    namespace: str,
    busybox_image: str,
) -> None:
    first = DockerComposeProvider(env=provider_env())
    await first.start(spec_factory("svc", namespace, replicas=1, env={"A": "1"}))
    await wait_for(first, "svc", namespace, ready(1))
    applied = await first.apply_config(ConfigMapPatch("svc", namespace, set={"K": "v"}))
    await first.scale("svc", 0, namespace=namespace)
    await first.close()

    second = DockerComposeProvider(env=provider_env())
    try:
        config = await second.get_config("svc", namespace=namespace)
        assert (config.data, config.version) == ({"K": "v"}, applied.version)
        assert (await second.status("svc", namespace=namespace)).state is DeploymentState.STOPPED
        await second.scale("svc", 1, namespace=namespace)
        status = await wait_for(second, "svc", namespace, ready(1))
        assert status.image == busybox_image
    finally:
        await second.close()


async def test_apply_config_rolls_one_replica_at_a_time(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    docker_api: docker.APIClient,
) -> None:
    await provider.start(spec_factory("roll", namespace, replicas=2))
    before = await wait_for(provider, "roll", namespace, ready(2))
    lowest_ready: list[int] = []
    done = asyncio.Event()

    running = {"label": [f"{compose.PROJECT}={namespace}", f"{compose.SERVICE}=roll"]}

    async def watch() -> None:
        while not done.is_set():
            entries = await asyncio.to_thread(docker_api.containers, filters=running)
            lowest_ready.append(len(entries))
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    try:
        applied = await provider.apply_config(
            ConfigMapPatch("roll", namespace, set={"GREETING": "hi"})
        )
    finally:
        done.set()
        await watcher
    assert applied.data == {"GREETING": "hi"}
    assert min(lowest_ready) >= 1, "a 2-replica service never drops to zero while rolling"
    assert max(lowest_ready) <= 3, "one replica at a time: never more than one extra"
    after = await wait_for(provider, "roll", namespace, ready(2))
    assert not {i.instance_id for i in after.instances} & {i.instance_id for i in before.instances}
    for n in (1, 2):
        env = docker_api.inspect_container(f"{namespace}-roll-{n}")["Config"]["Env"]
        assert "GREETING=hi" in env


async def test_a_config_that_does_not_run_fails_its_rollout(
    provider: DockerComposeProvider, spec_factory: SpecFactory, namespace: str
) -> None:
    picky = replace(
        spec_factory("picky", namespace, replicas=2),
        command=("/bin/sh", "-c", f'[ "$MODE" = broken ] && exit 3; {IDLE_COMMAND}'),
    )
    await provider.start(picky)
    before = await wait_for(provider, "picky", namespace, ready(2))
    initial = await provider.get_config("picky", namespace=namespace)

    # The change is recorded (revision 2, the config the caller asked for); its first
    # replacement crash-loops, so the old replica comes back and the rollout stops.
    applied = await provider.apply_config(
        ConfigMapPatch("picky", namespace, set={"MODE": "broken"})
    )
    assert applied.data == {"MODE": "broken"} and applied.version != initial.version
    failed = await provider.status("picky", namespace=namespace)
    assert failed.rollout is not None and failed.rollout.state is RolloutState.FAILED
    assert (failed.revision, failed.observed_revision) == (2, 1)
    assert failed.rollout.reason == "CRASH_LOOP", failed.rollout
    assert {i.instance_id for i in failed.instances} == {i.instance_id for i in before.instances}
    assert failed.ready_replicas == 2, "the replicas of revision 1 keep serving"

    # The same spec again, now with auto_rollback: it retries revision 2's rollout (no
    # new revision), which fails again, and rolls back to revision 1 as revision 3.
    await provider.start(replace(picky, auto_rollback=True))
    back = await provider.status("picky", namespace=namespace)
    assert back.rollout is not None and back.rollout.state is RolloutState.SUCCEEDED
    assert (back.revision, back.observed_revision) == (3, 3)
    newest = (await provider.list_revisions("picky", namespace=namespace))[0]
    assert (newest.number, newest.rollback_of, newest.automatic) == (3, 1, True)
    assert "revision 2 failed (CRASH_LOOP)" in newest.change_cause
    restored = await provider.get_config("picky", namespace=namespace)
    assert "MODE" not in restored.data, "the config of revision 1 is back"
    after = await wait_for(provider, "picky", namespace, ready(2))
    assert {i.instance_id for i in after.instances} == {i.instance_id for i in before.instances}, (
        "revision 3 runs what revision 1 ran: nothing to replace"
    )


async def test_health_check_decides_readiness(
    provider: DockerComposeProvider, spec_factory: SpecFactory, namespace: str
) -> None:
    base = spec_factory("hc", namespace)
    healthy = replace(
        base, provider_options={"healthcheck": "test -d /bin", "healthcheck_interval": "2"}
    )
    # Start waits for the first passing health check, as `docker compose up --wait` does.
    first = await provider.start(healthy)
    assert first.ready_replicas == 1
    assert first.rollout is not None and first.rollout.state is RolloutState.SUCCEEDED

    sick = replace(
        base,
        service_id="sick",
        provider_options={
            "healthcheck": "test -d /nonexistent",
            "healthcheck_interval": "0.3",
            "healthcheck_retries": "1",
        },
        # Long enough for the engine's first check (0.3 s after the container started) to
        # have run on a loaded machine: a 3 s deadline could pass while its health was
        # still "starting" (seen in the lowest-versions job beside the main run).
        progress_deadline_seconds=10,
    )
    status = await provider.start(sick)
    assert (status.desired_replicas, status.ready_replicas) == (1, 0)
    assert status.rollout is not None and status.rollout.state is RolloutState.FAILED
    assert status.rollout.reason == "PROGRESS_DEADLINE_EXCEEDED", status.rollout
    assert "unhealthy" in status.rollout.message
    assert status.state is DeploymentState.FAILED, "no replica is ready and the rollout failed"
    assert "unhealthy" in status.message
