"""The gcp provider's tests: the GCP gRPC emulators, both backend classes, offline credentials.

Every test runs with the emulators' background faults switched on (throttling and 5xx
on a share of all requests, deterministically), so the whole suite shows the provider
surviving them; a test that needs exact request counts of the happy path calls
``emulator.faults.clear()`` first, or counts ``served`` requests.

Cloud Run mode: ``cloud_run`` (opened ``CloudRunProvider``). GKE mode: ``gke`` (opened
``GkeProvider``), whose chain is the production one: the service-account key is loaded by
google-auth, whose token refresh runs the JWT-bearer grant against a token endpoint on
127.0.0.1; GetCluster (the ClusterManager emulator) gives the API server endpoint and CA;
the Kubernetes calls go to the real kube-apiserver of tests/realkube (behind a counting
proxy), whose token webhook asks the token endpoint's tokeninfo whose the Google access
token is, as GKE does; RBAC is on and that account holds the documented RBAC.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from alphaswarm_controller.providers.gcp import CloudRunProvider, GkeProvider
from alphaswarm_core.providers.protocol import Resources
from alphaswarm_core.testing import SpecFactory, spec_factory_for, unique_name
from tests.fakes.faults import Kind
from tests.fakes.gcp_auth import (
    PROJECT,
    GkeAuthenticator,
    TokenServer,
    account_email,
    write_service_account,
)
from tests.fakes.gcp_server import GcpEmulator
from tests.realkube.cluster import ControlPlane
from tests.realkube.managed import ManagedCluster, managed_cluster

IMAGE = "us-docker.pkg.dev/cloudrun/container/hello:latest"
#: The access token the token endpoint issues (google-auth refreshes into it).
TOKEN = "google-access-token-not-a-secret"
REGION = "europe-west4"
CLUSTER = "prod"
#: One request in 7 is throttled and one in 11 fails with UNAVAILABLE, on every API.
THROTTLE_EVERY = 7
UNAVAILABLE_EVERY = 11


def with_background_faults(emulator: GcpEmulator) -> GcpEmulator:
    emulator.faults.background(Kind.THROTTLED, every=THROTTLE_EVERY)
    emulator.faults.background(Kind.UNAVAILABLE, every=UNAVAILABLE_EVERY)
    return emulator


def served(emulator: GcpEmulator, operation: str) -> int:
    """Requests of ``operation`` that were served (not answered with a fault)."""
    return emulator.faults.seen[operation] - emulator.faults.failed[operation]


@pytest.fixture(scope="session")
def service_account_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_service_account(tmp_path_factory.mktemp("gcp") / "key.json")


@pytest.fixture
def emulator() -> Iterator[GcpEmulator]:
    # Pages of two services, so every list follows page tokens.
    with GcpEmulator(max_page_size=2) as running:
        yield with_background_faults(running)


@pytest.fixture
def gcp_env(emulator: GcpEmulator, service_account_key: Path) -> dict[str, str]:
    return {
        "GOOGLE_APPLICATION_CREDENTIALS": str(service_account_key),
        "ALPHASWARM_GCP_REGION": REGION,
        "ALPHASWARM_GCP_API_ENDPOINT": emulator.address,
        "ALPHASWARM_GCP_POLL_INTERVAL": "0.02",
    }


@contextlib.asynccontextmanager
async def opened_cloud_run(env: dict[str, str]) -> AsyncIterator[CloudRunProvider]:
    """A Cloud Run provider opened on ``env``, closed after use."""
    provider = CloudRunProvider(env=env)
    await provider.open()
    try:
        yield provider
    finally:
        await provider.close()


@pytest.fixture
async def cloud_run(gcp_env: dict[str, str]) -> AsyncIterator[CloudRunProvider]:
    async with opened_cloud_run(gcp_env) as provider:
        yield provider


@pytest.fixture
def cloud_run_specs() -> SpecFactory:
    return spec_factory_for(image=IMAGE, resources=Resources(cpu="1", memory="512Mi"))


@pytest.fixture
def token_server() -> Iterator[TokenServer]:
    with TokenServer(token=TOKEN) as server:
        yield server


@pytest.fixture
def kube(real_kube_cluster: ControlPlane, token_server: TokenServer) -> Iterator[ManagedCluster]:
    """The GKE cluster: the real API server, Google tokens checked through tokeninfo."""
    with managed_cluster(
        real_kube_cluster,
        account_email(),
        authenticator=GkeAuthenticator(token_server.tokeninfo_url),
        rbac_suffix="gke",
    ) as cluster:
        yield cluster


@pytest.fixture
def gke_emulator(emulator: GcpEmulator, kube: ManagedCluster) -> GcpEmulator:
    # GKE reports the endpoint as a bare address; the CA is base64 PEM.
    emulator.container.add_cluster(
        PROJECT, REGION, CLUSTER, endpoint=kube.url.removeprefix("https://"), ca_pem=kube.ca_pem
    )
    return emulator


@pytest.fixture
def gke_env(gke_emulator: GcpEmulator, token_server: TokenServer, tmp_path: Path) -> dict[str, str]:
    key = write_service_account(tmp_path / "key.json", token_uri=token_server.url)
    return {
        "GOOGLE_APPLICATION_CREDENTIALS": str(key),
        "ALPHASWARM_GCP_MODE": "gke",
        "ALPHASWARM_GCP_GKE_CLUSTER": CLUSTER,
        "ALPHASWARM_GCP_REGION": REGION,
        "ALPHASWARM_GCP_API_ENDPOINT": gke_emulator.address,
        "ALPHASWARM_KUBERNETES_CREATE_NAMESPACES": "true",
    }


@pytest.fixture
async def gke(gke_env: dict[str, str]) -> AsyncIterator[GkeProvider]:
    provider = GkeProvider(env=gke_env)
    await provider.open()
    try:
        yield provider
    finally:
        await provider.close()


@pytest.fixture
def namespace() -> str:
    return unique_name("ns")
