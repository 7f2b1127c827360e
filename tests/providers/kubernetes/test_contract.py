"""The provider contract against a real kube-apiserver (tests/realkube).

Real Kubernetes v1.37 components: the provider connects as the cloud providers
connect to a managed cluster (``from_connection`` with the HTTPS endpoint, its
CA and a bearer token), Deployments become ReplicaSets and pods through the
real controllers and scheduler, kwok reports the pods Ready, and metrics come
from metrics-server through the aggregation layer. One test differs, and says
why: real metrics appear seconds after the pods.
"""

from __future__ import annotations

import pytest

from alphaswarm_core.providers.protocol import InfrastructureProvider
from alphaswarm_core.testing import ProviderContract, SpecFactory
from tests.realkube.contract import KUBERNETES_CAPABILITIES, RealKubeFixtures, read_real_metrics


class TestKubernetesContract(RealKubeFixtures, ProviderContract):
    expected_capabilities = KUBERNETES_CAPABILITIES

    @pytest.mark.usefixtures("real_kube_metrics")
    async def test_metrics_stream_until_cancelled(
        self, provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
    ) -> None:
        await read_real_metrics(provider, spec_factory, namespace)
