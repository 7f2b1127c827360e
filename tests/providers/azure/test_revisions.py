"""ACI revisions beyond the contract: crash loops, put-back, secrets kept, records, settings."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from alphaswarm_controller.providers.azure import AciProvider, AciRevisionsProvider, select_backend
from alphaswarm_controller.providers.azure.aci import TAG_REVISION
from alphaswarm_controller.providers.azure.revision_store import blob_name
from alphaswarm_core.providers.protocol import (
    ConfigMapPatch,
    InvalidSpecError,
    RolloutState,
    SettingInvalid,
)
from alphaswarm_core.testing import SpecFactory, wait_for
from alphaswarm_core.testing.contract import rollout_done, rollout_succeeded
from tests.fakes.arm_emulator import ArmEmulator
from tests.fakes.arm_testing import emulator_env

CRASHING = "registry.example/crashes:1"


@pytest.mark.asyncio
async def test_a_crash_looping_revision_is_failed_and_the_replica_put_back(
    arm: ArmEmulator,
    revisions_provider: AciRevisionsProvider,
    spec_factory: SpecFactory,
    namespace: str,
) -> None:
    arm.store.crashing_images.add(CRASHING)
    service = "crashy"
    await revisions_provider.start(spec_factory(service, namespace, env={"MODE": "a"}))
    await rollout_succeeded(revisions_provider, service, namespace, 1)
    good = spec_factory(service, namespace, env={"MODE": "a"})
    await revisions_provider.start(replace(good, image=CRASHING, progress_deadline_seconds=15))
    status = await wait_for(revisions_provider, service, namespace, rollout_done(2))
    assert status.rollout is not None and status.rollout.state is RolloutState.FAILED
    assert status.rollout.reason == "CRASH_LOOP", status.rollout
    assert status.observed_revision == 1
    tags = arm.store.held()[f"{namespace}-{service}-0"]
    assert tags[TAG_REVISION] == "1", "the replica runs revision 1 again"


@pytest.mark.asyncio
async def test_secret_config_survives_a_changed_spec_and_a_scale(
    arm: ArmEmulator,
    revisions_provider: AciRevisionsProvider,
    spec_factory: SpecFactory,
    namespace: str,
) -> None:
    service = "secretive"
    await revisions_provider.start(spec_factory(service, namespace))
    await revisions_provider.apply_config(
        ConfigMapPatch(service, namespace, set={"secret.TOKEN": "s3cr3t"})
    )
    await revisions_provider.start(spec_factory(service, namespace, env={"MODE": "b"}))
    await revisions_provider.scale(service, 2, namespace=namespace)
    await rollout_succeeded(revisions_provider, service, namespace, 3)
    await wait_for(revisions_provider, service, namespace, lambda s: s.ready_replicas == 2)
    for index in range(2):
        body = arm.store.groups[f"{namespace}-{service}-{index}"].body
        variables = body["properties"]["containers"][0]["properties"]["environmentVariables"]
        assert {"name": "TOKEN", "secureValue": "s3cr3t"} in variables
    shown = await revisions_provider.get_config(service, namespace=namespace)
    assert "s3cr3t" not in str(shown.data) and shown.version == "1"


@pytest.mark.asyncio
async def test_concurrent_changes_end_with_every_replica_on_the_newest_revision(
    arm: ArmEmulator,
    revisions_provider: AciRevisionsProvider,
    spec_factory: SpecFactory,
    namespace: str,
) -> None:
    # Each change's roll used to walk the replicas it listed from its own record: the
    # older change could replace a replica after the newer one had, leaving it behind.
    service = "busy"
    await revisions_provider.start(spec_factory(service, namespace, replicas=2))
    await rollout_succeeded(revisions_provider, service, namespace, 1)
    await asyncio.gather(
        revisions_provider.apply_config(ConfigMapPatch(service, namespace, set={"A": "1"})),
        revisions_provider.apply_config(ConfigMapPatch(service, namespace, set={"B": "2"})),
    )
    await rollout_succeeded(revisions_provider, service, namespace, 3)
    held = arm.store.held()
    assert [held[f"{namespace}-{service}-{i}"][TAG_REVISION] for i in range(2)] == ["3", "3"]
    assert dict((await revisions_provider.get_config(service, namespace=namespace)).data) == {
        "A": "1",
        "B": "2",
    }


def test_without_a_store_setting_the_aci_mode_keeps_no_revisions(arm: ArmEmulator) -> None:
    assert select_backend(emulator_env(arm)) is AciProvider
    assert "revisions" not in AciProvider.capabilities()
    env = emulator_env(
        arm, ALPHASWARM_AZURE_REVISIONS_ACCOUNT_URL="https://acct.blob.core.windows.net"
    )
    assert select_backend(env) is AciRevisionsProvider
    assert "revisions" in AciRevisionsProvider.capabilities()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ALPHASWARM_AZURE_REVISIONS_ACCOUNT_URL", "http://acct.blob.core.windows.net"),
        ("ALPHASWARM_AZURE_REVISIONS_ACCOUNT_URL", "https://acct.blob.core.windows.net/x"),
        ("ALPHASWARM_AZURE_REVISIONS_CONNECTION_STRING", "AccountKey=hunter2-not-a-string"),
    ],
)
def test_bad_store_settings_name_the_variable_never_the_secret(
    arm: ArmEmulator, name: str, value: str
) -> None:
    provider = AciRevisionsProvider(env=emulator_env(arm, **{name: value}))
    with pytest.raises(SettingInvalid) as caught:
        provider._check_credentials()
    assert name in str(caught.value) and "hunter2" not in str(caught.value)


def test_bad_container_and_history_settings_are_refused(arm: ArmEmulator) -> None:
    url = "https://acct.blob.core.windows.net"
    for extra in (
        {"ALPHASWARM_AZURE_REVISIONS_CONTAINER": "Bad--Name"},
        {"ALPHASWARM_AZURE_REVISION_HISTORY": "1"},
    ):
        env = emulator_env(arm, ALPHASWARM_AZURE_REVISIONS_ACCOUNT_URL=url, **extra)
        with pytest.raises(SettingInvalid) as caught:
            AciRevisionsProvider(env=env)._check_credentials()
        assert next(iter(extra)) in str(caught.value)


def test_blob_names_take_only_dns_labels() -> None:
    assert blob_name("ns", "svc-1") == "ns/svc-1.json"
    for namespace, service in (("ns", "../x"), ("NS", "svc"), ("ns", "svc\n"), ("", "svc")):
        with pytest.raises(InvalidSpecError):
            blob_name(namespace, service)
