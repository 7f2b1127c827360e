"""The provider contract, unchanged, against a real kube-apiserver (tests/realkube).

The same suite as test_kubernetes_contract.py, bound to real Kubernetes
v1.37 components instead of the emulator: the provider connects as the cloud
providers connect to a managed cluster (``from_connection`` with the HTTPS
endpoint, its CA and a bearer token), Deployments become ReplicaSets and pods
through the real controllers and scheduler, and kwok reports the pods Ready.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from alphaswarm_controller.providers.kubernetes import KubernetesProvider
from alphaswarm_core.providers.protocol import CapabilityUnsupported, InfrastructureProvider
from tests.contract.suite import ProviderContract, SpecFactory, unique_name
from tests.fakes.kube_fixtures import make_spec
from tests.realkube.cluster import Endpoint
from tests.realkube.fixtures import connect_real


@pytest.fixture
async def provider(real_kube: Endpoint) -> AsyncIterator[KubernetesProvider]:
    provider = connect_real(real_kube)
    await provider.open()
    yield provider
    await provider.close()


@pytest.fixture
def namespace(real_kube_namespace: str) -> str:
    return real_kube_namespace


@pytest.fixture
def spec_factory() -> SpecFactory:
    return make_spec


class TestKubernetesContractOnRealApiServer(ProviderContract):
    pass

    async def test_metrics_stream_until_cancelled(
        self, provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
    ) -> None:
        """Replaces the contract's metrics test: this cluster serves no metrics.k8s.io yet.

        Without metrics-server the documented behaviour is one UNIMPLEMENTED
        (CapabilityUnsupported) from the stream, naming what to install; the
        real API server's 404 for the unregistered group is what triggers it.
        """
        service = unique_name()
        await provider.start(spec_factory(service, namespace, replicas=1))
        stream = provider.stream_metrics(service, namespace=namespace, interval_seconds=0.2)
        try:
            with pytest.raises(CapabilityUnsupported, match="metrics-server"):
                await anext(stream)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
