"""GKE mode: the cluster found through the ClusterManager emulator, driven as Kubernetes.

The chain is the production one: the service-account key is loaded by
google-auth, whose token refresh runs the JWT-bearer grant against a token
endpoint on 127.0.0.1; GetCluster (gRPC emulator) gives the API server
endpoint and CA; the kubernetes provider then calls the HTTPS Kubernetes API
emulator, which accepts only that bearer token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from alphaswarm_controller.providers.gcp import GcpProvider
from alphaswarm_core.providers.protocol import (
    BackendPermissionDenied,
    InfrastructureProviderUnavailable,
)
from alphaswarm_core.testing import ProviderContract, SpecFactory
from tests.fakes.gcp_auth import PROJECT, TokenServer, write_service_account
from tests.fakes.gcp_server import GcpEmulator
from tests.fakes.kube_api import KubeApiEmulator
from tests.fakes.kube_fixtures import TOKEN, kube, kube_namespace, make_spec

__all__ = ["kube", "kube_namespace"]  # fixtures used by name below

CLUSTER = "prod"
LOCATION = "europe-west4"


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    with TokenServer(token=TOKEN) as server:
        yield server


@pytest.fixture
async def emulator(kube: KubeApiEmulator) -> AsyncIterator[GcpEmulator]:
    emulator = GcpEmulator()
    assert kube.ca_pem is not None
    # GKE reports the endpoint as a bare address; the CA is base64 PEM.
    emulator.container.add_cluster(
        PROJECT, LOCATION, CLUSTER, endpoint=f"127.0.0.1:{kube.port}", ca_pem=kube.ca_pem
    )
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
def gke_env(emulator: GcpEmulator, token_server: TokenServer, tmp_path: Path) -> dict[str, str]:
    key = write_service_account(tmp_path / "key.json", token_uri=token_server.url)
    return {
        "GOOGLE_APPLICATION_CREDENTIALS": str(key),
        "ALPHASWARM_GCP_MODE": "gke",
        "ALPHASWARM_GCP_GKE_CLUSTER": CLUSTER,
        "ALPHASWARM_GCP_REGION": LOCATION,
        "ALPHASWARM_GCP_API_ENDPOINT": emulator.address,
        "ALPHASWARM_KUBERNETES_CREATE_NAMESPACES": "true",
    }


@pytest.fixture
async def provider(gke_env: dict[str, str]) -> AsyncIterator[GcpProvider]:
    provider = GcpProvider(env=gke_env)
    await provider.open()
    yield provider
    await provider.close()


@pytest.fixture
def namespace(kube_namespace: str) -> str:
    return kube_namespace


@pytest.fixture
def spec_factory() -> SpecFactory:
    return make_spec


class TestGcpGkeContract(ProviderContract):
    expected_capabilities = frozenset(
        {"start", "stop", "scale", "status", "list", "config", "metrics"}
    )


async def test_cluster_is_found_and_called_with_the_google_token(
    provider: GcpProvider,
    emulator: GcpEmulator,
    token_server: TokenServer,
    kube: KubeApiEmulator,
    namespace: str,
) -> None:
    health = await provider.health()
    assert health.healthy and (health.alias, health.kind) == ("gcp", "gcp")
    assert health.details["cluster"] == (
        f"projects/{PROJECT}/locations/{LOCATION}/clusters/{CLUSTER}"
    )
    assert emulator.log.count("GetCluster") == 1
    assert token_server.issued == [TOKEN]
    status = await provider.start(make_spec("web", namespace, replicas=1))
    assert status.provider == "gcp"
    assert kube.requests, "the kubernetes API emulator was called"
    assert emulator.log.count("GetCluster") == 1, "the connection is reused"


async def test_unknown_cluster_names_the_setting(gke_env: dict[str, str]) -> None:
    provider = GcpProvider(env={**gke_env, "ALPHASWARM_GCP_GKE_CLUSTER": "nope"})
    try:
        with pytest.raises(InfrastructureProviderUnavailable) as caught:
            await provider.health()
    finally:
        await provider.close()
    assert caught.value.reason == "CLUSTER_NOT_FOUND"
    assert "ALPHASWARM_GCP_GKE_CLUSTER" in caught.value.message


async def test_denied_cluster_read_names_the_role(
    gke_env: dict[str, str], emulator: GcpEmulator
) -> None:
    emulator.log.inject("GetCluster", grpc.StatusCode.PERMISSION_DENIED, "container.clusters.get")
    provider = GcpProvider(env=gke_env)
    try:
        with pytest.raises(BackendPermissionDenied, match=r"roles/container\.developer"):
            await provider.health()
    finally:
        await provider.close()
