"""The documented RBAC minimum (deploy/kubernetes/base/rbac.yaml) is enough, and health says
what is missing; run as a ServiceAccount holding exactly those rules (tests/realkube/rbac.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from alphaswarm_controller.providers.kubernetes import ClusterConnection, KubernetesProvider
from alphaswarm_core.providers.protocol import (
    BackendPermissionDenied,
    ConfigMapPatch,
    EventKind,
    InfrastructureProvider,
    LogQuery,
)
from alphaswarm_core.testing import (
    ProviderContract,
    SpecFactory,
    ready,
    unique_name,
    wait_for,
)
from tests.realkube.cluster import Endpoint
from tests.realkube.contract import KUBERNETES_CAPABILITIES, RealKubeFixtures, read_real_metrics
from tests.realkube.fixtures import make_spec
from tests.realkube.rbac import Identity, grant_cluster_wide, grant_namespaced, service_account


def limited_provider(
    real_kube: Endpoint, who: Identity, namespace: str, *, create_namespaces: bool = False
) -> KubernetesProvider:
    return KubernetesProvider.from_connection(
        ClusterConnection(
            endpoint=real_kube.url,
            ca_data=real_kube.ca_pem,
            token=who.token,
            namespace=namespace,
            description="the tests' kube-apiserver, documented RBAC",
        ),
        env={"ALPHASWARM_KUBERNETES_CREATE_NAMESPACES": str(create_namespaces).lower()},
    )


@pytest.fixture
def identity(real_kube: Endpoint, namespace: str) -> Identity:
    return service_account(real_kube.admin(), namespace)


async def test_the_documented_namespaced_rbac_is_enough_for_every_call(
    real_kube: Endpoint, namespace: str, identity: Identity
) -> None:
    """Was: list_deployments() without a namespace needed cluster-wide list rights the
    docs did not grant (403), and health() still said healthy."""
    grant_namespaced(real_kube.admin(), identity, [namespace])
    limited = limited_provider(real_kube, identity, namespace)
    await limited.open()
    try:
        health = await limited.health()
        assert health.healthy, health.message
        service = unique_name()
        await limited.start(make_spec(service, namespace))
        await wait_for(limited, service, namespace, ready(1))
        await limited.scale(service, 2, namespace=namespace)
        await limited.apply_config(ConfigMapPatch(service, namespace, set={"A": "1"}))
        await limited.get_config(service, namespace=namespace)
        assert service in {
            s.service_id for s in await limited.list_deployments(namespace=namespace)
        }
        assert service in {s.service_id for s in await limited.list_deployments()}
        watch = limited.watch(service, namespace=namespace, interval_seconds=0.2)
        try:
            async with asyncio.timeout(30):
                assert (await anext(watch)).service_id == service
        finally:
            await watch.aclose()
        for where in (namespace, None):  # WatchDeployments of the namespace and everywhere
            everything = limited.watch_deployments(namespace=where)
            try:
                async with asyncio.timeout(60):
                    async for event in everything:
                        if event.kind is EventKind.SNAPSHOT_DONE:
                            break
            finally:
                await everything.aclose()
        logs = limited.stream_logs(
            service, LogQuery(follow=True, tail_lines=1), namespace=namespace
        )
        try:
            async with asyncio.timeout(60):
                for _ in range(3):  # the tail, then followed lines (pods watched too)
                    assert (await anext(logs)).instance_id.startswith(service)
        finally:
            await logs.aclose()
        await limited.stop(service, namespace=namespace)
        assert await limited.delete(service, namespace=namespace) is True
    finally:
        await limited.close()


async def test_health_names_the_cluster_wide_permission_when_it_is_not_granted(
    real_kube: Endpoint, namespace: str, identity: Identity
) -> None:
    grant_namespaced(real_kube.admin(), identity, [namespace], cluster_role=False)
    limited = limited_provider(real_kube, identity, namespace)
    try:
        health = await limited.health()
        assert not health.healthy
        assert health.details["missing_permissions"] == (
            "list deployments.apps (all namespaces), watch deployments.apps (all namespaces)"
        )
        with pytest.raises(BackendPermissionDenied):
            await limited.list_deployments()
        assert await limited.list_deployments(namespace=namespace) == []
    finally:
        await limited.close()


class TestContractUnderTheDocumentedClusterWideRbac(RealKubeFixtures, ProviderContract):
    """The whole contract as a ServiceAccount with the documented cluster-wide grant
    (the workloads ClusterRole bound cluster-wide, ``create namespaces`` added, for
    ALPHASWARM_KUBERNETES_CREATE_NAMESPACES=true): nothing the provider does needs more."""

    expected_capabilities = KUBERNETES_CAPABILITIES

    @pytest.fixture
    async def provider(
        self, real_kube: Endpoint, namespace: str, identity: Identity
    ) -> AsyncIterator[KubernetesProvider]:
        grant_cluster_wide(real_kube.admin(), identity.subject, identity.namespace)
        limited = limited_provider(real_kube, identity, namespace, create_namespaces=True)
        await limited.open()
        yield limited
        await limited.close()

    @pytest.mark.usefixtures("real_kube_metrics")
    async def test_metrics_stream_until_cancelled(
        self, provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
    ) -> None:
        await read_real_metrics(provider, spec_factory, namespace)
