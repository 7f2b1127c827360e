"""DeleteDeployment on Container Instances: every group of the service, waited for.

The store of the ARM emulator is the judge of what is left, not the provider.
"""

from __future__ import annotations

import pytest

from alphaswarm_controller.providers.azure import AciProvider
from alphaswarm_controller.providers.azure.retry import CONFLICT_ATTEMPTS
from alphaswarm_core.providers.protocol import (
    BackendConflictError,
    ConfigMapPatch,
    DeploymentNotFoundError,
    DeploymentSpec,
)
from alphaswarm_core.testing import ready, wait_for
from tests.fakes.arm_emulator import ArmEmulator
from tests.fakes.arm_testing import make_provider
from tests.fakes.faults import Kind

from .conftest import IMAGE
from .test_emulator import Client, group

DELETE = "arm:ContainerGroups_Delete"


def spec(service: str, replicas: int = 1) -> DeploymentSpec:
    return DeploymentSpec(
        service_id=service, namespace="team", image=IMAGE, replicas=replicas
    ).validate()


async def test_delete_removes_every_group_and_nothing_else(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    await provider.start(spec("gone", 3))
    await provider.start(spec("kept", 1))
    await wait_for(provider, "gone", "team", ready(3), timeout=30)
    await provider.apply_config(
        ConfigMapPatch("gone", "team", set={"PLAIN": "v", "secret.TOKEN": "s3cret"})
    )
    arm.reset_counts()
    assert await provider.delete("gone", namespace="team") is True
    assert arm.count("DELETE") == 3, "one delete per group"
    assert sorted(arm.store.held()) == ["team-kept-0"], "the other service is untouched"
    with pytest.raises(DeploymentNotFoundError):
        await provider.get_config("gone", namespace="team")
    with pytest.raises(DeploymentNotFoundError):
        await provider.delete("gone", namespace="team")
    arm.reset_counts()
    assert await provider.delete("gone", namespace="team", allow_missing=True) is False
    assert arm.count("DELETE") == 0


async def test_a_stopped_service_is_deleted_too(arm: ArmEmulator, provider: AciProvider) -> None:
    await provider.start(spec("parked", 2))
    await wait_for(provider, "parked", "team", ready(2), timeout=30)
    await provider.stop("parked", namespace="team")
    assert await provider.delete("parked", namespace="team") is True
    assert arm.store.held() == {}


async def test_delete_right_after_start_while_groups_provision() -> None:
    with ArmEmulator(provision_delay=5.0) as arm:
        provider = make_provider(arm, AciProvider)
        await provider.start(spec("young", 2))
        assert await provider.delete("young", namespace="team") is True
        assert arm.store.held() == {}
        await provider.close()


async def test_a_conflicting_delete_is_retried_then_reported(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    await provider.start(spec("busy", 1))
    arm.faults.inject(DELETE, Kind.CONFLICT, times=2)
    assert await provider.delete("busy", namespace="team") is True
    assert arm.faults.count(DELETE) == 3
    assert arm.store.held() == {}

    await provider.start(spec("stuck", 1))
    arm.faults.inject(DELETE, Kind.CONFLICT, times=0)
    before = arm.faults.count(DELETE)
    with pytest.raises(BackendConflictError) as caught:
        await provider.delete("stuck", namespace="team")
    assert caught.value.code == "ABORTED" and "still changing" in caught.value.message
    assert arm.faults.count(DELETE) - before == CONFLICT_ATTEMPTS
    arm.faults.clear()
    assert await provider.delete("stuck", namespace="team") is True


async def test_groups_alphaswarm_did_not_create_are_never_deleted(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    assert Client(arm).put("team-foreign-0", group()).status_code == 201
    with pytest.raises(DeploymentNotFoundError):
        await provider.delete("foreign", namespace="team")
    assert list(arm.store.held()) == ["team-foreign-0"]
