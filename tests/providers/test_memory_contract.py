"""The in-memory provider of the service tests passes the contract it claims to."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import pytest

from alphaswarm_core.providers.protocol import DeploymentSpec
from alphaswarm_core.testing import ProviderContract, SpecFactory, unique_name
from tests.fakes.memory_provider import MemoryProvider


@pytest.fixture
async def provider() -> AsyncIterator[MemoryProvider]:
    provider = MemoryProvider()
    await provider.open()
    yield provider
    await provider.close()


@pytest.fixture
def namespace() -> str:
    return unique_name("ns")


@pytest.fixture
def spec_factory() -> SpecFactory:
    def make(
        service_id: str,
        namespace: str,
        replicas: int = 1,
        env: Mapping[str, str] | None = None,
    ) -> DeploymentSpec:
        return DeploymentSpec(
            service_id, namespace, image="memory/app:1", replicas=replicas, env=dict(env or {})
        ).validate()

    return make


class TestMemoryContract(ProviderContract):
    expected_capabilities = frozenset(
        {"start", "stop", "scale", "status", "list", "config", "metrics"}
    )
