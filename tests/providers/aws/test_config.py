"""Config in SSM Parameter Store (moto server over HTTP): layout, secrets, versions, rollout."""

from __future__ import annotations

from typing import Any

import pytest

from alphaswarm_controller.providers.aws import AwsProvider
from alphaswarm_controller.providers.aws.taskdef import service_name
from alphaswarm_core.providers.models import SECRET_MASK as REDACTED
from alphaswarm_core.providers.protocol import (
    ConfigMapPatch,
    ConfigVersionConflict,
    DeploymentSpec,
    InvalidSpecError,
)
from alphaswarm_core.testing import instance_ids, ready, unique_name, wait_for
from tests.fakes.moto_server import IMAGE, EcsTestBed


@pytest.fixture
async def service(provider: AwsProvider) -> tuple[str, str]:
    namespace, name = unique_name("ns"), unique_name()
    await provider.start(DeploymentSpec(name, namespace, image=IMAGE))
    await wait_for(provider, name, namespace, ready(1))
    return namespace, name


def parameters(bed: EcsTestBed, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    ssm = bed.aws.client("ssm")
    found = ssm.get_parameters_by_path(
        Path=f"/alphaswarm/{namespace}/{name}", Recursive=True, WithDecryption=True
    )["Parameters"]
    return {p["Name"].removeprefix(f"/alphaswarm/{namespace}/{name}/"): p for p in found}


async def test_layout_version_and_secret_keys(
    provider: AwsProvider, bed: EcsTestBed, service: tuple[str, str]
) -> None:
    namespace, name = service
    initial = await provider.get_config(name, namespace=namespace)
    assert (initial.data, initial.version) == ({}, "0")

    applied = await provider.apply_config(
        ConfigMapPatch(
            name,
            namespace,
            set={"LEVEL": "debug", "secret.DB_PASSWORD": "hunter2"},
            expected_version="0",
        )
    )
    assert applied.version == "1"
    assert applied.data == {"LEVEL": "debug", "secret.DB_PASSWORD": REDACTED}

    stored = parameters(bed, namespace, name)
    assert stored["LEVEL"]["Type"] == "String"
    assert stored["LEVEL"]["Value"] == "debug"
    assert stored["secret.DB_PASSWORD"]["Type"] == "SecureString"
    assert stored["secret.DB_PASSWORD"]["Value"].endswith("hunter2")  # moto's "decryption"
    assert stored["_meta/version"]["Version"] == 1

    read = await provider.get_config(name, namespace=namespace)
    assert read.data == applied.data, "secrets are never read back in clear"
    assert read.version == "1"
    assert "hunter2" not in repr(read)


async def test_stale_version_writes_nothing(
    provider: AwsProvider, bed: EcsTestBed, service: tuple[str, str]
) -> None:
    namespace, name = service
    first = await provider.apply_config(ConfigMapPatch(name, namespace, set={"A": "1"}))
    await provider.apply_config(ConfigMapPatch(name, namespace, set={"A": "2"}))
    before = parameters(bed, namespace, name)
    with pytest.raises(ConfigVersionConflict) as caught:
        await provider.apply_config(
            ConfigMapPatch(
                name, namespace, set={"A": "3", "B": "new"}, expected_version=first.version
            )
        )
    assert caught.value.metadata == {"expected_version": "1", "current_version": "2"}
    after = parameters(bed, namespace, name)
    assert {k: (v["Value"], v["Version"]) for k, v in after.items()} == {
        k: (v["Value"], v["Version"]) for k, v in before.items()
    }


async def test_concurrent_writer_between_read_and_write_aborts(
    provider: AwsProvider,
    bed: EcsTestBed,
    service: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    namespace, name = service
    base = f"/alphaswarm/{namespace}/{name}"
    current = await provider.get_config(name, namespace=namespace)
    original = provider.clients.call
    other_writer = bed.aws.client("ssm")

    def racing(service_name: str, operation: str, /, **kwargs: Any) -> Any:
        if operation == "PutParameter" and kwargs.get("Name") == f"{base}/_meta/version":
            other_writer.put_parameter(
                Name=kwargs["Name"], Value="other", Type="String", Overwrite=True
            )
        return original(service_name, operation, **kwargs)

    monkeypatch.setattr(provider.clients, "call", racing)
    with pytest.raises(ConfigVersionConflict):
        await provider.apply_config(
            ConfigMapPatch(name, namespace, set={"LOST": "x"}, expected_version=current.version)
        )
    assert "LOST" not in parameters(bed, namespace, name)


async def test_apply_config_rolls_the_service(
    provider: AwsProvider, bed: EcsTestBed, service: tuple[str, str]
) -> None:
    namespace, name = service
    before = await wait_for(provider, name, namespace, ready(1))
    ecs = bed.aws.client("ecs")
    described = ecs.describe_services(
        cluster=bed.cluster, services=[service_name(namespace, name)]
    )["services"][0]
    deployment = described["deployments"][0]["id"]

    await provider.apply_config(ConfigMapPatch(name, namespace, set={"FLAG": "on"}))

    described = ecs.describe_services(
        cluster=bed.cluster, services=[service_name(namespace, name)]
    )["services"][0]
    assert described["deployments"][0]["id"] != deployment, "forceNewDeployment was sent"

    def rolled(status: Any) -> bool:
        ids = instance_ids(status)
        return ready(1)(status) and bool(ids) and not ids & instance_ids(before)

    await wait_for(provider, name, namespace, rolled)


async def test_empty_value_is_invalid_before_any_write(
    provider: AwsProvider, bed: EcsTestBed, service: tuple[str, str]
) -> None:
    namespace, name = service
    with pytest.raises(InvalidSpecError) as caught:
        await provider.apply_config(ConfigMapPatch(name, namespace, set={"EMPTY": "", "X": "1"}))
    assert [v.field for v in caught.value.violations] == ["patch.set['EMPTY']"]
    assert parameters(bed, namespace, name) == {}


async def test_many_keys_page_through(provider: AwsProvider, service: tuple[str, str]) -> None:
    namespace, name = service
    data = {f"KEY_{i:02d}": str(i) for i in range(25)}
    await provider.apply_config(ConfigMapPatch(name, namespace, set=data))
    read = await provider.get_config(name, namespace=namespace)
    assert read.data == data
    removed = await provider.apply_config(
        ConfigMapPatch(name, namespace, remove=tuple(sorted(data)[:12]))
    )
    assert removed.data == dict(sorted(data.items())[12:])
    assert (await provider.get_config(name, namespace=namespace)).data == removed.data
