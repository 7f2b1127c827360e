"""Config as the containers' environment, and Azure Monitor metrics, over the ARM emulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

import pytest

from alphaswarm_controller.providers.azure import AciProvider
from alphaswarm_core.providers.models import SECRET_MASK as SECRET_PLACEHOLDER
from alphaswarm_core.providers.protocol import (
    BackendRejectedError,
    BackendTimeoutError,
    ConfigMapPatch,
    ConfigVersionConflict,
    DeploymentSpec,
    DeploymentState,
    InvalidSpecError,
    MetricSample,
    Resources,
)
from alphaswarm_core.testing import ready, wait_for
from tests.fakes.arm_emulator import ArmEmulator
from tests.fakes.arm_testing import make_provider
from tests.fakes.faults import Kind

from .conftest import IMAGE

POLL = 0.02  # ALPHASWARM_AZURE_POLL_INTERVAL in emulator_env


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
    arm: ArmEmulator, provider: AciProvider
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


async def test_apply_config_replaces_one_replica_at_a_time_each_running_before_the_next() -> None:
    provision, run = 0.3, 0.2
    with ArmEmulator(provision_delay=provision, run_delay=run) as arm:
        provider = make_provider(arm, AciProvider)
        await provider.start(spec("roll", 3))
        await wait_for(provider, "roll", "cfg", ready(3), timeout=10)
        arm.reset_counts()
        began = time.monotonic()
        await provider.apply_config(ConfigMapPatch("roll", "cfg", set={"K": "v"}))
        elapsed = time.monotonic() - began
        # Returned only once the last replacement runs: every replica serves already.
        status = await provider.status("roll", namespace="cfg")
        assert (status.state, status.ready_replicas) == (DeploymentState.RUNNING, 3)
        writes = [
            (when, method, path.rsplit("/", 1)[-1])
            for when, method, path in arm.timeline
            if method in ("PUT", "DELETE")
        ]
        assert [(m, n) for _, m, n in writes] == [
            ("DELETE", "cfg-roll-0"),
            ("PUT", "cfg-roll-0"),
            ("DELETE", "cfg-roll-1"),
            ("PUT", "cfg-roll-1"),
            ("DELETE", "cfg-roll-2"),
            ("PUT", "cfg-roll-2"),
        ]
        # Each replica was taken down only after the one replaced before it was running.
        deletes = {name: when for when, method, name in writes if method == "DELETE"}
        for previous, current in (("cfg-roll-0", "cfg-roll-1"), ("cfg-roll-1", "cfg-roll-2")):
            running_at = arm.store.groups[previous].running_at
            assert running_at is not None and running_at <= deletes[current]
        # One wait at a time, one GET per poll interval: bounded by the time the roll took
        # (plus a listing and a final read per replica), never spinning.
        assert arm.count("GET") <= elapsed / POLL + 3 * 4
        await provider.close()


async def test_a_replacement_that_does_not_start_ends_the_roll(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    await provider.start(spec("bad", 3))
    await wait_for(provider, "bad", "cfg", ready(3), timeout=10)
    arm.store.failing_images.add(IMAGE)  # the registry lost the image meanwhile
    with pytest.raises(BackendRejectedError) as caught:
        await provider.apply_config(ConfigMapPatch("bad", "cfg", set={"K": "v"}))
    assert "cfg-bad-0" in caught.value.message
    assert "ErrImagePull" in caught.value.message
    versions = {
        name: arm.store.groups[name].body["tags"]["alphaswarm-config-version"]
        for name in ("cfg-bad-0", "cfg-bad-1", "cfg-bad-2")
    }
    assert versions == {"cfg-bad-0": "1", "cfg-bad-1": "0", "cfg-bad-2": "0"}


async def test_waiting_for_a_replacement_is_bounded_by_the_ready_timeout() -> None:
    with ArmEmulator(provision_delay=0.05, run_delay=30.0) as arm:
        provider = make_provider(arm, AciProvider, ALPHASWARM_AZURE_READY_TIMEOUT="0.5")
        await provider.start(spec("slow", 2))
        arm.reset_counts()
        with pytest.raises(BackendTimeoutError) as caught:
            await provider.apply_config(ConfigMapPatch("slow", "cfg", set={"K": "v"}))
        assert "ALPHASWARM_AZURE_READY_TIMEOUT" in caught.value.message
        assert arm.count("PUT") == 1, "the second replica is not touched"
        assert arm.count("GET", r"/cfg-slow-0$") <= 0.5 / POLL + 2
        await provider.close()


async def test_stale_version_is_a_conflict_and_changes_nothing(
    arm: ArmEmulator, provider: AciProvider
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


async def test_concurrent_writers_of_one_version_one_wins_on_every_replica(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    # ARM has no compare-and-swap on a group: without the provider's own per-service
    # serialisation both writers read version 0, both "won", and the replicas ended
    # up with a mix of the two configs, all tagged 1.
    await provider.start(spec("both", 2))
    results = await asyncio.gather(
        *(
            provider.apply_config(
                ConfigMapPatch("both", "cfg", set={"WHO": who}, expected_version="0")
            )
            for who in ("a", "b")
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, ConfigVersionConflict) for r in results) == 1, results
    (winner,) = [r for r in results if not isinstance(r, BaseException)]
    assert winner.version == "1"
    for name in ("cfg-both-0", "cfg-both-1"):
        assert {"name": "WHO", "value": winner.data["WHO"]} in env_of(arm, name)
    assert len(provider.service_locks) == 0, "no lock is kept once nobody waits"


async def test_concurrent_unconditional_patches_keep_both_keys(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    await provider.start(spec("keys", 2))
    await asyncio.gather(
        provider.apply_config(ConfigMapPatch("keys", "cfg", set={"A": "1"})),
        provider.apply_config(ConfigMapPatch("keys", "cfg", set={"B": "2"})),
    )
    now = await provider.get_config("keys", namespace="cfg")
    assert (dict(now.data), now.version) == ({"A": "1", "B": "2"}, "2")
    for name in ("cfg-keys-0", "cfg-keys-1"):
        assert {"name": "A", "value": "1"} in env_of(arm, name)
        assert {"name": "B", "value": "2"} in env_of(arm, name)


async def test_secret_keys_are_secure_values_never_read_back(
    arm: ArmEmulator, provider: AciProvider
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


async def test_config_keys_acis_variable_names_refuse_fail_before_any_call(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    await provider.start(spec("names", 1))
    arm.reset_counts()
    for key in ("app.mode", "1st", "secret.with-dash"):
        with pytest.raises(InvalidSpecError) as caught:
            await provider.apply_config(ConfigMapPatch("names", "cfg", set={key: "x"}))
        assert caught.value.violations[0].field == f"patch.set[{key!r}]"
    assert arm.requests == []


async def test_placeholder_cannot_be_written_back(provider: AciProvider) -> None:
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


async def test_metrics_are_summed_across_groups(arm: ArmEmulator, provider: AciProvider) -> None:
    await provider.start(spec("hot", 2))
    await wait_for(provider, "hot", "cfg", ready(2), timeout=10)
    arm.store.metric_values["cfg-hot-0"] = (300.0, 100 * 2**20)
    arm.store.metric_values["cfg-hot-1"] = (200.0, 50 * 2**20)
    stream = provider.stream_metrics("hot", namespace="cfg", interval_seconds=0.05)
    [sample] = await _take(stream, 1)
    assert sample.ok
    assert sample.replicas == 2
    # MetricSample.cpu_percent: percent of one core, summed over replicas (500m = 50).
    assert sample.cpu_percent == 50.0
    assert sample.memory_bytes == 150 * 2**20
    assert arm.count("GET", r"/providers/Microsoft.Insights/metrics$") == 2


async def test_cpu_percent_is_the_protos_unit(arm: ArmEmulator, provider: AciProvider) -> None:
    """Two replicas each using half a core report 100, whatever their CPU requests."""
    await provider.start(spec("unit", 2))
    await wait_for(provider, "unit", "cfg", ready(2), timeout=10)
    arm.store.metric_values["cfg-unit-0"] = (500.0, 2**20)
    arm.store.metric_values["cfg-unit-1"] = (500.0, 2**20)
    [sample] = await _take(provider.stream_metrics("unit", namespace="cfg"), 1)
    assert sample.cpu_percent == 100.0


async def test_metrics_survive_a_transient_error(arm: ArmEmulator, provider: AciProvider) -> None:
    await provider.start(spec("flaky", 1))
    await wait_for(provider, "flaky", "cfg", ready(1), timeout=10)
    # A 503 outlasting the SDK's retries: the sample says so and the stream goes on.
    arm.faults.inject("arm:Metrics_List", Kind.UNAVAILABLE, code="ServiceUnavailable", times=4)
    samples = await _take(
        provider.stream_metrics("flaky", namespace="cfg", interval_seconds=0.05), 3
    )
    assert not samples[0].ok
    assert "ServiceUnavailable" in samples[0].error
    assert samples[1].ok and samples[2].ok
    assert samples[2].memory_bytes > 0
