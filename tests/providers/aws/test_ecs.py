"""ECS-specific behaviour of the aws provider against moto server (over HTTP)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from alphaswarm_controller.providers.aws import EcsProvider
from alphaswarm_controller.providers.aws.taskdef import service_name
from alphaswarm_core.providers.protocol import (
    BackendRejectedError,
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    InfrastructureProviderUnavailable,
    InvalidSpecError,
    PortSpec,
    Resources,
    RolloutState,
)
from alphaswarm_core.testing import instance_ids, ready, unique_name, wait_for
from tests.fakes.moto_server import EXECUTION_ROLE, IMAGE, EcsTestBed
from tests.waiting import until


def count_calls(provider: EcsProvider, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count every AWS call the provider makes, by ``service:Operation``."""
    calls: Counter[str] = Counter()
    original = provider.clients.call

    def counting(service: str, operation: str, /, **kwargs: Any) -> Any:
        calls[f"{service}:{operation}"] += 1
        return original(service, operation, **kwargs)

    monkeypatch.setattr(provider.clients, "call", counting)
    return calls


def revisions(bed: EcsTestBed, namespace: str, service: str) -> list[str]:
    family = service_name(namespace, service)
    arns = bed.aws.client("ecs").list_task_definitions(familyPrefix=family, status="ACTIVE")
    return list(arns["taskDefinitionArns"])


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        (Resources(cpu="250m", memory="4Gi"), "spec.resources.memory"),
        (Resources(cpu="300m", memory="1Gi"), "spec.resources.cpu"),
        (Resources(memory="1000M"), "spec.resources.memory"),
    ],
)
async def test_unsupported_fargate_size_is_rejected_before_any_aws_call(
    provider: EcsProvider,
    bed: EcsTestBed,
    monkeypatch: pytest.MonkeyPatch,
    resources: Resources,
    field: str,
) -> None:
    namespace = unique_name("ns")
    calls = count_calls(provider, monkeypatch)
    service = unique_name()
    spec = DeploymentSpec(service, namespace, image=IMAGE, resources=resources)
    with pytest.raises(InvalidSpecError) as caught:
        await provider.start(spec)
    assert [v.field for v in caught.value.violations] == [field]
    assert not calls, f"no AWS call may precede validation, saw {dict(calls)}"
    assert revisions(bed, namespace, service) == []


async def test_spec_fields_ecs_cannot_express_are_named(
    provider: EcsProvider, namespace: str
) -> None:
    spec = DeploymentSpec(
        unique_name(),
        namespace,
        command=("sleep", "60"),
        ports=(PortSpec(8080, host_port=80),),
        provider_options={"gpu": "1", "launch_type": "LAMBDA"},
    )
    with pytest.raises(InvalidSpecError) as caught:
        await provider.start(spec)
    fields = {v.field for v in caught.value.violations}
    assert fields == {
        "spec.image",
        "spec.ports[0].host_port",
        "spec.provider_options['gpu']",
        "spec.provider_options['launch_type']",
    }


async def test_task_definition_is_derived_from_the_spec(
    provider: EcsProvider, bed: EcsTestBed, namespace: str
) -> None:
    service = unique_name()
    spec = DeploymentSpec(
        service,
        namespace,
        image=IMAGE,
        command=("nginx", "-g", "daemon off;"),
        env={"MODE": "a"},
        ports=(PortSpec(8080),),
        resources=Resources(cpu="500m", memory="2Gi"),
        labels={"team": "core"},
        replicas=1,
    )
    status = await provider.start(spec)
    assert status.labels == {"team": "core"}
    ecs = bed.aws.client("ecs")
    [arn] = revisions(bed, namespace, service)
    definition = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    assert (definition["cpu"], definition["memory"]) == ("512", "2048")
    assert definition["networkMode"] == "awsvpc"
    assert definition["requiresCompatibilities"] == ["FARGATE"]
    [container] = definition["containerDefinitions"]
    assert container["image"] == IMAGE
    assert container["command"] == ["nginx", "-g", "daemon off;"]
    env = {item["name"]: item["value"] for item in container["environment"]}
    assert env == {
        "MODE": "a",
        "ALPHASWARM_CONFIG_SSM_PATH": f"/alphaswarm/{namespace}/{service}/v0/",
    }
    assert container["portMappings"] == [{"containerPort": 8080, "protocol": "tcp"}]
    assert definition["executionRoleArn"] == EXECUTION_ROLE
    assert container["logConfiguration"] == {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": f"/alphaswarm/{namespace}/{service}",
            "awslogs-region": bed.aws.region,
            "awslogs-stream-prefix": "alphaswarm",
        },
    }
    groups = bed.aws.client("logs").describe_log_groups(
        logGroupNamePrefix=f"/alphaswarm/{namespace}/{service}"
    )["logGroups"]
    assert [g["logGroupName"] for g in groups] == [f"/alphaswarm/{namespace}/{service}"]
    described = ecs.describe_services(
        cluster=bed.cluster, services=[service_name(namespace, service)]
    )["services"][0]
    assert described["launchType"] == "FARGATE"
    assert described["networkConfiguration"]["awsvpcConfiguration"]["subnets"] == [
        bed.network["subnet"]
    ]


async def test_new_revision_only_when_the_definition_changes(
    provider: EcsProvider, bed: EcsTestBed, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = unique_name()
    spec = DeploymentSpec(service, namespace, image=IMAGE, env={"MODE": "a"})
    await provider.start(spec)
    await wait_for(provider, service, namespace, ready(1))
    calls = count_calls(provider, monkeypatch)
    await provider.start(spec)
    writes = {k for k in calls if k.split(":")[1].startswith(("Register", "Update", "Create"))}
    assert writes == set(), "an unchanged spec writes nothing"
    assert len(revisions(bed, namespace, service)) == 1

    await provider.start(
        DeploymentSpec(service, namespace, image=IMAGE, env={"MODE": "a"}, replicas=2)
    )
    assert len(revisions(bed, namespace, service)) == 1, "replicas are not in the definition"
    await provider.start(
        DeploymentSpec(service, namespace, image=IMAGE, env={"MODE": "b"}, replicas=2)
    )
    assert len(revisions(bed, namespace, service)) == 2
    await wait_for(provider, service, namespace, ready(2))


async def test_failed_start_deregisters_what_it_registered(
    provider: EcsProvider, bed: EcsTestBed, namespace: str
) -> None:
    service = unique_name()
    spec = DeploymentSpec(
        service, namespace, image=IMAGE, provider_options={"subnets": "subnet-00000000"}
    )
    with pytest.raises(BackendRejectedError) as caught:
        await provider.start(spec)
    assert caught.value.metadata["action"] == "ecs:CreateService"
    assert revisions(bed, namespace, service) == []
    assert provider.ecs().describe_one(namespace, service) is None


async def test_stop_scales_to_zero_and_keeps_the_service(
    provider: EcsProvider, bed: EcsTestBed, namespace: str
) -> None:
    service = unique_name()
    await provider.start(DeploymentSpec(service, namespace, image=IMAGE, replicas=2))
    await wait_for(provider, service, namespace, ready(2))
    stopped = await provider.stop(service, namespace=namespace)
    assert (stopped.state, stopped.desired_replicas) == (DeploymentState.STOPPED, 0)
    await wait_for(provider, service, namespace, ready(0))
    described = bed.aws.client("ecs").describe_services(
        cluster=bed.cluster, services=[service_name(namespace, service)]
    )["services"][0]
    assert (described["status"], described["desiredCount"]) == ("ACTIVE", 0)


async def test_list_pages_and_describes_in_batches_of_ten(
    provider: EcsProvider, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = sorted(unique_name() for _ in range(23))
    for name in names:
        await provider.start(DeploymentSpec(name, namespace, image=IMAGE, replicas=0))
    calls = count_calls(provider, monkeypatch)
    listed = await provider.list_deployments(namespace=namespace)
    assert [s.service_id for s in listed] == names
    assert all(s.state is DeploymentState.STOPPED for s in listed)
    assert calls["ecs:DescribeServices"] == 3
    assert calls["ecs:ListServices"] >= 1
    assert calls["ecs:ListTasks"] == 1, "tasks are read for the cluster, not per service"


async def test_health_names_missing_cluster_setting(bed: EcsTestBed) -> None:
    env = bed.provider_env()
    del env["ALPHASWARM_AWS_ECS_CLUSTER"]
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        await EcsProvider(env=env).health()
    assert caught.value.reason == "SETTING_INVALID"
    assert caught.value.code == "FAILED_PRECONDITION"
    assert "ALPHASWARM_AWS_ECS_CLUSTER" in caught.value.message


async def test_health_reports_unknown_cluster(bed: EcsTestBed) -> None:
    provider = EcsProvider(env=bed.provider_env(ALPHASWARM_AWS_ECS_CLUSTER="nope"))
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        await provider.health()
    assert caught.value.reason == "CLUSTER_NOT_FOUND"


async def test_health_details(provider: EcsProvider, bed: EcsTestBed) -> None:
    health = await provider.health()
    assert health.healthy
    assert health.details["account"] == "123456789012"
    assert health.details["ecs_cluster"].endswith(f"cluster/{bed.cluster}")
    assert health.details["region"] == bed.aws.region


SETTINGS = {"SUBNETS": "subnet-1", "EXECUTION_ROLE_ARN": EXECUTION_ROLE}
REGION = "eu-west-1"


@pytest.mark.parametrize(
    ("cpu", "memory", "expected"),
    [
        ("", "", ("256", "512")),
        ("1", "", ("1024", "2048")),
        ("", "3Gi", ("512", "3072")),
        ("4", "30Gi", ("4096", "30720")),
        ("8", "20Gi", ("8192", "20480")),
        ("250m", "2Gi", ("256", "2048")),
    ],
)
def test_fargate_sizes(cpu: str, memory: str, expected: tuple[str, str]) -> None:
    from alphaswarm_controller.providers.aws.taskdef import plan_for

    spec = DeploymentSpec("web", "shop", image=IMAGE, resources=Resources(cpu=cpu, memory=memory))
    plan = plan_for(spec, SETTINGS, REGION)
    assert (plan.register_args["cpu"], plan.register_args["memory"]) == expected


def test_ec2_launch_type_takes_any_size_and_names_round_trip() -> None:
    from alphaswarm_controller.providers.aws.taskdef import parse_service_name, plan_for

    spec = DeploymentSpec(
        "web",
        "shop",
        image=IMAGE,
        resources=Resources(cpu="300m", memory="700Mi"),
        provider_options={"launch_type": "ec2"},
    )
    plan = plan_for(spec, {"SUBNETS": "subnet-1"}, REGION)  # EC2: no execution role needed
    assert plan.launch_type == "EC2"
    assert (plan.register_args["cpu"], plan.register_args["memory"]) == ("307", "700")
    assert plan.network["awsvpcConfiguration"]["assignPublicIp"] == "DISABLED"
    assert plan.service_name == "alphaswarm_shop_web"
    assert parse_service_name(f"arn:aws:ecs:r:1:service/c/{plan.service_name}") == ("shop", "web")
    assert parse_service_name("someone_elses_service") is None
    assert parse_service_name("alphaswarm_a_b_c") is None


# -- limits checked before any call (issue 17) -------------------------------------------------


async def test_public_ip_with_the_ec2_launch_type_is_rejected_before_any_call(
    provider: EcsProvider, bed: EcsTestBed, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_calls(provider, monkeypatch)
    service = unique_name()
    spec = DeploymentSpec(
        service,
        namespace,
        image=IMAGE,
        provider_options={"launch_type": "EC2", "assign_public_ip": "true"},
    )
    with pytest.raises(InvalidSpecError) as caught:
        await provider.start(spec)
    assert [v.field for v in caught.value.violations] == [
        "spec.provider_options['assign_public_ip']"
    ]
    assert not calls, f"no AWS call may precede validation, saw {dict(calls)}"
    assert revisions(bed, namespace, service) == []


async def test_labels_beyond_the_ecs_tag_limit_are_rejected_before_any_call(
    provider: EcsProvider, bed: EcsTestBed, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_calls(provider, monkeypatch)
    service = unique_name()
    labels = {f"label-{i:02d}": "x" for i in range(49)}  # + the provider's 2 tags = 51
    with pytest.raises(InvalidSpecError) as caught:
        await provider.start(DeploymentSpec(service, namespace, image=IMAGE, labels=labels))
    [violation] = caught.value.violations
    assert violation.field == "spec.labels"
    assert "at most 48 labels" in violation.description
    assert not calls, f"no AWS call may precede validation, saw {dict(calls)}"

    del labels["label-48"]  # 48 labels + 2 own tags: exactly ECS's 50
    status = await provider.start(DeploymentSpec(service, namespace, image=IMAGE, labels=labels))
    assert status.labels == labels


async def test_fargate_without_an_execution_role_is_rejected_before_any_call(
    bed: EcsTestBed, namespace: str
) -> None:
    env = bed.provider_env()
    del env["ALPHASWARM_AWS_EXECUTION_ROLE_ARN"]
    provider = EcsProvider(env=env)
    with pytest.raises(InvalidSpecError) as caught:
        await provider.start(DeploymentSpec(unique_name(), namespace, image=IMAGE))
    assert [v.field for v in caught.value.violations] == [
        "spec.provider_options['execution_role_arn']"
    ]


async def test_the_emulator_refuses_what_ecs_refuses(bed: EcsTestBed) -> None:
    """The front holds moto to ECS's rules for the calls the provider makes."""
    from botocore.exceptions import ClientError  # type: ignore[import-untyped]

    ecs = bed.aws.front_client("ecs")
    network = {
        "awsvpcConfiguration": {
            "subnets": [bed.network["subnet"]],
            "securityGroups": [bed.network["security_group"]],
            "assignPublicIp": "ENABLED",
        }
    }
    family = unique_name("family")
    definition = {
        "family": family,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [
            {
                "name": "app",
                "image": IMAGE,
                "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "g"}},
            }
        ],
    }
    refusals: dict[str, Callable[[], object]] = {
        "no execution role": lambda: ecs.register_task_definition(**definition),
        "51 tags": lambda: ecs.register_task_definition(
            **definition,
            executionRoleArn=EXECUTION_ROLE,
            tags=[{"key": f"k{i}", "value": "v"} for i in range(51)],
        ),
        "public IP on EC2": lambda: ecs.create_service(
            cluster=bed.cluster,
            serviceName=unique_name(),
            taskDefinition=family,
            desiredCount=0,
            launchType="EC2",
            networkConfiguration=network,
        ),
        "11 services": lambda: ecs.describe_services(
            cluster=bed.cluster, services=[f"s{i}" for i in range(11)]
        ),
    }
    # TagKey/TagValue (botocore ecs model: at most 128/256 characters of letters, digits,
    # spaces and _.:/=+-@; the aws: prefix reserved): a change cause cannot be a tag.
    for bad in (
        {"key": "aws:owner", "value": "x"},
        {"key": "cause", "value": "roll back {v2}"},
        {"key": "cause", "value": "x" * 257},
    ):
        refusals[f"tag {bad}"] = functools.partial(
            ecs.register_task_definition, **definition, executionRoleArn=EXECUTION_ROLE, tags=[bad]
        )
    for what, call in refusals.items():
        with pytest.raises(ClientError) as caught:
            call()
        assert caught.value.response["Error"]["Code"] in (
            "ClientException",
            "InvalidParameterException",
            "ValidationException",
        ), what
    accepted = {**definition, "containerDefinitions": [{"name": "app", "image": IMAGE}]}
    ecs.register_task_definition(  # letters, digits, spaces and the listed punctuation
        **accepted,
        executionRoleArn=EXECUTION_ROLE,
        tags=[{"key": "owner team", "value": "ops:blue/green=+-@_ 7"}],
    )


# -- the deployment circuit breaker (issue 17) -------------------------------------------------


def deployments(bed: EcsTestBed, namespace: str, service: str) -> list[dict[str, Any]]:
    described = bed.aws.front_client("ecs").describe_services(
        cluster=bed.cluster, services=[service_name(namespace, service)]
    )["services"][0]
    return list(described["deployments"])


def failed(status: DeploymentStatus) -> bool:
    return status.state is DeploymentState.FAILED


@pytest.mark.parametrize("auto_rollback", [False, True])
async def test_services_run_with_the_circuit_breaker_its_rollback_is_auto_rollback(
    provider: EcsProvider, bed: EcsTestBed, namespace: str, auto_rollback: bool
) -> None:
    service = unique_name()
    await provider.start(
        DeploymentSpec(service, namespace, image=IMAGE, auto_rollback=auto_rollback)
    )
    described = bed.aws.front_client("ecs").describe_services(
        cluster=bed.cluster, services=[service_name(namespace, service)]
    )["services"][0]
    assert described["deploymentConfiguration"]["deploymentCircuitBreaker"] == {
        "enable": True,
        "rollback": auto_rollback,
    }


async def test_an_image_that_cannot_start_reports_failed_with_the_reason(
    provider: EcsProvider, bed: EcsTestBed, namespace: str
) -> None:
    service = unique_name()
    bad = DeploymentSpec(service, namespace, image="public.ecr.aws/nginx/nginx:no-such-tag")
    await provider.start(bad)
    status = await wait_for(provider, service, namespace, failed, timeout=60)
    assert "circuit breaker" in status.message
    assert "failed to start" in status.message
    [deployment] = deployments(bed, namespace, service)
    assert deployment["rolloutState"] == "FAILED"
    assert deployment["failedTasks"] >= 3

    # A spec that works replaces it (no earlier deployment completed: no rollback).
    await provider.start(DeploymentSpec(service, namespace, image=IMAGE))
    replacing = await provider.status(service, namespace=namespace)
    assert not failed(replacing), "the new deployment is in progress, not failed"
    await wait_for(provider, service, namespace, ready(1), timeout=60)


async def test_a_failed_update_rolled_back_by_the_breaker_is_recorded_as_a_revision(
    provider: EcsProvider, bed: EcsTestBed, namespace: str
) -> None:
    """With auto_rollback, ECS's circuit breaker rolls the service back to the deployment
    that completed; the provider records that as a revision of its own (automatic, the
    failure's reason in its change cause) and the rollout of it succeeds."""
    service = unique_name()
    good = DeploymentSpec(service, namespace, image=IMAGE, env={"V": "1"}, auto_rollback=True)
    await provider.start(good)
    before = await wait_for(provider, service, namespace, ready(1))

    await until(
        lambda: deployments(bed, namespace, service),
        "one COMPLETED deployment",
        holds=lambda found: [d["rolloutState"] for d in found] == ["COMPLETED"],
    )

    bad = DeploymentSpec(
        service, namespace, image="public.ecr.aws/nginx/nginx:no-such-tag", auto_rollback=True
    )
    await provider.start(bad)

    def rolled_back(status: DeploymentStatus) -> bool:
        return (
            status.revision == 3
            and status.rollout is not None
            and status.rollout.state is RolloutState.SUCCEEDED
            and ready(1)(status)
        )

    settled = await wait_for(provider, service, namespace, rolled_back, timeout=60)
    assert settled.image == IMAGE and settled.state is DeploymentState.RUNNING
    assert settled.instances and instance_ids(settled) != instance_ids(before)
    events = bed.aws.front_client("ecs").describe_services(
        cluster=bed.cluster, services=[service_name(namespace, service)]
    )["services"][0]["events"]
    assert any("rolling back to deployment" in e["message"] for e in events), events
    newest, failed_one, first = await provider.list_revisions(service, namespace=namespace)
    assert (newest.number, newest.rollback_of, newest.automatic) == (3, 1, True)
    assert "IMAGE_PULL_FAILED" in newest.change_cause, newest.change_cause
    assert newest.spec.env == {"V": "1"} and newest.spec.image == IMAGE
    assert (failed_one.number, first.number) == (2, 1)

    await provider.start(good)  # what runs already: no new revision
    assert (await provider.definition(service, namespace=namespace)).revision == 3


async def test_without_the_breaker_ecs_retries_for_ever(bed: EcsTestBed) -> None:
    """The emulator's rule: no circuit breaker, no FAILED (the defect the breaker fixes)."""
    ecs = bed.aws.front_client("ecs")
    family = unique_name("family")
    ecs.register_task_definition(
        family=family,
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        containerDefinitions=[
            {"name": "app", "image": "example.com/missing:1", "cpu": 256, "memory": 512}
        ],
    )
    name = unique_name()
    ecs.create_service(
        cluster=bed.cluster,
        serviceName=name,
        taskDefinition=family,
        desiredCount=1,
        launchType="FARGATE",
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": [bed.network["subnet"]],
                "securityGroups": [bed.network["security_group"]],
            }
        },
    )
    deadline = time.monotonic() + 30
    while True:
        [deployment] = ecs.describe_services(cluster=bed.cluster, services=[name])["services"][0][
            "deployments"
        ]
        assert deployment["rolloutState"] == "IN_PROGRESS"
        if deployment["failedTasks"] >= 5:  # past the breaker's threshold of 3
            break
        assert time.monotonic() < deadline, deployment
        await asyncio.sleep(0.1)
    ecs.update_service(cluster=bed.cluster, service=name, desiredCount=0)


async def test_only_a_definition_change_starts_a_deployment(
    provider: EcsProvider, bed: EcsTestBed, namespace: str
) -> None:
    service = unique_name()
    await provider.start(DeploymentSpec(service, namespace, image=IMAGE, env={"V": "1"}))
    [first] = deployments(bed, namespace, service)
    await provider.scale(service, 2, namespace=namespace)
    assert [d["id"] for d in deployments(bed, namespace, service)] == [first["id"]]
    await provider.start(
        DeploymentSpec(service, namespace, image=IMAGE, env={"V": "2"}, replicas=2)
    )
    ids = [d["id"] for d in deployments(bed, namespace, service)]
    assert ids[0] != first["id"], "a new task definition is a new deployment"
    await wait_for(provider, service, namespace, ready(2))
