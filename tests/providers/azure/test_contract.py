"""The provider contract, unchanged, against each backend class of the ``azure`` alias.

Both run with the ARM emulator's background faults on: every 7th ARM request is
throttled (429 with Retry-After) and every 11th fails with 503. The provider must
still pass every case (the SDK pipeline's bounded retries absorb them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from alphaswarm_controller.providers.azure import AciRevisionsProvider, AksProvider
from alphaswarm_controller.providers.azure.aci import TAG_NAMESPACE, TAG_SERVICE
from alphaswarm_core.providers.protocol import InfrastructureProvider, Resources
from alphaswarm_core.testing import Leftovers, ProviderContract, SpecFactory, spec_factory_for
from tests.fakes.arm_emulator import ArmEmulator
from tests.fakes.arm_testing import make_provider
from tests.fakes.faults import Kind
from tests.realkube.contract import KUBERNETES_CAPABILITIES, RealKubeFixtures, read_real_metrics
from tests.realkube.managed import ManagedCluster

from .conftest import CLUSTER, IMAGE, LOG_COMMAND, aks_env, revisions_env, user_kubeconfig

THROTTLE_EVERY = 7
UNAVAILABLE_EVERY = 11


def faulted(emulator: ArmEmulator) -> ArmEmulator:
    emulator.faults.background(Kind.THROTTLED, every=THROTTLE_EVERY)
    emulator.faults.background(Kind.UNAVAILABLE, every=UNAVAILABLE_EVERY)
    return emulator


BAD_IMAGE = "registry.example/not-there:1"
"""An image the emulator cannot pull (its failing_images), as ACI reports one."""


class TestAciContract(ProviderContract):
    """The aci mode with revision records in Blob Storage (Azurite), as operators who
    set ALPHASWARM_AZURE_REVISIONS_ACCOUNT_URL run it."""

    expected_capabilities = frozenset(
        {
            "start",
            "stop",
            "scale",
            "status",
            "list",
            "config",
            "metrics",
            "logs",
            "delete",
            "revisions",
        }
    )

    @pytest.fixture
    def arm(self) -> Iterator[ArmEmulator]:
        with ArmEmulator() as emulator:
            emulator.store.failing_images.add(BAD_IMAGE)
            yield faulted(emulator)

    @pytest.fixture
    async def provider(self, arm: ArmEmulator, azurite: str) -> AsyncIterator[AciRevisionsProvider]:
        instance = make_provider(arm, AciRevisionsProvider, env=revisions_env(arm, azurite))
        await instance.open()
        try:
            yield instance
        finally:
            await instance.close()

    @pytest.fixture
    def failing_spec_factory(self) -> SpecFactory:
        return spec_factory_for(image=BAD_IMAGE, resources=Resources(cpu="500m", memory="512Mi"))

    @pytest.fixture
    def leftovers(self, arm: ArmEmulator) -> Leftovers:
        """What the emulator's store itself still holds of the service: its container
        groups (being deleted too), found by tag or by name. Config, secure values and
        the provider's bookkeeping live in those groups' definitions and tags."""

        async def held(service_id: str, namespace: str) -> list[str]:
            prefix = f"{namespace}-{service_id}-"
            return [
                f"containerGroups/{name} (tags {sorted(tags)})"
                for name, tags in sorted(arm.store.held().items())
                if (tags.get(TAG_SERVICE), tags.get(TAG_NAMESPACE)) == (service_id, namespace)
                or (name.startswith(prefix) and name[len(prefix) :].isdigit())
            ]

        return held

    @pytest.fixture
    def log_spec_factory(self) -> SpecFactory:
        # A command that prints a line every 0.2 s on a real image too; the emulated
        # container writes one line per 0.2 s from the moment it runs (arm_logs).
        return spec_factory_for(
            image=IMAGE,
            command=LOG_COMMAND,
            resources=Resources(cpu="500m", memory="512Mi"),
        )


class TestAksContract(RealKubeFixtures, ProviderContract):
    """AKS: the kubernetes provider's code, so Kubernetes' native watch too, against the real
    kube-apiserver as the cluster user (token webhook, documented RBAC)."""

    expected_capabilities = KUBERNETES_CAPABILITIES

    @pytest.fixture
    def aks_arm(self, kube: ManagedCluster) -> Iterator[ArmEmulator]:
        with ArmEmulator() as emulator:
            emulator.add_cluster(CLUSTER, user_kubeconfig(kube))
            yield faulted(emulator)

    @pytest.fixture
    async def provider(self, aks_arm: ArmEmulator) -> AsyncIterator[AksProvider]:
        instance = make_provider(aks_arm, AksProvider, env=aks_env(aks_arm))
        await instance.open()
        try:
            yield instance
        finally:
            await instance.close()

    @pytest.fixture
    def spec_factory(self) -> SpecFactory:
        return spec_factory_for(image="registry.example/app:1")

    @pytest.fixture
    def namespace(self, real_kube_namespace: str) -> str:
        return real_kube_namespace

    @pytest.mark.usefixtures("real_kube_metrics")
    async def test_metrics_stream_until_cancelled(
        self, provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
    ) -> None:
        await read_real_metrics(provider, spec_factory, namespace)
