"""GkeProvider: the cluster found through the ClusterManager emulator, driven as Kubernetes
against the real kube-apiserver, which checks the Google access token (tokeninfo, through its
token webhook) with RBAC on; Kubernetes requests are counted at the proxy in front of it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import google.auth.transport.requests
import pytest
from google.cloud import container_v1
from google.oauth2 import service_account

from alphaswarm_controller.providers.gcp import GkeProvider
from alphaswarm_controller.providers.kubernetes import ClusterConnection, KubernetesProvider
from alphaswarm_core.providers.protocol import (
    BackendPermissionDenied,
    InfrastructureProviderUnavailable,
    SettingInvalid,
)
from alphaswarm_core.testing import ready, wait_for
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
from tests.realkube.fixtures import make_spec
from tests.realkube.managed import ManagedCluster, managed_cluster

from .conftest import CLUSTER, REGION, TOKEN


def test_gke_provider_is_the_kubernetes_provider() -> None:
    assert issubclass(GkeProvider, KubernetesProvider)
    assert (GkeProvider.provider_alias, GkeProvider.provider_kind) == ("gcp", "gcp")
    assert GkeProvider.watch is KubernetesProvider.watch, "GKE mode uses the Kubernetes watch"
    assert "native_watch" in GkeProvider.capabilities()


async def test_cluster_is_found_and_called_with_the_google_token(
    gke: GkeProvider,
    emulator: GcpEmulator,
    token_server: TokenServer,
    kube: ManagedCluster,
    real_kube_namespace: str,
) -> None:
    kube_namespace = real_kube_namespace
    health = await gke.health()
    assert health.healthy and (health.alias, health.kind) == ("gcp", "gcp")
    assert health.details["cluster"] == (
        f"projects/{PROJECT}/locations/{REGION}/clusters/{CLUSTER}"
    )
    assert health.details["mode"] == "gke"
    served = (
        emulator.faults.seen["container:GetCluster"]
        - emulator.faults.failed["container:GetCluster"]
    )
    assert served == 1
    assert token_server.issued == [TOKEN]
    before = len(kube.proxy.requests)
    status = await gke.start(make_spec("web", kube_namespace, replicas=1))
    assert status.provider == "gcp"
    started = kube.proxy.requests[before:]
    deployment = f"/apis/apps/v1/namespaces/{kube_namespace}/deployments"
    assert any(r.path.startswith(deployment) for r in started), started
    # Every request to the cluster carried the Google token, the one token issued.
    assert {r.authorization for r in kube.proxy.requests} == {f"Bearer {TOKEN}"}
    assert token_server.issued == [TOKEN]
    assert (
        emulator.faults.seen["container:GetCluster"]
        == served + emulator.faults.failed["container:GetCluster"]
    ), "the connection is reused"


async def test_an_expiring_google_token_is_renewed_and_each_request_carries_the_latest(
    gke_emulator: GcpEmulator,
    real_kube_cluster: ControlPlane,
    tmp_path: Path,
    real_kube_namespace: str,
) -> None:
    """google-auth renews a token that expires within minutes: with one-second tokens,
    every request to the cluster carries a token just issued, never an old one; the
    cluster accepts only tokens the token endpoint issued (its tokeninfo, through the
    API server's token webhook)."""
    with (
        TokenServer(lifetime_seconds=1) as tokens,
        managed_cluster(
            real_kube_cluster,
            account_email(),
            authenticator=GkeAuthenticator(tokens.tokeninfo_url),
            rbac_suffix="gke-rotating",
        ) as cluster,
    ):
        gke_emulator.container.add_cluster(
            PROJECT,
            REGION,
            "rotating",
            endpoint=cluster.url.removeprefix("https://"),
            ca_pem=cluster.ca_pem,
        )
        key = write_service_account(tmp_path / "key.json", token_uri=tokens.url)
        provider = GkeProvider(
            env={
                "GOOGLE_APPLICATION_CREDENTIALS": str(key),
                "ALPHASWARM_GCP_MODE": "gke",
                "ALPHASWARM_GCP_GKE_CLUSTER": "rotating",
                "ALPHASWARM_GCP_REGION": REGION,
                "ALPHASWARM_GCP_API_ENDPOINT": gke_emulator.address,
                "ALPHASWARM_KUBERNETES_CREATE_NAMESPACES": "true",
            }
        )
        try:
            assert (await provider.health()).healthy
            await provider.start(make_spec("web", real_kube_namespace, replicas=1))
            await provider.status("web", namespace=real_kube_namespace)
        finally:
            await provider.close()
        sent = [r.authorization.removeprefix("Bearer ") for r in cluster.proxy.requests]
        issued = list(tokens.issued)
    assert len(sent) >= 3 and all(token in issued for token in sent), (sent, issued)
    # Requests run on several threads, so they may arrive out of issue order; none
    # reuses a token that had expired.
    assert len(set(sent)) == len(sent), f"a fresh token for each request: {sent}"


async def test_watch_is_a_kubernetes_watch_not_polling(
    gke: GkeProvider, kube: ManagedCluster, real_kube_namespace: str
) -> None:
    # Issue 15: EKS/AKS/GKE modes lost Kubernetes' native watch and polled status instead.
    kube_namespace = real_kube_namespace
    await gke.start(make_spec("watched", kube_namespace, replicas=1))
    await wait_for(gke, "watched", kube_namespace, ready(1))
    deployment = f"/apis/apps/v1/namespaces/{kube_namespace}/deployments/watched"
    pods = f"/api/v1/namespaces/{kube_namespace}/pods"
    before = len(kube.proxy.requests)
    watch = gke.watch("watched", namespace=kube_namespace, interval_seconds=0.05)
    try:
        async with asyncio.timeout(60):
            first = await anext(watch)
            assert first.ready_replicas == 1
            await gke.scale("watched", 3, namespace=kube_namespace)
            scaled = len(kube.proxy.requests)
            async for status in watch:
                if status.ready_replicas == 3:
                    break
    finally:
        await watch.aclose()
    watches = [r for r in kube.proxy.requests[before:] if "watch" in r.query]
    assert watches, "a Kubernetes watch request was made"
    # From the scale to three ready replicas, polling every 0.05 s would read the
    # Deployment and list its pods again and again; the watch's changes arrive on the
    # stream it already holds.
    after = [(r.method, r.path) for r in kube.proxy.requests[scaled:]]
    assert ("GET", deployment) not in after and ("GET", pods) not in after, after
    assert len(after) <= 2, after


async def test_kubernetes_settings_keep_their_names(gke_env: dict[str, str]) -> None:
    provider = GkeProvider(env={**gke_env, "ALPHASWARM_KUBERNETES_PAGE_SIZE": "7"})
    assert provider.page_size == 7
    assert provider.setting_name("GKE_CLUSTER") == "ALPHASWARM_GCP_GKE_CLUSTER"
    assert provider.setting_name("CREATE_NAMESPACES") == "ALPHASWARM_KUBERNETES_CREATE_NAMESPACES"
    assert provider.create_namespaces


async def test_from_connection_skips_the_lookup(
    gke_env: dict[str, str], emulator: GcpEmulator, kube: ManagedCluster, real_kube_namespace: str
) -> None:
    kube_namespace = real_kube_namespace
    # A Google access token the embedder got itself (the real google-auth flow).
    credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
        gke_env["GOOGLE_APPLICATION_CREDENTIALS"],
        scopes=["https://www.googleapis.com/auth/cloud-platform"],
    )
    credentials.refresh(google.auth.transport.requests.Request())
    connection = ClusterConnection(
        endpoint=kube.url, ca_data=kube.ca_pem, token=str(credentials.token)
    )
    provider = GkeProvider.from_connection(connection, env=gke_env, alias="gcp", kind="gcp")
    assert isinstance(provider, GkeProvider)
    try:
        status = await provider.start(make_spec("direct", kube_namespace))
    finally:
        await provider.close()
    assert status.provider == "gcp"
    assert emulator.faults.count("container:GetCluster") == 0


async def test_unknown_cluster_names_the_setting(gke_env: dict[str, str]) -> None:
    provider = GkeProvider(env={**gke_env, "ALPHASWARM_GCP_GKE_CLUSTER": "nope"})
    try:
        with pytest.raises(InfrastructureProviderUnavailable) as caught:
            await provider.health()
    finally:
        await provider.close()
    assert caught.value.reason == "CLUSTER_NOT_FOUND"
    assert "ALPHASWARM_GCP_GKE_CLUSTER" in caught.value.message


async def test_a_cluster_still_provisioning_is_not_ready(
    gke_env: dict[str, str], emulator: GcpEmulator, kube: ManagedCluster
) -> None:
    emulator.container.add_cluster(
        PROJECT,
        REGION,
        "fresh",
        endpoint="",
        ca_pem=kube.ca_pem,
        status=container_v1.Cluster.Status.PROVISIONING,
    )
    provider = GkeProvider(env={**gke_env, "ALPHASWARM_GCP_GKE_CLUSTER": "fresh"})
    try:
        with pytest.raises(InfrastructureProviderUnavailable) as caught:
            await provider.health()
    finally:
        await provider.close()
    assert caught.value.reason == "CLUSTER_NOT_READY"


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("ALPHASWARM_GCP_GKE_CLUSTER", ""),
        ("ALPHASWARM_GCP_GKE_CLUSTER", "Bad_Name"),
        ("ALPHASWARM_GCP_GKE_LOCATION", "mars"),
    ],
)
async def test_a_bad_cluster_setting_fails_before_any_call(
    gke_env: dict[str, str], emulator: GcpEmulator, setting: str, value: str
) -> None:
    provider = GkeProvider(env={**gke_env, setting: value})
    try:
        with pytest.raises(SettingInvalid) as caught:
            await provider.health()
    finally:
        await provider.close()
    assert caught.value.metadata == {"setting": setting}
    assert emulator.faults.count() == 0


async def test_denied_cluster_read_names_the_role(
    gke_env: dict[str, str], emulator: GcpEmulator
) -> None:
    emulator.faults.clear()
    emulator.faults.inject("container:GetCluster", Kind.DENIED, message="container.clusters.get")
    provider = GkeProvider(env=gke_env)
    try:
        with pytest.raises(BackendPermissionDenied, match=r"roles/container\.developer"):
            await provider.health()
    finally:
        await provider.close()
