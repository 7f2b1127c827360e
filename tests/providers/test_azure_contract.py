"""The provider contract, unchanged, against the azure provider over the ARM emulator."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Mapping

import pytest

from alphaswarm_controller.providers.azure import AzureProvider
from alphaswarm_core.providers.protocol import DeploymentSpec, Resources
from alphaswarm_core.testing import ProviderContract, SpecFactory
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
    await provider.open()
    yield provider
    await provider.close()


@pytest.fixture
def namespace() -> str:
    return f"ns-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def spec_factory() -> SpecFactory:
    def make(
        service_id: str,
        namespace: str,
        replicas: int = 1,
        env: Mapping[str, str] | None = None,
    ) -> DeploymentSpec:
        return DeploymentSpec(
            service_id=service_id,
            namespace=namespace,
            image=IMAGE,
            env=dict(env or {}),
            replicas=replicas,
            resources=Resources(cpu="500m", memory="512Mi"),
        ).validate()

    return make


class TestAzureContract(ProviderContract):
    expected_capabilities = frozenset(
        {"start", "stop", "scale", "status", "list", "config", "metrics"}
    )
