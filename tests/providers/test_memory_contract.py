"""The in-memory provider of the service tests passes the contract it claims to."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from alphaswarm_core.testing import (
    Leftovers,
    ProviderContract,
    SpecFactory,
    spec_factory_for,
    unique_name,
)
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
    return spec_factory_for(image="memory/app:1")


class TestMemoryContract(ProviderContract):
    expected_capabilities = frozenset(
        {"start", "stop", "scale", "status", "list", "config", "metrics", "logs", "delete"}
        | {"revisions"}
    )

    @pytest.fixture
    def failing_spec_factory(self) -> SpecFactory:
        return spec_factory_for(image="memory/crash:1")  # CRASHING: it 'exits at once'

    @pytest.fixture
    def leftovers(self, provider: MemoryProvider) -> Leftovers:
        async def still(service_id: str, namespace: str) -> list[str]:
            return [
                f"{ns}/{sid}"
                for ns, sid in provider.services
                if (ns, sid) == (namespace, service_id)
            ]

        return still

    @pytest.fixture
    def log_spec_factory(self, spec_factory: SpecFactory) -> SpecFactory:
        return spec_factory  # every in-memory replica writes a line every 0.1 s
