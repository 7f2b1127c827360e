"""The shipped contract suite, run with plain pytest against the procs provider."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from alphaswarm_core.testing import ProviderContract, SpecFactory, spec_factory_for, unique_name
from alphaswarm_procs import ProcsProvider


@pytest.fixture
async def provider() -> AsyncIterator[ProcsProvider]:
    # Tests may run as root (CI containers): opting in is what an operator would do.
    provider = ProcsProvider(env={"ALPHASWARM_PROCS_ALLOW_ROOT": "true"})
    await provider.open()
    yield provider
    await provider.close()


@pytest.fixture
def spec_factory() -> SpecFactory:
    return spec_factory_for(command=("sleep", "300"))


@pytest.fixture
def namespace() -> str:
    return unique_name("ns")


class TestProcsContract(ProviderContract):
    expected_capabilities = frozenset({"start", "stop", "scale", "status", "list"})
