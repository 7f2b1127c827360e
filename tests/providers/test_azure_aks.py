"""AKS mode: cluster user credentials from the ARM emulator, the cluster driven through the
kubernetes provider against the Kubernetes API emulator (HTTPS, bearer token)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping

import pytest
import yaml

from alphaswarm_controller.providers.azure import AzureProvider
from alphaswarm_controller.providers.azure.aks import parse_kubeconfig
from alphaswarm_core.providers.protocol import (
    BackendRejectedError,
    DeploymentSpec,
    InfrastructureProviderUnavailable,
    ResourceNotFoundError,
)
from alphaswarm_core.testing import ProviderContract, SpecFactory, ready, wait_for
from tests.fakes.arm_emulator import ArmEmulator
from tests.fakes.arm_testing import emulator_env, make_provider
from tests.fakes.kube_api import KubeApiEmulator

TOKEN = "aks-user-token-not-a-secret"
CLUSTER = "prod-aks"


def user_kubeconfig(kube: KubeApiEmulator, token: str = TOKEN) -> str:
    """What AKS returns for a cluster with local accounts: server, CA data, user token."""
    assert kube.ca_pem is not None
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
            "users": [{"name": f"clusterUser_rg_{CLUSTER}", "user": {"token": token}}],
            "contexts": [
                {
                    "name": CLUSTER,
                    "context": {"cluster": CLUSTER, "user": f"clusterUser_rg_{CLUSTER}"},
                }
            ],
            "current-context": CLUSTER,
        }
    )


@pytest.fixture
def kube() -> Iterator[KubeApiEmulator]:
    emulator = KubeApiEmulator(token=TOKEN, tls=True).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def arm(kube: KubeApiEmulator) -> Iterator[ArmEmulator]:
    emulator = ArmEmulator().start()
    emulator.add_cluster(CLUSTER, user_kubeconfig(kube))
    yield emulator
    emulator.close()


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
async def provider(arm: ArmEmulator) -> AsyncIterator[AzureProvider]:
    provider = make_provider(arm, env=aks_env(arm))
    await provider.open()
    yield provider
    await provider.close()


@pytest.fixture
def namespace() -> str:
    return f"ns-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def spec_factory() -> SpecFactory:
    def make(
        service_id: str, namespace: str, replicas: int = 1, env: Mapping[str, str] | None = None
    ) -> DeploymentSpec:
        return DeploymentSpec(
            service_id=service_id,
            namespace=namespace,
            image="registry.example/app:1",
            replicas=replicas,
            env=dict(env or {}),
        ).validate()

    return make


class TestAzureAksContract(ProviderContract):
    expected_capabilities = frozenset(
        {"start", "stop", "scale", "status", "list", "config", "metrics"}
    )


async def test_credentials_are_fetched_once_and_used(
    arm: ArmEmulator,
    kube: KubeApiEmulator,
    provider: AzureProvider,
    namespace: str,
    spec_factory: SpecFactory,
) -> None:
    health = await provider.health()
    assert health.healthy and health.kind == "azure"
    assert health.details["aks_cluster"] == CLUSTER
    await provider.start(spec_factory("web", namespace, replicas=2))
    status = await wait_for(provider, "web", namespace, ready(2), timeout=30)
    assert status.provider == "azure"
    assert arm.count("POST", r"/listClusterUserCredential$") == 1
    assert kube.count("GET") > 0
    assert arm.count("PUT") == 0, "AKS mode creates no container groups"


async def test_unknown_cluster_is_not_found(arm: ArmEmulator) -> None:
    provider = make_provider(arm, env=aks_env(arm, ALPHASWARM_AZURE_AKS_CLUSTER="other"))
    with pytest.raises(ResourceNotFoundError) as caught:
        await provider.status("web", namespace="x")
    assert "other" in caught.value.message
    await provider.close()


async def test_aks_mode_needs_a_cluster_name(arm: ArmEmulator) -> None:
    env = aks_env(arm)
    del env["ALPHASWARM_AZURE_AKS_CLUSTER"]
    provider = make_provider(arm, env=env)
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        await provider.health()
    assert "ALPHASWARM_AZURE_AKS_CLUSTER" in caught.value.message


def test_entra_only_clusters_are_refused_clearly() -> None:
    text = yaml.safe_dump(
        {
            "clusters": [{"name": "c", "cluster": {"server": "https://aks.example"}}],
            "users": [{"name": "u", "user": {"exec": {"command": "kubelogin"}}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "c",
        }
    )
    with pytest.raises(BackendRejectedError) as caught:
        parse_kubeconfig(text)
    assert "kubelogin" in caught.value.message


def test_kubeconfig_parse_keeps_the_token_out_of_repr(kube: KubeApiEmulator) -> None:
    creds = parse_kubeconfig(user_kubeconfig(kube))
    assert creds.endpoint == kube.url
    assert creds.ca_pem == kube.ca_pem
    assert creds.token == TOKEN
    assert TOKEN not in repr(creds)
