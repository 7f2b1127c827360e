"""The provider contract, once per backend mode of the ``aws`` alias.

ECS mode: moto server behind the AWS front (tests/fakes/moto_server.py: the
services' limits, fault injection, the ECS control plane, the tasks' output in
CloudWatch Logs). EKS mode: moto's EKS and STS, and the real kube-apiserver
(tests/realkube) authenticating EKS tokens through its token webhook against STS,
RBAC on, the controller's user holding the documented RBAC (tests/fakes/eks_server.py).
``TestEcsContractUnderFaults`` runs the ECS suite again with throttling and 5xx
answered to a share of every request.

``leftovers`` reads moto (and the emulated ECS's service status) directly: the
service, its tasks, its task definition revisions, its SSM parameters and its log
group (delete removes the logs with the service, docs/providers.md).
``failing_spec_factory`` runs an image the emulated registry does not have: ECS's
circuit breaker fails its deployment (test_revisions.py covers a crashing command,
which the breaker does not see and the provider judges itself).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from alphaswarm_controller.providers.aws import EcsProvider, EksProvider
from alphaswarm_core.providers.protocol import InfrastructureProvider
from alphaswarm_core.testing import Leftovers, ProviderContract, SpecFactory
from tests.fakes.faults import Faults, Kind
from tests.fakes.moto_server import EcsTestBed, ecs_test_bed
from tests.realkube.contract import KUBERNETES_CAPABILITIES, RealKubeFixtures, read_real_metrics

from .support import failing_spec_factory, leftovers_of, log_spec_factory

ECS_CAPABILITIES = frozenset(
    {"start", "stop", "scale", "status", "list", "config", "metrics", "logs", "delete"}
    | {"revisions"}
)


class TestEcsContract(ProviderContract):
    expected_capabilities = ECS_CAPABILITIES

    @pytest.fixture
    def leftovers(self, bed: EcsTestBed) -> Leftovers:
        return leftovers_of(bed)

    @pytest.fixture
    def log_spec_factory(self) -> SpecFactory:
        return log_spec_factory()

    @pytest.fixture
    def failing_spec_factory(self) -> SpecFactory:
        return failing_spec_factory()


class TestEksContract(RealKubeFixtures, ProviderContract):
    """Kubernetes' own capabilities, native watch included (EksProvider is one)."""

    expected_capabilities = KUBERNETES_CAPABILITIES

    @pytest.fixture
    def provider(self, eks_provider: EksProvider) -> InfrastructureProvider:
        return eks_provider

    @pytest.fixture
    def namespace(self, real_kube_namespace: str) -> str:
        return real_kube_namespace

    @pytest.mark.usefixtures("real_kube_metrics")
    async def test_metrics_stream_until_cancelled(
        self, provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
    ) -> None:
        await read_real_metrics(provider, spec_factory, namespace)


@pytest.fixture(scope="class")
def faulty_bed() -> Iterator[EcsTestBed]:
    faults = Faults()
    # Every 7th request throttled and every 11th a 5xx, whatever the operation.
    faults.background(Kind.THROTTLED, every=7)
    faults.background(Kind.UNAVAILABLE, every=11)
    with ecs_test_bed(faults=faults) as test_bed:
        yield test_bed


class TestEcsContractUnderFaults(ProviderContract):
    """The same contract with AWS throttling and failing a share of all requests: the
    provider retries what it may and still keeps every promise."""

    expected_capabilities = ECS_CAPABILITIES

    @pytest.fixture
    def leftovers(self, faulty_bed: EcsTestBed) -> Leftovers:
        return leftovers_of(faulty_bed)

    @pytest.fixture
    def log_spec_factory(self) -> SpecFactory:
        return log_spec_factory()

    @pytest.fixture
    def failing_spec_factory(self) -> SpecFactory:
        return failing_spec_factory()

    @pytest.fixture
    async def provider(self, faulty_bed: EcsTestBed) -> AsyncIterator[EcsProvider]:
        instance = EcsProvider(env=faulty_bed.provider_env())
        await instance.open()
        try:
            yield instance
        finally:
            await instance.close()
