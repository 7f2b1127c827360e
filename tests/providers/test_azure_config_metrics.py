"""Config as the containers' environment, and Azure Monitor metrics, over the ARM emulator."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator

import pytest

from alphaswarm_controller.providers.azure import AzureProvider
from alphaswarm_core.providers.models import SECRET_MASK as SECRET_PLACEHOLDER
from alphaswarm_core.providers.protocol import (
    BackendRejectedError,
    ConfigMapPatch,
    ConfigVersionConflict,
    DeploymentSpec,
    InvalidSpecError,
    MetricSample,
    Resources,
)
from alphaswarm_core.testing import ready, wait_for
from tests.fakes.arm_emulator import ArmEmulator
from tests.fakes.arm_testing import make_provider

IMAGE = "mcr.microsoft.com/azuredocs/aci-helloworld:latest"


@pytest.fixture
def arm() -> Iterator[ArmEmulator]:
    emulator = ArmEmulator().start()
    yield emulator
    emulator.close()


@pytest.fixture
async def provider(arm: ArmEmulator) -> AsyncIterator[AzureProvider]:
    provider = make_provider(arm)
    yield provider
    await provider.close()


def spec(service: str, replicas: int = 1, env: dict[str, str] | None = None) -> DeploymentSpec:
    return DeploymentSpec(
        service_id=service,
        namespace="cfg",
        image=IMAGE,
        replicas=replicas,
        env=env or {},
        resources=Resources(cpu="1", memory="1Gi"),
    ).validate()


def env_of(arm: ArmEmulator, name: str) -> list[dict[str, object]]:
    props = arm.store.groups[name].body["properties"]
    return list(props["containers"][0]["properties"]["environmentVariables"])


async def test_config_is_environment_and_version_tag(
    arm: ArmEmulator, provider: AzureProvider
) -> None:
    await provider.start(spec("app", 2, env={"BASE": "1"}))
    initial = await provider.get_config("app", namespace="cfg")
    assert (dict(initial.data), initial.version) == ({}, "0")
    applied = await provider.apply_config(
        ConfigMapPatch("app", "cfg", set={"GREETING": "hi"}, expected_version="0")
    )
    assert applied.version == "1"
    for name in ("cfg-app-0", "cfg-app-1"):
        variables = env_of(arm, name)
        assert {"name": "GREETING", "value": "hi"} in variables
        assert {"name": "BASE", "value": "1"} in variables, "spec env survives"
        assert arm.store.groups[name].body["tags"]["alphaswarm-config-version"] == "1"
    again = await provider.start(spec("app", 2, env={"BASE": "1"}))
    assert again.desired_replicas == 2
    assert (await provider.get_config("app", namespace="cfg")).data == {"GREETING": "hi"}


async def test_apply_config_recreates_groups_one_at_a_time(
    arm: ArmEmulator, provider: AzureProvider
) -> None:
    await provider.start(spec("roll", 3))
    await wait_for(provider, "roll", "cfg", ready(3), timeout=10)
    arm.reset_counts()
    await provider.apply_config(ConfigMapPatch("roll", "cfg", set={"K": "v"}))
    writes = [
        (method, path.rsplit("/", 1)[-1])
        for method, path in arm.requests
        if method in ("PUT", "DELETE")
    ]
    assert writes == [
        ("DELETE", "cfg-roll-0"),
        ("PUT", "cfg-roll-0"),
        ("DELETE", "cfg-roll-1"),
        ("PUT", "cfg-roll-1"),
        ("DELETE", "cfg-roll-2"),
        ("PUT", "cfg-roll-2"),
    ]
    await wait_for(provider, "roll", "cfg", ready(3), timeout=10)


async def test_stale_version_is_a_conflict_and_changes_nothing(
    arm: ArmEmulator, provider: AzureProvider
) -> None:
    await provider.start(spec("race", 1))
    await provider.apply_config(ConfigMapPatch("race", "cfg", set={"A": "1"}))
    arm.reset_counts()
    with pytest.raises(ConfigVersionConflict) as caught:
        await provider.apply_config(
            ConfigMapPatch("race", "cfg", set={"A": "2"}, expected_version="0")
        )
    assert caught.value.code == "ABORTED"
    assert arm.count("PUT") == arm.count("DELETE") == 0
    assert (await provider.get_config("race", namespace="cfg")).data == {"A": "1"}


async def test_secret_keys_are_secure_values_never_read_back(
    arm: ArmEmulator, provider: AzureProvider
) -> None:
    await provider.start(spec("vault", 1))
    applied = await provider.apply_config(
        ConfigMapPatch("vault", "cfg", set={"secret.DB_PASSWORD": "hunter2", "USER": "app"})
    )
    assert applied.data["secret.DB_PASSWORD"] == SECRET_PLACEHOLDER
    stored = env_of(arm, "cfg-vault-0")
    assert {"name": "DB_PASSWORD", "secureValue": "hunter2"} in stored
    config = await provider.get_config("vault", namespace="cfg")
    assert config.data == {"secret.DB_PASSWORD": SECRET_PLACEHOLDER, "USER": "app"}
    assert "hunter2" not in repr(config)

    # Recreating a group needs the secret again; without it nothing changes.
    arm.reset_counts()
    with pytest.raises(BackendRejectedError) as caught:
        await provider.apply_config(ConfigMapPatch("vault", "cfg", set={"USER": "other"}))
    assert "secret.DB_PASSWORD" in caught.value.message
    with pytest.raises(BackendRejectedError):
        await provider.scale("vault", 2, namespace="cfg")
    assert arm.count("PUT") == arm.count("DELETE") == 0

    # Supplying it again works; reads still never show it.
    rolled = await provider.apply_config(
        ConfigMapPatch("vault", "cfg", set={"USER": "other", "secret.DB_PASSWORD": "n3w"})
    )
    assert rolled.data["USER"] == "other"
    assert {"name": "DB_PASSWORD", "secureValue": "n3w"} in env_of(arm, "cfg-vault-0")


async def test_placeholder_cannot_be_written_back(provider: AzureProvider) -> None:
    await provider.start(spec("echo", 1))
    with pytest.raises(InvalidSpecError):
        await provider.apply_config(
            ConfigMapPatch("echo", "cfg", set={"secret.X": SECRET_PLACEHOLDER})
        )


async def _take(stream: AsyncGenerator[MetricSample, None], count: int) -> list[MetricSample]:
    samples: list[MetricSample] = []
    try:
        async for sample in stream:
            samples.append(sample)
            if len(samples) == count:
                break
    finally:
        await stream.aclose()
    return samples


async def test_metrics_are_summed_across_groups(arm: ArmEmulator, provider: AzureProvider) -> None:
    await provider.start(spec("hot", 2))
    await wait_for(provider, "hot", "cfg", ready(2), timeout=10)
    arm.store.metric_values["cfg-hot-0"] = (300.0, 100 * 2**20)
    arm.store.metric_values["cfg-hot-1"] = (200.0, 50 * 2**20)
    stream = provider.stream_metrics("hot", namespace="cfg", interval_seconds=0.05)
    [sample] = await _take(stream, 1)
    assert sample.ok
    assert sample.replicas == 2
    assert sample.cpu_percent == 50.0  # 500 millicores = half a core
    assert sample.memory_bytes == 150 * 2**20
    assert arm.count("GET", r"/providers/Microsoft.Insights/metrics$") == 2


async def test_metrics_survive_a_transient_error(arm: ArmEmulator, provider: AzureProvider) -> None:
    await provider.start(spec("flaky", 1))
    await wait_for(provider, "flaky", "cfg", ready(1), timeout=10)
    arm.inject("GET", r"/Microsoft.Insights/metrics$", 503, "ServiceUnavailable", "try later")
    samples = await _take(
        provider.stream_metrics("flaky", namespace="cfg", interval_seconds=0.05), 3
    )
    assert not samples[0].ok
    assert "ServiceUnavailable" in samples[0].error
    assert samples[1].ok and samples[2].ok
    assert samples[2].memory_bytes > 0
