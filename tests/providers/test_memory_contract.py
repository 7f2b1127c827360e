"""The in-memory provider of the service tests passes the contract it claims to."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from alphaswarm_core.testing import ProviderContract, SpecFactory, spec_factory_for, unique_name
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
        {"start", "stop", "scale", "status", "list", "config", "metrics"}
    )
