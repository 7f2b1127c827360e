"""Revisions and rollouts on the real engine: numbers two controllers agree on, failures
with their reasons, rollbacks the replicas really run, a bounded history."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import docker
import pytest

from alphaswarm_controller.providers.docker_compose import (
    DockerComposeProvider,
    compose,
    definitions,
    history,
)
from alphaswarm_controller.providers.docker_compose.rollouts import RolloutRecord
from alphaswarm_core.call import making_change
from alphaswarm_core.providers.protocol import (
    BackendConflictError,
    ChangeRequest,
    ConfigMapPatch,
    DeploymentState,
    DeploymentStatus,
    ResourceNotFoundError,
    RevisionConflict,
    RevisionNotFound,
    RolloutState,
)
from alphaswarm_core.testing import SpecFactory, ready, wait_for
from tests.fakes.docker_images import IDLE_COMMAND
from tests.providers.docker_compose.support import call_deadline

#: A command that exits at once with code 3.
CRASH = ("/bin/sh", "-c", "exit 3")
#: Far above what the calls bounded here take, far below "never".
BOUND = 120.0


def container_env(api: docker.APIClient, namespace: str, service: str) -> list[dict[str, str]]:
    """``Config.Env`` of each of the service's containers, read from the engine."""
    found = api.containers(
        all=True,
        filters={"label": [f"{compose.PROJECT}={namespace}", f"{compose.SERVICE}={service}"]},
    )
    envs = []
    for entry in sorted(found, key=lambda c: c["Names"][0]):
        env = api.inspect_container(entry["Id"])["Config"]["Env"] or []
        envs.append(dict(item.split("=", 1) for item in env))
    return envs


def succeeded(revision: int) -> Callable[[DeploymentStatus], bool]:
    def check(status: DeploymentStatus) -> bool:
        return (
            status.revision == revision
            and status.rollout is not None
            and status.rollout.state is RolloutState.SUCCEEDED
        )

    return check


async def test_two_controllers_on_one_engine_agree_on_revisions(
    spec_factory: SpecFactory, namespace: str, engine_env: dict[str, str]
) -> None:
    first = DockerComposeProvider(env=engine_env)
    second = DockerComposeProvider(env=engine_env)
    try:
        with making_change(ChangeRequest(change_cause="deploy a")):
            one = await first.start(spec_factory("svc", namespace, env={"MODE": "a"}))
        with making_change(ChangeRequest(change_cause="level 2")):
            await second.apply_config(ConfigMapPatch("svc", namespace, set={"LEVEL": "2"}))
        with making_change(ChangeRequest(change_cause="deploy b")):
            three = await first.start(spec_factory("svc", namespace, env={"MODE": "b"}))
        assert (one.revision, three.revision) == (1, 3)
        seen = [await p.list_revisions("svc", namespace=namespace) for p in (first, second)]
        assert seen[0] == seen[1], "both read the history from the engine"
        assert [(r.number, r.change_cause) for r in seen[0]] == [
            (3, "deploy b"),
            (2, "level 2"),
            (1, "deploy a"),
        ]
        assert seen[0][1].config == {"LEVEL": "2"} and seen[0][2].config == {}
        assert (await second.status("svc", namespace=namespace)).revision == 3

        # Both plan against revision 3 and change at once: the definition's
        # compare-and-swap lets exactly one of them make revision 4.
        async def change(provider: DockerComposeProvider, mode: str) -> DeploymentStatus:
            with making_change(ChangeRequest(expected_revision=3)):
                return await provider.start(spec_factory("svc", namespace, env={"MODE": mode}))

        results = await asyncio.gather(
            change(first, "c"), change(second, "d"), return_exceptions=True
        )
        won = [r for r in results if isinstance(r, DeploymentStatus)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and len(lost) == 1, results
        assert isinstance(lost[0], RevisionConflict), lost[0]
        assert won[0].revision == 4
        newest = (await second.list_revisions("svc", namespace=namespace))[0]
        assert newest.number == 4
        running = await wait_for(first, "svc", namespace, succeeded(4))
        assert running.observed_revision == 4
    finally:
        await first.close()
        await second.close()


async def test_a_crashing_command_is_a_crash_loop_within_its_deadline(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    docker_api: docker.APIClient,
) -> None:
    await provider.start(spec_factory("web", namespace, replicas=2))
    before = await wait_for(provider, "web", namespace, succeeded(1))
    crashing = replace(
        spec_factory("web", namespace, replicas=2), command=CRASH, progress_deadline_seconds=60
    )
    status = await asyncio.wait_for(provider.start(crashing), BOUND)
    rollout = status.rollout
    assert rollout is not None and rollout.state is RolloutState.FAILED, status
    assert rollout.reason == "CRASH_LOOP"
    assert "exited 3 times in a row" in rollout.message and "exit code 3" in rollout.message
    assert rollout.finished_at is not None
    assert rollout.finished_at - rollout.started_at < timedelta(seconds=60), "before the deadline"
    assert (status.revision, status.observed_revision) == (2, 1)
    assert status.state is DeploymentState.RUNNING, "revision 1 keeps serving"
    assert {i.instance_id for i in status.instances} == {i.instance_id for i in before.instances}
    conditions = {c.type: c for c in status.conditions}
    assert conditions["Available"].status is True
    assert (conditions["Progressing"].status, conditions["Progressing"].reason) == (
        False,
        "CRASH_LOOP",
    )
    assert all("MODE" not in env for env in container_env(docker_api, namespace, "web"))

    # A first start of a crashing command has nothing to keep: its replicas stay, failing.
    alone = await provider.start(replace(crashing, service_id="alone", replicas=1))
    assert alone.rollout is not None and alone.rollout.reason == "CRASH_LOOP"
    assert alone.state is DeploymentState.FAILED
    restarts = docker_api.inspect_container(f"{namespace}-alone-1")["RestartCount"]
    assert restarts >= 2, "the engine really restarted it (3 exits)"


async def test_a_missing_image_fails_the_rollout_and_keeps_the_replicas(
    provider: DockerComposeProvider, spec_factory: SpecFactory, namespace: str
) -> None:
    await provider.start(spec_factory("web", namespace))
    before = await wait_for(provider, "web", namespace, succeeded(1))
    missing = replace(
        spec_factory("web", namespace),
        image="alphaswarm-test/not-built:1",
        provider_options={"pull": "never"},
    )
    status = await provider.start(missing)
    assert status.rollout is not None and status.rollout.state is RolloutState.FAILED
    assert status.rollout.reason == "IMAGE_PULL_FAILED"
    assert "alphaswarm-test/not-built:1" in status.rollout.message
    assert (status.revision, status.observed_revision) == (2, 1)
    assert {i.instance_id for i in status.instances} == {i.instance_id for i in before.instances}
    assert (await provider.definition("web", namespace=namespace)).spec.image == missing.image

    # A scale needs the desired revision's image too: it says so.
    with pytest.raises(ResourceNotFoundError):
        await provider.scale("web", 2, namespace=namespace)

    # A brand-new service with a missing image is refused, and nothing is kept.
    with pytest.raises(ResourceNotFoundError):
        await provider.start(replace(missing, service_id="fresh"))
    assert [s.service_id for s in await provider.list_deployments(namespace=namespace)] == ["web"]


async def test_auto_rollback_after_a_missing_image(
    provider: DockerComposeProvider, spec_factory: SpecFactory, namespace: str
) -> None:
    await provider.start(spec_factory("web", namespace, env={"MODE": "good"}))
    before = await wait_for(provider, "web", namespace, succeeded(1))
    missing = replace(
        spec_factory("web", namespace),
        image="alphaswarm-test/not-built:1",
        provider_options={"pull": "never"},
        auto_rollback=True,
    )
    with making_change(ChangeRequest(change_cause="try v2")):
        status = await provider.start(missing)
    assert (status.revision, status.observed_revision) == (3, 3)
    assert status.rollout is not None and status.rollout.state is RolloutState.SUCCEEDED
    newest, failed, first = await provider.list_revisions("web", namespace=namespace)
    assert (newest.rollback_of, newest.automatic, newest.spec.env) == (1, True, {"MODE": "good"})
    assert newest.change_cause == "auto_rollback: revision 2 failed (IMAGE_PULL_FAILED)"
    assert (failed.change_cause, failed.spec.image) == ("try v2", missing.image)
    assert first.number == 1
    assert {i.instance_id for i in status.instances} == {i.instance_id for i in before.instances}


async def test_rollback_restores_the_earlier_environment_in_the_containers(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    docker_api: docker.APIClient,
) -> None:
    await provider.start(spec_factory("web", namespace, replicas=2, env={"MODE": "a"}))
    await wait_for(provider, "web", namespace, succeeded(1))
    await provider.apply_config(ConfigMapPatch("web", namespace, set={"LEVEL": "2"}))
    await provider.start(spec_factory("web", namespace, replicas=2, env={"MODE": "b"}))
    await wait_for(provider, "web", namespace, succeeded(3))
    assert [(e["MODE"], e["LEVEL"]) for e in container_env(docker_api, namespace, "web")] == [
        ("b", "2"),
        ("b", "2"),
    ]
    with pytest.raises(RevisionNotFound):
        await provider.rollback("web", 7, namespace=namespace)

    with making_change(ChangeRequest(change_cause="undo b")):
        rolled = await provider.rollback("web", 1, namespace=namespace)
    assert (rolled.revision, rolled.observed_revision) == (4, 4)
    assert rolled.rollout is not None and rolled.rollout.state is RolloutState.SUCCEEDED
    envs = container_env(docker_api, namespace, "web")
    assert [e["MODE"] for e in envs] == ["a", "a"] and all("LEVEL" not in e for e in envs)
    labels = [
        docker_api.inspect_container(f"{namespace}-web-{n}")["Config"]["Labels"] for n in (1, 2)
    ]
    assert [label[compose.REVISION] for label in labels] == ["4", "4"]
    assert (await provider.get_config("web", namespace=namespace)).data == {}

    # 0 rolls back to the one before the current: revision 3 (MODE b, LEVEL 2).
    again = await provider.rollback("web", 0, namespace=namespace)
    assert again.revision == 5
    envs = container_env(docker_api, namespace, "web")
    assert [(e["MODE"], e["LEVEL"]) for e in envs] == [("b", "2"), ("b", "2")]
    newest = (await provider.list_revisions("web", namespace=namespace))[:2]
    assert [(r.number, r.rollback_of, r.change_cause) for r in newest] == [
        (5, 3, ""),
        (4, 1, "undo b"),
    ]


async def test_history_is_bounded_on_the_engine(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    docker_api: docker.APIClient,
) -> None:
    await provider.start(spec_factory("web", namespace, replicas=0))
    for n in range(2, 13):  # revisions 2..12 (a stopped service rolls out at once)
        await provider.start(spec_factory("web", namespace, replicas=0, env={"N": str(n)}))
    kept = await provider.list_revisions("web", namespace=namespace)
    assert [r.number for r in kept] == list(range(12, 2, -1)), "the newest HISTORY"
    assert len(kept) == history.HISTORY
    records = docker_api.volumes(
        filters={"label": [history.RECORD, f"{definitions.PROJECT}={namespace}"]}
    )
    assert len(records["Volumes"]) == history.HISTORY - 1, "the current one is the definition"
    with pytest.raises(RevisionNotFound):
        await provider.rollback("web", 2, namespace=namespace)
    await provider.delete("web", namespace=namespace)
    left = docker_api.volumes(filters={"label": f"{definitions.PROJECT}={namespace}"})
    assert left["Volumes"] == [], "delete removes the history too"


async def test_scale_and_the_same_spec_make_no_revision(
    provider: DockerComposeProvider, spec_factory: SpecFactory, namespace: str
) -> None:
    await provider.start(spec_factory("web", namespace, replicas=1))
    await provider.scale("web", 3, namespace=namespace)
    await wait_for(provider, "web", namespace, ready(3))
    await provider.start(spec_factory("web", namespace, replicas=2))
    # Only the rollout policy changes: stored, but the same revision.
    status = await provider.start(
        replace(spec_factory("web", namespace, replicas=2), progress_deadline_seconds=30)
    )
    assert status.revision == 1 and status.observed_revision == 1
    assert [r.number for r in await provider.list_revisions("web", namespace=namespace)] == [1]
    assert (
        await provider.definition("web", namespace=namespace)
    ).spec.progress_deadline_seconds == 30
    with making_change(ChangeRequest(expected_revision=2)), pytest.raises(RevisionConflict):
        await provider.stop("web", namespace=namespace)
    assert (await provider.status("web", namespace=namespace)).desired_replicas == 2


async def test_one_shot_replicas_that_exit_0_complete_their_rollout(
    provider: DockerComposeProvider, spec_factory: SpecFactory, namespace: str
) -> None:
    job = replace(
        spec_factory("job", namespace, replicas=2),
        command=("/bin/sh", "-c", "echo done"),
        provider_options={"restart": "no"},
    )
    status = await asyncio.wait_for(provider.start(job), BOUND)
    assert status.rollout is not None and status.rollout.state is RolloutState.SUCCEEDED
    done = await wait_for(provider, "job", namespace, lambda s: s.state is DeploymentState.STOPPED)
    assert (done.desired_replicas, done.ready_replicas) == (2, 0)
    assert "2/2 replicas completed" in done.message
    assert all("completed" in i.message for i in done.instances)
    assert {c.type: c.status for c in done.conditions} == {"Available": True, "Progressing": True}

    # Under restart "always" the same exits are a crash loop.
    looping = replace(job, service_id="looping", provider_options={"restart": "always"})
    failed = await asyncio.wait_for(provider.start(looping), BOUND)
    assert failed.rollout is not None and failed.rollout.reason == "CRASH_LOOP"


async def test_the_calls_deadline_ends_a_rollout_that_would_outlive_it(
    provider: DockerComposeProvider, spec_factory: SpecFactory, namespace: str
) -> None:
    await provider.start(spec_factory("web", namespace))
    before = await wait_for(provider, "web", namespace, succeeded(1))
    never_healthy = replace(
        spec_factory("web", namespace),
        provider_options={"healthcheck": "false", "healthcheck_interval": "1"},
    )
    with call_deadline(12.0):
        status = await asyncio.wait_for(provider.start(never_healthy), BOUND)
    assert status.rollout is not None and status.rollout.state is RolloutState.FAILED
    assert status.rollout.reason == "PROGRESS_DEADLINE_EXCEEDED"
    assert "call's deadline" in status.rollout.message
    assert status.observed_revision == 1 and status.ready_replicas == 1
    assert {i.instance_id for i in status.instances} == {i.instance_id for i in before.instances}


async def test_a_writer_that_read_long_ago_cannot_take_a_generation_freed_since(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    docker_api: docker.APIClient,
) -> None:
    # Creating generation N+1 is the compare-and-swap, and pruning frees the name again:
    # a writer that read N before two others' writes used to create N+1 anew and win.
    await provider.start(spec_factory("web", namespace))
    await wait_for(provider, "web", namespace, succeeded(1))
    api = provider._client()
    stale = definitions.read(api, namespace, "web")
    assert stale is not None
    first = definitions.write(api, replace(stale, env={"W": "1"}))
    second = definitions.write(api, replace(first, env={"W": "2"}))  # first's name is free
    with pytest.raises(BackendConflictError):
        definitions.write(api, replace(stale, env={"W": "stale"}))
    now = definitions.read(api, namespace, "web")
    assert now is not None and (now.generation, dict(now.env)) == (second.generation, {"W": "2"})
    volumes = docker_api.volumes(
        filters={"label": [definitions.KIND, f"{definitions.PROJECT}={namespace}"]}
    )["Volumes"]
    assert [v["Labels"][definitions.GENERATION] for v in volumes] == [str(second.generation)]


async def test_a_rollout_its_controller_left_is_failed_after_its_deadline(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    docker_api: docker.APIClient,
) -> None:
    await provider.start(spec_factory("web", namespace))
    await wait_for(provider, "web", namespace, succeeded(1))
    # As a controller that died right after recording revision 2's rollout leaves it.
    head = definitions.read(provider._client(), namespace, "web")
    assert head is not None
    stale = RolloutRecord(
        2, RolloutState.IN_PROGRESS, datetime.now(UTC) - timedelta(seconds=120), 30.0
    )
    definitions.write(provider._client(), replace(head.as_next_revision("x"), rollout=stale))
    status = await provider.status("web", namespace=namespace)
    assert status.revision == 2 and status.observed_revision == 1
    assert status.rollout is not None and status.rollout.state is RolloutState.FAILED
    assert status.rollout.reason == "PROGRESS_DEADLINE_EXCEEDED"
    # Starting the desired spec again finishes it (the same revision).
    retried = await provider.start(spec_factory("web", namespace))
    assert retried.rollout is not None and retried.rollout.state is RolloutState.SUCCEEDED
    assert (retried.revision, retried.observed_revision) == (2, 2)
    volumes = docker_api.volumes(
        filters={"label": [definitions.KIND, f"{definitions.PROJECT}={namespace}"]}
    )["Volumes"]
    (stored,) = volumes
    body = json.loads(stored["Labels"][definitions.BODY])
    assert body["rollout"]["state"] == "succeeded" and body["last_good"] == 2


async def test_a_definition_from_before_revisions_is_revision_1(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    docker_api: docker.APIClient,
) -> None:
    await provider.start(spec_factory("old", namespace, replicas=0))
    current = definitions.read(provider._client(), namespace, "old")
    assert current is not None
    body = json.loads(current.to_body())
    body["schema"] = 2
    for key in ("revision", "policy", "rollout", "last_good"):
        body.pop(key)
    docker_api.create_volume(
        definitions.volume_name(namespace, "old", current.generation + 1),
        driver="local",
        labels={
            definitions.KIND: "1",
            definitions.PROJECT: namespace,
            definitions.SERVICE: "old",
            definitions.GENERATION: str(current.generation + 1),
            definitions.BODY: json.dumps(body),
        },
    )
    legacy = await provider.status("old", namespace=namespace)
    assert (legacy.revision, legacy.rollout) == (1, None)
    (only,) = await provider.list_revisions("old", namespace=namespace)
    assert only.number == 1 and only.created_at.year >= 2024, "made when its volume was"
    changed = await provider.start(spec_factory("old", namespace, replicas=1, env={"A": "1"}))
    assert changed.revision == 2
    assert [r.number for r in await provider.list_revisions("old", namespace=namespace)] == [2, 1]


async def test_another_controller_sees_a_rollout_in_progress(
    spec_factory: SpecFactory, namespace: str, engine_env: dict[str, str]
) -> None:
    first = DockerComposeProvider(env=engine_env)
    second = DockerComposeProvider(env=engine_env)
    try:
        await first.start(spec_factory("web", namespace))
        await wait_for(first, "web", namespace, succeeded(1))
        # Healthy only once a file exists, which the replica writes after a few seconds
        # (at the root: the image, FROM scratch, has no /tmp).
        slow = replace(
            spec_factory("web", namespace, env={"MODE": "slow"}),
            command=("/bin/sh", "-c", f"sleep 4; touch /ready; {IDLE_COMMAND}"),
            provider_options={"healthcheck": "test -f /ready", "healthcheck_interval": "0.5"},
            progress_deadline_seconds=60,
        )
        change = asyncio.create_task(first.start(slow))
        try:
            seen = await wait_for(
                second,
                "web",
                namespace,
                lambda s: s.rollout is not None and s.rollout.state is RolloutState.IN_PROGRESS,
            )
        finally:
            done = await asyncio.wait_for(change, BOUND)
        assert (seen.revision, seen.observed_revision) == (2, 1)
        assert "rolling out revision 2" in seen.message
        progressing = {c.type: (c.status, c.reason) for c in seen.conditions}["Progressing"]
        assert progressing == (True, "RolloutInProgress")
        assert done.rollout is not None and done.rollout.state is RolloutState.SUCCEEDED
        after = await second.status("web", namespace=namespace)
        assert (after.revision, after.observed_revision) == (2, 2)
    finally:
        await first.close()
        await second.close()
