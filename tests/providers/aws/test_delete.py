"""ECS delete: every resource of the service gone from moto itself, a half-done delete
completed by the next one, draining, and the emulator's DeleteService rules."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from alphaswarm_controller.providers.aws import EcsProvider, ecs_provider
from alphaswarm_controller.providers.aws.taskdef import service_name
from alphaswarm_core.providers.protocol import (
    BackendUnavailableError,
    ConfigMapPatch,
    DeploymentNotFoundError,
    DeploymentSpec,
)
from alphaswarm_core.testing import ready, unique_name, wait_for
from tests.fakes.faults import Kind
from tests.fakes.moto_server import IMAGE, EcsTestBed, ecs_test_bed
from tests.waiting import until, until_sync

from .support import leftovers_in, log_spec_factory


async def grown(provider: EcsProvider, namespace: str) -> str:
    """A service with several revisions, config generations and logged lines."""
    service = unique_name()
    make = log_spec_factory()
    await provider.start(make(service, namespace, replicas=2, env={"V": "1"}))
    await provider.start(make(service, namespace, replicas=2, env={"V": "2"}))
    for value in ("a", "b", "c"):
        await provider.apply_config(ConfigMapPatch(service, namespace, set={"K": value}))
    await wait_for(provider, service, namespace, ready(2))
    return service


async def test_delete_leaves_nothing_in_the_account(
    provider: EcsProvider, bed: EcsTestBed, namespace: str
) -> None:
    service = await grown(provider, namespace)
    before = leftovers_in(bed, service, namespace)
    kinds = {item.split(" ", 1)[0] for item in before}
    assert {"ECS", "ACTIVE", "SSM", "log", "task"} <= kinds, before
    assert await provider.delete(service, namespace=namespace) is True
    # delete waited for INACTIVE: nothing is left the moment it returns.
    assert leftovers_in(bed, service, namespace) == []
    assert bed.ecs.service_status(service_name(namespace, service)) == "INACTIVE"


async def test_unknown_service_costs_a_few_reads(
    provider: EcsProvider, bed: EcsTestBed, namespace: str
) -> None:
    before = bed.faults.count()
    with pytest.raises(DeploymentNotFoundError):
        await provider.delete(unique_name("missing"), namespace=namespace)
    missing = unique_name("missing")
    assert await provider.delete(missing, namespace=namespace, allow_missing=True) is False
    # DescribeServices, ListTaskDefinitions (ACTIVE, INACTIVE), DescribeParameters,
    # DeleteLogGroup, for each call.
    assert bed.faults.count() - before == 2 * 5


async def test_a_half_done_delete_is_completed_by_the_next(
    provider: EcsProvider, bed: EcsTestBed, namespace: str
) -> None:
    service = await grown(provider, namespace)
    bed.faults.inject("ssm:DeleteParameters", Kind.UNAVAILABLE, times=0)  # until cleared
    with pytest.raises(BackendUnavailableError):
        await provider.delete(service, namespace=namespace)
    bed.faults.clear()
    with pytest.raises(DeploymentNotFoundError):
        await provider.status(service, namespace=namespace)
    left = leftovers_in(bed, service, namespace)
    assert any(item.startswith("SSM") for item in left), left
    assert await provider.delete(service, namespace=namespace) is True
    assert leftovers_in(bed, service, namespace) == []
    with pytest.raises(DeploymentNotFoundError):
        await provider.delete(service, namespace=namespace)


async def test_throttled_deletes_are_retried(
    provider: EcsProvider, bed: EcsTestBed, namespace: str
) -> None:
    service = await grown(provider, namespace)
    for operation in (
        "ecs:DeleteService",
        "ecs:DeregisterTaskDefinition",
        "ecs:DeleteTaskDefinitions",
        "ssm:DeleteParameters",
        "logs:DeleteLogGroup",
    ):
        bed.faults.inject(operation, Kind.THROTTLED, times=2)
    assert await provider.delete(service, namespace=namespace) is True
    assert leftovers_in(bed, service, namespace) == []


async def test_deleting_one_service_leaves_its_neighbours(
    provider: EcsProvider, bed: EcsTestBed, namespace: str
) -> None:
    """``web`` and ``web-2`` share a prefix in every name space AWS has."""
    web = unique_name()
    web2 = f"{web}-2"
    for name in (web, web2):
        await provider.start(DeploymentSpec(name, namespace, image=IMAGE))
        await provider.apply_config(ConfigMapPatch(name, namespace, set={"K": "v"}))
        await wait_for(provider, name, namespace, ready(1))  # the config roll is over
    before = leftovers_in(bed, web2, namespace)
    await provider.delete(web, namespace=namespace)
    assert leftovers_in(bed, web2, namespace) == before
    assert (await provider.get_config(web2, namespace=namespace)).data == {"K": "v"}


@pytest.fixture(scope="module")
def slow_bed() -> Iterator[EcsTestBed]:
    """Tasks take 3 s to stop: a deleted service stays DRAINING that long."""
    with ecs_test_bed(stop_seconds=3.0, publish_metrics=False) as test_bed:
        yield test_bed


@pytest.fixture
async def slow(slow_bed: EcsTestBed) -> AsyncIterator[EcsProvider]:
    instance = EcsProvider(env=slow_bed.provider_env())
    await instance.open()
    try:
        yield instance
    finally:
        await instance.close()
        slow_bed.faults.clear()


async def test_delete_waits_for_the_tasks_to_stop(
    slow: EcsProvider, slow_bed: EcsTestBed, namespace: str
) -> None:
    service = unique_name()
    await slow.start(DeploymentSpec(service, namespace, image=IMAGE, replicas=2))
    await wait_for(slow, service, namespace, ready(2))
    before = slow_bed.faults.count("ecs:DescribeServices")
    await slow.delete(service, namespace=namespace)
    assert slow_bed.ecs.service_status(service_name(namespace, service)) == "INACTIVE"
    polls = slow_bed.faults.count("ecs:DescribeServices") - before
    assert 2 <= polls <= 3 / ecs_provider.DRAIN_POLL_SECONDS + 3, polls


async def test_a_start_while_the_old_one_drains_is_unavailable(
    slow: EcsProvider, slow_bed: EcsTestBed, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ecs_provider, "DRAIN_WAIT_SECONDS", 0.0)  # return while DRAINING
    # Tasks stop only when the test lets them: the calls below take more than the bed's
    # 3 s on a loaded machine, and the service must still be DRAINING at the last one.
    monkeypatch.setattr(slow_bed.ecs, "stop_seconds", 3600.0)
    service = unique_name()
    spec = DeploymentSpec(service, namespace, image=IMAGE)
    await slow.start(spec)
    await wait_for(slow, service, namespace, ready(1))
    assert await slow.delete(service, namespace=namespace) is True
    assert slow_bed.ecs.service_status(service_name(namespace, service)) == "DRAINING"
    with pytest.raises(DeploymentNotFoundError):
        await slow.status(service, namespace=namespace)
    with pytest.raises(DeploymentNotFoundError):
        await slow.delete(service, namespace=namespace)
    assert service not in {s.service_id for s in await slow.list_deployments(namespace=namespace)}
    with pytest.raises(BackendUnavailableError) as caught:
        await slow.start(spec)
    assert caught.value.retry_after_seconds > 0
    slow_bed.ecs.stop_seconds = 3.0  # the tasks stop now: 3 s after the delete
    await until(
        lambda: slow_bed.ecs.service_status(service_name(namespace, service)),
        "the service to leave DRAINING",
        holds=lambda status: status != "DRAINING",
        every=0.2,
    )
    await slow.start(spec)
    await wait_for(slow, service, namespace, ready(1))


def test_the_emulator_keeps_ecs_rules_for_deleted_services(slow_bed: EcsTestBed) -> None:
    ecs = slow_bed.aws.front_client("ecs")
    family = unique_name("family")
    ecs.register_task_definition(
        family=family,
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        containerDefinitions=[{"name": "app", "image": IMAGE, "cpu": 256, "memory": 512}],
    )
    name = unique_name()
    network = {
        "awsvpcConfiguration": {
            "subnets": [slow_bed.network["subnet"]],
            "securityGroups": [slow_bed.network["security_group"]],
        }
    }
    args = {
        "cluster": slow_bed.cluster,
        "serviceName": name,
        "taskDefinition": family,
        "launchType": "FARGATE",
        "networkConfiguration": network,
    }
    ecs.create_service(desiredCount=1, **args)
    until_sync(
        lambda: ecs.describe_services(cluster=slow_bed.cluster, services=[name])["services"][0][
            "runningCount"
        ],
        "a running task",
    )
    with pytest.raises(Exception, match="scaled above 0"):  # moto's own check, as ECS's
        ecs.delete_service(cluster=slow_bed.cluster, service=name)
    deleted = ecs.delete_service(cluster=slow_bed.cluster, service=name, force=True)["service"]
    assert deleted["status"] == "DRAINING"
    assert name not in str(ecs.list_services(cluster=slow_bed.cluster)["serviceArns"])
    with pytest.raises(Exception, match="still Draining"):
        ecs.create_service(desiredCount=1, **args)
    until_sync(
        lambda: ecs.describe_services(cluster=slow_bed.cluster, services=[name])["services"][0][
            "runningCount"
        ],
        "a running task",
    )
    with pytest.raises(Exception, match="ServiceNotActiveException"):
        ecs.update_service(cluster=slow_bed.cluster, service=name, desiredCount=2)
