"""The azure provider's tests: the ARM emulator, an ACI-mode provider, and an AKS cluster
reached through the cluster user credential ARM hands out: the real kube-apiserver of
tests/realkube (behind a counting proxy), checking the cluster user's token through its
token webhook, RBAC on, the user holding the documented RBAC. Every provider here is the
class ``select_backend`` picks, built as the registry builds it, with the real azure-mgmt
(and kubernetes) clients."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator

import pytest
import yaml

from alphaswarm_controller.providers.azure import AciProvider, AciRevisionsProvider, AksProvider
from alphaswarm_core.providers.protocol import Resources
from alphaswarm_core.testing import SpecFactory, spec_factory_for, unique_name
from tests.fakes.arm_emulator import ArmEmulator
from tests.fakes.arm_testing import emulator_env, make_provider
from tests.fakes.azurite import azurite_blob
from tests.realkube.cluster import ControlPlane
from tests.realkube.managed import ManagedCluster, managed_cluster

IMAGE = "mcr.microsoft.com/azuredocs/aci-helloworld:latest"
LOG_COMMAND = ("/bin/sh", "-c", "while true; do date; sleep 0.2; done")
"""Prints a line every 0.2 s (the image has a shell); the emulator writes one per 0.2 s."""
CLUSTER = "prod-aks"
#: The local account AKS's listClusterUserCredential names (clusterUser_<group>_<cluster>).
CLUSTER_USER = f"clusterUser_rg_{CLUSTER}"


@pytest.fixture
def arm() -> Iterator[ArmEmulator]:
    with ArmEmulator() as emulator:
        yield emulator


@pytest.fixture
async def provider(arm: ArmEmulator) -> AsyncIterator[AciProvider]:
    instance = make_provider(arm, AciProvider)
    await instance.open()
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture(scope="session")
def azurite() -> Iterator[str]:
    """Azurite's blob service for the whole session (per worker); its connection string."""
    with azurite_blob() as connection:
        yield connection


def revisions_env(arm: ArmEmulator, azurite: str, **extra: str) -> dict[str, str]:
    """The aci mode with revision records in Azurite (a container per test: no test
    sees another's records)."""
    return emulator_env(
        arm,
        ALPHASWARM_AZURE_REVISIONS_CONNECTION_STRING=azurite,
        ALPHASWARM_AZURE_REVISIONS_CONTAINER=unique_name("rev"),
        **extra,
    )


@pytest.fixture
async def revisions_provider(arm: ArmEmulator, azurite: str) -> AsyncIterator[AciRevisionsProvider]:
    instance = make_provider(arm, AciRevisionsProvider, env=revisions_env(arm, azurite))
    await instance.open()
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
def namespace() -> str:
    return unique_name("ns")


@pytest.fixture
def spec_factory() -> SpecFactory:
    return spec_factory_for(image=IMAGE, resources=Resources(cpu="500m", memory="512Mi"))


# -- AKS ---------------------------------------------------------------------------------------


def user_kubeconfig(kube: ManagedCluster, token: str | None = None) -> str:
    """What AKS returns for a cluster with local accounts: server, CA data, user token."""
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": CLUSTER,
                    "cluster": {
                        "server": kube.url,
                        "certificate-authority-data": base64.b64encode(kube.ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": CLUSTER_USER, "user": {"token": token or kube.token}}],
            "contexts": [{"name": CLUSTER, "context": {"cluster": CLUSTER, "user": CLUSTER_USER}}],
            "current-context": CLUSTER,
        }
    )


def aks_env(arm: ArmEmulator, **extra: str) -> dict[str, str]:
    settings = {
        "ALPHASWARM_AZURE_MODE": "aks",
        "ALPHASWARM_AZURE_AKS_CLUSTER": CLUSTER,
        "ALPHASWARM_KUBERNETES_CREATE_NAMESPACES": "true",
        **extra,
    }
    env = emulator_env(arm, **settings)
    del env["ALPHASWARM_AZURE_LOCATION"]  # not needed in AKS mode
    return env


@pytest.fixture
def kube(real_kube_cluster: ControlPlane) -> Iterator[ManagedCluster]:
    """The AKS cluster: the real API server, the cluster user's token known to its webhook."""
    with managed_cluster(real_kube_cluster, CLUSTER_USER, rbac_suffix="aks") as cluster:
        yield cluster


@pytest.fixture
def aks_arm(kube: ManagedCluster) -> Iterator[ArmEmulator]:
    with ArmEmulator() as emulator:
        emulator.add_cluster(CLUSTER, user_kubeconfig(kube))
        yield emulator


@pytest.fixture
async def aks_provider(aks_arm: ArmEmulator) -> AsyncIterator[AksProvider]:
    instance = make_provider(aks_arm, AksProvider, env=aks_env(aks_arm))
    await instance.open()
    try:
        yield instance
    finally:
        await instance.close()
