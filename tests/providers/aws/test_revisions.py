"""ECS revisions and rollouts beyond the contract: the exact failure reasons ECS's tasks
and events give, the provider's own crash-loop and deadline judgement (which ECS's circuit
breaker does not make), two controllers on one service, and the history setting.

Against moto behind the AWS front with the emulated ECS control plane
(tests/fakes/ecs_control.py): its rules and their sources are listed there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest

from alphaswarm_controller.providers.aws import EcsProvider
from alphaswarm_controller.providers.aws.taskdef import service_name
from alphaswarm_core.call import making_change
from alphaswarm_core.providers.models import ChangeRequest
from alphaswarm_core.providers.protocol import (
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    RevisionConflict,
    RolloutState,
    SettingInvalid,
)
from alphaswarm_core.testing import ready, unique_name, wait_for
from tests.fakes.moto_server import CRASHING_COMMAND, IMAGE, MISSING_IMAGE, EcsTestBed


def done(revision: int) -> Callable[[DeploymentStatus], bool]:
    def check(status: DeploymentStatus) -> bool:
        return status.revision == revision and status.rollout is not None and status.rollout.done

    return check


async def succeeded(provider: EcsProvider, service: str, namespace: str, revision: int) -> None:
    status = await wait_for(provider, service, namespace, done(revision))
    assert status.rollout is not None and status.rollout.state is RolloutState.SUCCEEDED, status


@pytest.fixture
async def other(bed: EcsTestBed) -> AsyncIterator[EcsProvider]:
    """A second controller on the same account and cluster."""
    instance = EcsProvider(env=bed.provider_env())
    await instance.open()
    try:
        yield instance
    finally:
        await instance.close()


async def test_an_image_that_cannot_be_pulled_is_image_pull_failed(
    provider: EcsProvider, namespace: str
) -> None:
    service = unique_name()
    await provider.start(DeploymentSpec(service, namespace, image=IMAGE))
    await succeeded(provider, service, namespace, 1)
    await provider.start(DeploymentSpec(service, namespace, image=MISSING_IMAGE))
    status = await wait_for(provider, service, namespace, done(2))
    assert status.rollout is not None and status.rollout.state is RolloutState.FAILED
    assert status.rollout.reason == "IMAGE_PULL_FAILED", status.rollout
    assert "CannotPullContainerError" in status.rollout.message
    assert status.observed_revision == 1, "the tasks of revision 1 keep serving"
    assert status.state is DeploymentState.FAILED
    progressing = {c.type: c for c in status.conditions}["Progressing"]
    assert (progressing.status, progressing.reason) == (False, "IMAGE_PULL_FAILED")
    assert {c.type: c for c in status.conditions}["Available"].status is True
    await provider.delete(service, namespace=namespace)


async def test_a_crashing_command_is_crash_loop_which_the_breaker_does_not_see(
    provider: EcsProvider, bed: EcsTestBed, namespace: str
) -> None:
    service = unique_name()
    await provider.start(DeploymentSpec(service, namespace, image=IMAGE))
    await succeeded(provider, service, namespace, 1)
    crashing = DeploymentSpec(service, namespace, image=IMAGE, command=CRASHING_COMMAND)
    await provider.start(crashing)
    status = await wait_for(provider, service, namespace, done(2))
    assert status.rollout is not None and status.rollout.state is RolloutState.FAILED
    assert status.rollout.reason == "CRASH_LOOP", status.rollout
    assert "exit code 3" in status.rollout.message, status.rollout.message
    # Unlike a task that never starts, one that reaches RUNNING counts as healthy for
    # minimumHealthyPercent (no health check), so ECS stopped the old tasks: none of
    # revision 1 is left. Between its crashes a task of revision 2 may be RUNNING when the
    # status is read (observed 2), or none is (observed 0).
    assert status.observed_revision in {0, 2}, status
    # ECS itself still calls the deployment IN_PROGRESS: its tasks reached RUNNING.
    described = bed.aws.front_client("ecs").describe_services(
        cluster=bed.cluster, services=[service_name(namespace, service)]
    )["services"][0]
    primary = next(d for d in described["deployments"] if d["status"] == "PRIMARY")
    assert primary["rolloutState"] == "IN_PROGRESS" and primary["failedTasks"] == 0
    await provider.delete(service, namespace=namespace)


async def test_a_crash_loop_with_auto_rollback_goes_back_to_the_last_good_revision(
    provider: EcsProvider, namespace: str
) -> None:
    service = unique_name()
    good = DeploymentSpec(service, namespace, image=IMAGE, env={"MODE": "good"})
    await provider.start(good)
    await succeeded(provider, service, namespace, 1)
    await provider.start(replace(good, command=CRASHING_COMMAND, auto_rollback=True))
    await succeeded(provider, service, namespace, 3)
    newest = (await provider.list_revisions(service, namespace=namespace))[0]
    assert (newest.number, newest.rollback_of, newest.automatic) == (3, 1, True)
    assert "CRASH_LOOP" in newest.change_cause
    assert newest.spec.command == () and newest.spec.env == {"MODE": "good"}
    await provider.delete(service, namespace=namespace)


async def test_tasks_that_never_start_exceed_the_progress_deadline(
    provider: EcsProvider, bed: EcsTestBed, namespace: str
) -> None:
    """Tasks that stay PENDING (a slow pull) fail nothing ECS counts: the spec's deadline
    ends the rollout."""
    service = unique_name()
    slow = bed.ecs.start_seconds
    bed.ecs.start_seconds = 3600.0  # no task of the emulated cluster starts meanwhile
    try:
        spec = DeploymentSpec(service, namespace, image=IMAGE, progress_deadline_seconds=2)
        await provider.start(spec)
        status = await wait_for(provider, service, namespace, done(1))
    finally:
        bed.ecs.start_seconds = slow
    assert status.rollout is not None and status.rollout.state is RolloutState.FAILED
    assert status.rollout.reason == "PROGRESS_DEADLINE_EXCEEDED", status.rollout
    assert "no progress for 2s" in status.rollout.message
    assert status.observed_revision == 0
    definition = await provider.definition(service, namespace=namespace)
    assert definition.spec.progress_deadline_seconds == 2
    await provider.delete(service, namespace=namespace)


async def test_tasks_that_cannot_be_placed_are_unschedulable(
    provider: EcsProvider, namespace: str
) -> None:
    """The EC2 launch type in a cluster without container instances: the scheduler leaves
    an event, counts the task failed, and the breaker trips."""
    service = unique_name()
    spec = DeploymentSpec(service, namespace, image=IMAGE, provider_options={"launch_type": "EC2"})
    await provider.start(spec)
    status = await wait_for(provider, service, namespace, done(1))
    assert status.rollout is not None and status.rollout.state is RolloutState.FAILED
    assert status.rollout.reason == "UNSCHEDULABLE", status.rollout
    assert "No Container Instances" in status.rollout.message
    await provider.delete(service, namespace=namespace)


async def test_two_controllers_agree_and_check_and_set_lets_one_change_through(
    provider: EcsProvider, other: EcsProvider, namespace: str
) -> None:
    service = unique_name()
    with making_change(ChangeRequest(change_cause="first deploy")):
        await provider.start(DeploymentSpec(service, namespace, image=IMAGE, env={"V": "1"}))
    await wait_for(other, service, namespace, ready(1))
    seen = await other.list_revisions(service, namespace=namespace)
    assert [(r.number, r.change_cause) for r in seen] == [(1, "first deploy")]

    async def change(controller: EcsProvider, value: str) -> int:
        with making_change(ChangeRequest(expected_revision=1, change_cause=f"set V={value}")):
            changed = await controller.start(
                DeploymentSpec(service, namespace, image=IMAGE, env={"V": value})
            )
        return changed.revision

    outcomes = await asyncio.gather(
        change(provider, "a"), change(other, "b"), return_exceptions=True
    )
    made = [o for o in outcomes if isinstance(o, int)]
    refused = [o for o in outcomes if isinstance(o, RevisionConflict)]
    assert (made, len(refused)) == ([2], 1), outcomes
    assert refused[0].metadata == {"expected_revision": "1", "current_revision": "2"}
    mine = await provider.list_revisions(service, namespace=namespace)
    theirs = await other.list_revisions(service, namespace=namespace)
    assert [(r.number, r.change_cause) for r in mine] == [
        (r.number, r.change_cause) for r in theirs
    ]
    assert [r.number for r in mine] == [2, 1]
    winner = mine[0].change_cause.removeprefix("set V=")
    assert (await other.definition(service, namespace=namespace)).spec.env == {"V": winner}

    # A rollback by one controller is the next revision for both.
    back = await other.rollback(service, 0, namespace=namespace)
    assert back.revision == 3
    assert (await provider.definition(service, namespace=namespace)).spec.env == {"V": "1"}
    assert (await provider.list_revisions(service, namespace=namespace))[0].rollback_of == 1
    await provider.delete(service, namespace=namespace)


@pytest.mark.parametrize("value", ["1", "101", "ten"])
async def test_a_history_setting_out_of_bounds_is_refused(bed: EcsTestBed, value: str) -> None:
    provider = EcsProvider(env=bed.provider_env(ALPHASWARM_AWS_REVISION_HISTORY=value))
    with pytest.raises(SettingInvalid) as caught:
        await provider.list_revisions("any", namespace="default")
    assert "ALPHASWARM_AWS_REVISION_HISTORY" in str(caught.value)
