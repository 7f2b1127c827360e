"""ECS-specific behaviour of the aws provider against moto server (over HTTP)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from alphaswarm_controller.providers.aws import AwsProvider
from alphaswarm_controller.providers.aws.taskdef import service_name
from alphaswarm_core.providers.protocol import (
    BackendRejectedError,
    DeploymentSpec,
    DeploymentState,
    InfrastructureProviderUnavailable,
    InvalidSpecError,
    PortSpec,
    Resources,
)
from alphaswarm_core.testing import ready, unique_name, wait_for
from tests.fakes.moto_server import IMAGE, EcsTestBed


@pytest.fixture
def namespace() -> str:
    return unique_name("ns")


def count_calls(provider: AwsProvider, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
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
    provider: AwsProvider,
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
    provider: AwsProvider, namespace: str
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
    provider: AwsProvider, bed: EcsTestBed, namespace: str
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
    assert env == {"MODE": "a", "ALPHASWARM_CONFIG_SSM_PATH": f"/alphaswarm/{namespace}/{service}/"}
    assert container["portMappings"] == [{"containerPort": 8080, "protocol": "tcp"}]
    described = ecs.describe_services(
        cluster=bed.cluster, services=[service_name(namespace, service)]
    )["services"][0]
    assert described["launchType"] == "FARGATE"
    assert described["networkConfiguration"]["awsvpcConfiguration"]["subnets"] == [
        bed.network["subnet"]
    ]


async def test_new_revision_only_when_the_definition_changes(
    provider: AwsProvider, bed: EcsTestBed, namespace: str, monkeypatch: pytest.MonkeyPatch
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
    provider: AwsProvider, bed: EcsTestBed, namespace: str
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
    provider: AwsProvider, bed: EcsTestBed, namespace: str
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
    provider: AwsProvider, namespace: str, monkeypatch: pytest.MonkeyPatch
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
        await AwsProvider(env=env).health()
    assert caught.value.reason == "SETTING_INVALID"
    assert "ALPHASWARM_AWS_ECS_CLUSTER" in caught.value.message


async def test_health_reports_unknown_cluster(bed: EcsTestBed) -> None:
    provider = AwsProvider(env=bed.provider_env(ALPHASWARM_AWS_ECS_CLUSTER="nope"))
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        await provider.health()
    assert caught.value.reason == "CLUSTER_NOT_FOUND"


async def test_health_details(provider: AwsProvider, bed: EcsTestBed) -> None:
    health = await provider.health()
    assert health.healthy
    assert health.details["account"] == "123456789012"
    assert health.details["ecs_cluster"].endswith(f"cluster/{bed.cluster}")
    assert health.details["region"] == bed.aws.region


SETTINGS = {"SUBNETS": "subnet-1"}


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
    plan = plan_for(spec, SETTINGS)
    assert (plan.register_args["cpu"], plan.register_args["memory"]) == expected


def test_ec2_launch_type_takes_any_size_and_names_round_trip() -> None:
    from alphaswarm_controller.providers.aws.taskdef import parse_service_name, plan_for

    spec = DeploymentSpec(
        "web",
        "shop",
        image=IMAGE,
        resources=Resources(cpu="300m", memory="700Mi"),
        provider_options={"launch_type": "ec2", "assign_public_ip": "true"},
    )
    plan = plan_for(spec, SETTINGS)
    assert plan.launch_type == "EC2"
    assert (plan.register_args["cpu"], plan.register_args["memory"]) == ("307", "700")
    assert plan.network["awsvpcConfiguration"]["assignPublicIp"] == "ENABLED"
    assert plan.service_name == "alphaswarm_shop_web"
    assert parse_service_name(f"arn:aws:ecs:r:1:service/c/{plan.service_name}") == ("shop", "web")
    assert parse_service_name("someone_elses_service") is None
    assert parse_service_name("alphaswarm_a_b_c") is None
