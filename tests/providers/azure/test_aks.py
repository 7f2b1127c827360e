"""AKS mode: the cluster user credential from the ARM emulator; the cluster driven by the
kubernetes provider's own code (AksProvider is a KubernetesProvider) against the real
kube-apiserver, which checks the cluster user's token (its token webhook) with RBAC on.
Requests are counted at the proxy in front of it."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import yaml

from alphaswarm_controller.providers.azure import AksProvider
from alphaswarm_controller.providers.azure.aks import parse_kubeconfig
from alphaswarm_controller.providers.kubernetes import ClusterConnection, KubernetesProvider
from alphaswarm_core.providers.protocol import (
    BackendRejectedError,
    DeploymentStatus,
    InfrastructureProviderUnavailable,
    SettingInvalid,
)
from alphaswarm_core.testing import SpecFactory, ready, spec_factory_for, wait_for
from tests.fakes.arm_emulator import ArmEmulator
from tests.fakes.arm_testing import make_provider
from tests.realkube.api import status_as
from tests.realkube.managed import ManagedCluster
from tests.waiting import until

from .conftest import CLUSTER, CLUSTER_USER, aks_env, user_kubeconfig

CREDENTIAL = r"/listClusterUserCredential$"


@pytest.fixture
def spec_factory() -> SpecFactory:
    return spec_factory_for(image="registry.example/app:1")


def _deployment_reads(kube: ManagedCluster, namespace: str, name: str) -> int:
    """Gets of the Deployment and lists of the namespace's Deployments."""
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    return sum(
        1
        for r in list(kube.proxy.requests)
        if (r.path == f"{path}/{name}" and r.method == "GET")
        or (r.path == path and r.operation == "kube:list deployments")
    )


def _watches(kube: ManagedCluster, namespace: str) -> int:
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    return sum(
        1
        for r in list(kube.proxy.requests)
        if r.path == path and r.operation == "kube:watch deployments"
    )


async def test_aks_is_the_kubernetes_provider_reporting_azure(aks_provider: AksProvider) -> None:
    assert isinstance(aks_provider, KubernetesProvider)
    assert type(aks_provider).watch is KubernetesProvider.watch
    assert "native_watch" in aks_provider.capabilities()
    assert aks_provider.setting_name("PAGE_SIZE") == "ALPHASWARM_KUBERNETES_PAGE_SIZE"
    assert aks_provider.setting_name("AKS_CLUSTER") == "ALPHASWARM_AZURE_AKS_CLUSTER"


async def test_credentials_are_fetched_once_and_used(
    aks_arm: ArmEmulator,
    kube: ManagedCluster,
    aks_provider: AksProvider,
    real_kube_namespace: str,
    spec_factory: SpecFactory,
) -> None:
    namespace = real_kube_namespace
    health = await aks_provider.health()
    assert health.healthy and health.kind == "azure"
    assert health.details["aks_cluster"] == CLUSTER
    await aks_provider.start(spec_factory("web", namespace, replicas=2))
    status = await wait_for(aks_provider, "web", namespace, ready(2), timeout=30)
    assert status.provider == "azure"
    assert aks_arm.count("POST", CREDENTIAL) == 1
    assert [r for r in kube.proxy.requests if r.method == "GET"]
    assert aks_arm.count("PUT") == 0, "AKS mode creates no container groups"


async def test_watch_is_a_kubernetes_watch_not_polling(
    kube: ManagedCluster,
    aks_provider: AksProvider,
    real_kube_namespace: str,
    spec_factory: SpecFactory,
) -> None:
    """The issue's proof: AKS mode opens a Kubernetes watch, and reads of the Deployment stay
    bounded however long the stream runs (polling would read it every interval)."""
    namespace = real_kube_namespace
    await aks_provider.start(spec_factory("web", namespace, replicas=1))
    await wait_for(aks_provider, "web", namespace, ready(1), timeout=30)
    watch = aks_provider.watch("web", namespace=namespace, interval_seconds=0.05)
    pending: asyncio.Future[DeploymentStatus] | None = None
    try:
        async with asyncio.timeout(30):
            first = await anext(watch)
            assert first.ready_replicas == 1
            reads_after_first = _deployment_reads(kube, namespace, "web")
            # The stream waits for the next change; meanwhile a watch request reaches the
            # API server (polling never sends one).
            pending = asyncio.ensure_future(anext(watch))
            await until(lambda: _watches(kube, namespace), "a watch request", within=10, every=0.05)
            await aks_provider.scale("web", 2, namespace=namespace)
            status = await pending
            while status.desired_replicas != 2:
                status = await anext(watch)
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
        await watch.aclose()
    # scale read it once itself; the watch may (re)list once. 40 polls at 0.05 s would be
    # 40 reads in the 2 s this takes at least on a loaded machine.
    assert _deployment_reads(kube, namespace, "web") - reads_after_first <= 3
    assert _watches(kube, namespace) >= 1


async def test_from_connection_needs_no_arm(
    kube: ManagedCluster, real_kube_namespace: str, spec_factory: SpecFactory
) -> None:
    namespace = real_kube_namespace
    provider = AksProvider.from_connection(
        ClusterConnection(kube.url, ca_data=kube.ca_pem, token=kube.token),
        env={"ALPHASWARM_KUBERNETES_CREATE_NAMESPACES": "true"},
    )
    assert provider.alias == "azure"
    health = await provider.health()
    assert health.healthy and (health.alias, health.kind) == ("azure", "azure")
    await provider.start(spec_factory("direct", namespace, replicas=1))
    await wait_for(provider, "direct", namespace, ready(1), timeout=30)
    await provider.close()
    with pytest.raises(ValueError):
        AksProvider.from_connection(ClusterConnection(kube.url), alias="kubernetes")


async def test_kubernetes_settings_keep_their_names(aks_arm: ArmEmulator) -> None:
    env = aks_env(aks_arm, ALPHASWARM_KUBERNETES_PAGE_SIZE="7", ALPHASWARM_AZURE_PAGE_SIZE="9")
    provider = make_provider(aks_arm, AksProvider, env=env)
    assert provider.page_size == 7


async def test_an_unknown_cluster_is_a_setting_error_not_a_missing_deployment(
    aks_arm: ArmEmulator,
) -> None:
    env = aks_env(aks_arm, ALPHASWARM_AZURE_AKS_CLUSTER="other")
    provider = make_provider(aks_arm, AksProvider, env=env)
    with pytest.raises(SettingInvalid) as caught:
        await provider.status("web", namespace="x")
    assert caught.value.setting == "ALPHASWARM_AZURE_AKS_CLUSTER"
    assert "'other'" in caught.value.message
    await provider.close()


async def test_a_missing_resource_group_names_its_setting(aks_arm: ArmEmulator) -> None:
    env = aks_env(aks_arm, ALPHASWARM_AZURE_RESOURCE_GROUP="nope")
    provider = make_provider(aks_arm, AksProvider, env=env)
    with pytest.raises(SettingInvalid) as caught:
        await provider.list_deployments()
    assert caught.value.setting == "ALPHASWARM_AZURE_RESOURCE_GROUP"
    await provider.close()


async def test_aks_mode_needs_a_cluster_name(aks_arm: ArmEmulator) -> None:
    env = aks_env(aks_arm)
    del env["ALPHASWARM_AZURE_AKS_CLUSTER"]
    provider = make_provider(aks_arm, AksProvider, env=env)
    with pytest.raises(SettingInvalid) as caught:
        await provider.health()
    assert "ALPHASWARM_AZURE_AKS_CLUSTER" in caught.value.message
    with pytest.raises(InfrastructureProviderUnavailable):
        await provider.status("web", namespace="x")
    assert aks_arm.requests == []


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


def test_kubeconfig_parse_keeps_the_token_out_of_repr(kube: ManagedCluster) -> None:
    creds = parse_kubeconfig(user_kubeconfig(kube))
    assert creds.endpoint == kube.url
    assert creds.ca_pem == kube.ca_pem
    assert creds.token == kube.token
    assert kube.token not in repr(creds)


async def test_the_api_server_knows_the_cluster_user_and_its_rbac(
    kube: ManagedCluster, aks_provider: AksProvider, real_kube_namespace: str
) -> None:
    """The token ARM handed out is the cluster user's to the API server, which allows it the
    documented RBAC and no more; any other token is 401."""
    health = await aks_provider.health()
    assert health.healthy, health.message
    secrets = f"/api/v1/namespaces/{real_kube_namespace}/secrets"
    deployments = f"/apis/apps/v1/namespaces/{real_kube_namespace}/deployments"
    assert status_as(kube.url, kube.ca_pem, kube.token, deployments) == 200
    assert status_as(kube.url, kube.ca_pem, kube.token, secrets) == 403
    wrong = AksProvider.from_connection(
        ClusterConnection(kube.url, ca_data=kube.ca_pem, token="not-the-user-token"), env={}
    )
    try:
        with pytest.raises(InfrastructureProviderUnavailable) as caught:
            await wrong.health()
    finally:
        await wrong.close()
    assert caught.value.reason == "CREDENTIALS_INVALID"
    assert CLUSTER_USER in user_kubeconfig(kube)
