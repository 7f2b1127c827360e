"""The provider contract, once per backend mode of the ``gcp`` alias, under background faults.

Cloud Run mode runs against the Cloud Run / Secret Manager / Monitoring emulators, GKE
mode against the ClusterManager emulator plus the real kube-apiserver (tests/realkube:
Google tokens checked through its token webhook, RBAC on); both with one request in 7
throttled and one in 11 UNAVAILABLE on the GCP APIs (see conftest).
"""

from __future__ import annotations

import pytest

from alphaswarm_controller.providers.gcp import CloudRunProvider, GkeProvider
from alphaswarm_core.providers.protocol import InfrastructureProvider
from alphaswarm_core.testing import ProviderContract, SpecFactory
from tests.realkube.contract import KUBERNETES_CAPABILITIES, RealKubeFixtures, read_real_metrics
from tests.realkube.fixtures import make_spec


class TestCloudRunContract(ProviderContract):
    expected_capabilities = frozenset(
        {"start", "stop", "scale", "status", "list", "config", "metrics"}
    )

    @pytest.fixture
    def provider(self, cloud_run: CloudRunProvider) -> CloudRunProvider:
        return cloud_run

    @pytest.fixture
    def spec_factory(self, cloud_run_specs: SpecFactory) -> SpecFactory:
        return cloud_run_specs


class TestGkeContract(RealKubeFixtures, ProviderContract):
    # A KubernetesProvider: GKE mode has Kubernetes' native watch.
    expected_capabilities = KUBERNETES_CAPABILITIES

    @pytest.fixture
    def provider(self, gke: GkeProvider) -> GkeProvider:
        return gke

    @pytest.fixture
    def namespace(self, real_kube_namespace: str) -> str:
        return real_kube_namespace

    @pytest.fixture
    def spec_factory(self) -> SpecFactory:
        return make_spec

    @pytest.mark.usefixtures("real_kube_metrics")
    async def test_metrics_stream_until_cancelled(
        self, provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
    ) -> None:
        await read_real_metrics(provider, spec_factory, namespace)
