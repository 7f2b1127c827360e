"""Pytest fixtures binding the kubernetes provider to the API emulator (shared by its tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping

import pytest

from alphaswarm_controller.providers.kubernetes import ClusterConnection, KubernetesProvider
from alphaswarm_core.providers.protocol import DeploymentSpec
from alphaswarm_core.testing import unique_name
from tests.fakes.kube_api import KubeApiEmulator

TOKEN = "emulator-token-not-a-secret"
IMAGE = "registry.example/team/app:1.0"


def make_spec(
    service_id: str,
    namespace: str,
    replicas: int = 1,
    env: Mapping[str, str] | None = None,
) -> DeploymentSpec:
    return DeploymentSpec(
        service_id=service_id,
        namespace=namespace,
        image=IMAGE,
        replicas=replicas,
        env=dict(env or {}),
    ).validate()


@pytest.fixture
def kube() -> Iterator[KubeApiEmulator]:
    """An HTTPS emulator that requires a bearer token, as a managed cluster does."""
    emulator = KubeApiEmulator(token=TOKEN, tls=True).start()
    yield emulator
    emulator.stop()


def connect(
    emulator: KubeApiEmulator, env: Mapping[str, str] | None = None, *, alias: str = "kubernetes"
) -> KubernetesProvider:
    connection = ClusterConnection(
        endpoint=emulator.url,
        ca_data=emulator.ca_pem,
        token=TOKEN,
        description="the test emulator",
    )
    return KubernetesProvider.from_connection(
        connection,
        env={"ALPHASWARM_KUBERNETES_CREATE_NAMESPACES": "true", **(env or {})},
        alias=alias,
    )


@pytest.fixture
async def kube_provider(kube: KubeApiEmulator) -> AsyncIterator[KubernetesProvider]:
    provider = connect(kube)
    await provider.open()
    yield provider
    await provider.close()


@pytest.fixture
def kube_namespace(kube: KubeApiEmulator) -> str:
    name = unique_name("ns")
    kube.create_namespace(name)
    return name
