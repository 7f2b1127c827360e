"""The provider contract, unchanged, against the Kubernetes API emulator.

The provider is built exactly as the cloud providers build it for a managed
cluster: ``from_connection`` with an HTTPS endpoint, its CA bundle and a
bearer token, so the TLS and token path is what the contract exercises.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from alphaswarm_controller.providers.kubernetes import KubernetesProvider
from alphaswarm_core.testing import ProviderContract, SpecFactory
from tests.fakes.kube_api import KubeApiEmulator
from tests.fakes.kube_fixtures import connect, kube, kube_namespace, make_spec

__all__ = ["kube", "kube_namespace"]  # fixtures used by name below


@pytest.fixture
async def provider(kube: KubeApiEmulator) -> AsyncIterator[KubernetesProvider]:
    provider = connect(kube)
    await provider.open()
    yield provider
    await provider.close()


@pytest.fixture
def namespace(kube_namespace: str) -> str:
    return kube_namespace


@pytest.fixture
def spec_factory() -> SpecFactory:
    return make_spec


class TestKubernetesContract(ProviderContract):
    expected_capabilities = frozenset(
        {"start", "stop", "scale", "status", "list", "config", "metrics", "native_watch"}
    )
