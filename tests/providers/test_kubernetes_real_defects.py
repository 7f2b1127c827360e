"""Provider defects that the real kube-apiserver reveals and the emulator hides (issue 17).

Each test states the behaviour the provider should have, against the real API
server of tests/realkube. ``xfail(strict=True)`` records that the provider does
not have it yet: the test must fail today, and an unexpected pass (the fix
landed) fails the run until the marker goes with the fix.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from alphaswarm_controller.providers.kubernetes import (
    ClusterConnection,
    KubernetesProvider,
    transport,
)
from alphaswarm_core.providers.protocol import (
    ConfigMapPatch,
    DeploymentSpec,
    InfrastructureProviderError,
    Resources,
)
from alphaswarm_core.testing import ready, unique_name, wait_for
from tests.fakes.kube_fixtures import IMAGE, make_spec
from tests.realkube.cluster import LIMITED_USER, Endpoint, KubeCluster
from tests.realkube.fixtures import connect_real

ISSUE = "issue 17 (kubernetes): "


@pytest.fixture
async def provider(real_kube: Endpoint) -> AsyncIterator[KubernetesProvider]:
    provider = connect_real(real_kube)
    await provider.open()
    yield provider
    await provider.close()


@pytest.fixture
def requests_sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Every request the provider's transport sends (method, path, query)."""
    sent: list[dict[str, Any]] = []
    original = transport.Transport._send

    def counting(self: transport.Transport, method: str, path: str, **kwargs: Any) -> Any:
        sent.append({"method": method, "path": path, "query": dict(kwargs.get("query") or {})})
        return original(self, method, path, **kwargs)

    monkeypatch.setattr(transport.Transport, "_send", counting)
    yield sent


def _objects(real_kube: Endpoint, namespace: str, collection: str) -> list[str]:
    items = real_kube.admin().get(f"{collection.format(ns=namespace)}")["items"]
    return sorted(item["metadata"]["name"] for item in items)


def _left_behind(real_kube: Endpoint, namespace: str) -> list[str]:
    return _objects(real_kube, namespace, "/apis/apps/v1/namespaces/{ns}/deployments") + _objects(
        real_kube, namespace, "/api/v1/namespaces/{ns}/configmaps"
    )


@pytest.mark.xfail(
    strict=True,
    reason=ISSUE + "the watch resumes from the Deployment's own resourceVersion and, on 410 "
    "Gone, re-reads and resumes from the same version at once: hundreds of requests a second",
)
async def test_watch_of_a_deployment_older_than_the_watch_cache_is_rate_bounded(
    provider: KubernetesProvider,
    real_kube_cluster: KubeCluster,
    real_kube_namespace: str,
    requests_sent: list[dict[str, Any]],
) -> None:
    namespace = real_kube_namespace
    service = unique_name()
    await provider.start(make_spec(service, namespace, replicas=1))
    await wait_for(provider, service, namespace, ready(1))
    # After a restart the API server's watch cache begins at the current revision:
    # the Deployment's resourceVersion is older than anything it can replay (410).
    real_kube_cluster.restart_apiserver()
    await provider.close()
    requests_sent.clear()

    watch = provider.watch(service, namespace=namespace, interval_seconds=0.2)
    idle: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(60):
            first = await anext(watch)
            assert first.desired_replicas == 1
            # Nothing changes for 2 s: a reflector relists once on 410, then waits on
            # a watch from the list's version. Count what the provider sends meanwhile.
            following = asyncio.ensure_future(anext(watch))
            done, _ = await asyncio.wait({following}, timeout=2.0)
            assert not done, f"a status without a change: {following.result()}"
            idle = list(requests_sent)
            await provider.scale(service, 2, namespace=namespace)
            status = await following
            while status.desired_replicas != 2:
                status = await anext(watch)
    finally:
        await watch.aclose()
    watches = [r for r in idle if r["query"].get("watch")]
    assert len(watches) <= 3, f"{len(watches)} watch requests, {len(idle)} in all, in 2 s"
    assert len(idle) <= 8, f"{len(idle)} requests in 2 s of an unchanged Deployment"


async def _outcome(call: Any) -> str:
    """The gRPC code a provider call ends with ("OK" when it succeeds)."""
    try:
        await call
    except InfrastructureProviderError as exc:
        return str(exc.code)
    return "OK"


@pytest.mark.xfail(
    strict=True,
    reason=ISSUE + "the model accepts memory '256K' but Kubernetes quantities have no 'K' "
    "suffix (only 'k', 'Ki'); the server fails the apply with HTTP 500, reported as "
    "UNAVAILABLE, a retryable error for a request that can never succeed",
)
async def test_a_memory_quantity_kubernetes_cannot_parse_is_invalid_argument(
    provider: KubernetesProvider, real_kube: Endpoint, real_kube_namespace: str
) -> None:
    spec = DeploymentSpec(
        service_id=unique_name(),
        namespace=real_kube_namespace,
        image=IMAGE,
        replicas=1,
        resources=Resources(memory="256K"),
    )
    assert await _outcome(provider.start(spec.validate())) == "INVALID_ARGUMENT"
    assert _left_behind(real_kube, real_kube_namespace) == []


@pytest.mark.xfail(
    strict=True,
    reason=ISSUE + "config keys '.' and '..x' pass the model's check but a ConfigMap rejects "
    "them (422 after a request, reported as FAILED_PRECONDITION)",
)
@pytest.mark.parametrize("key", [".", "..x"])
async def test_config_keys_a_configmap_rejects_are_invalid_argument(
    provider: KubernetesProvider, real_kube_namespace: str, key: str
) -> None:
    service = unique_name()
    await provider.start(make_spec(service, real_kube_namespace))
    patch = ConfigMapPatch(service, real_kube_namespace, set={key: "value"})

    async def apply() -> None:
        await provider.apply_config(patch.validate())

    assert await _outcome(apply()) == "INVALID_ARGUMENT"


@pytest.mark.xfail(
    strict=True,
    reason=ISSUE + "provider_options.service_account is not checked: the server rejects a "
    "name that is not a DNS subdomain (422, reported as FAILED_PRECONDITION)",
)
async def test_an_invalid_service_account_option_is_invalid_argument(
    provider: KubernetesProvider, real_kube: Endpoint, real_kube_namespace: str
) -> None:
    spec = DeploymentSpec(
        service_id=unique_name(),
        namespace=real_kube_namespace,
        image=IMAGE,
        replicas=1,
        provider_options={"service_account": "Not_A_Name"},
    )
    assert await _outcome(provider.start(spec.validate())) == "INVALID_ARGUMENT"
    assert _left_behind(real_kube, real_kube_namespace) == []


def _grant_documented_role(real_kube: Endpoint, namespace: str) -> None:
    """The RBAC docs/providers.md documents for the kubernetes provider, in ``namespace``."""
    every = ["get", "list", "watch", "create", "patch", "update", "delete"]
    admin = real_kube.admin()
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    admin.create(
        f"{rbac}/roles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "alphaswarm", "namespace": namespace},
            "rules": [
                {
                    "apiGroups": ["apps"],
                    "resources": ["deployments", "deployments/scale"],
                    "verbs": every,
                },
                {"apiGroups": [""], "resources": ["services", "configmaps"], "verbs": every},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
                {"apiGroups": ["metrics.k8s.io"], "resources": ["pods"], "verbs": ["get", "list"]},
                # selfsubjectaccessreviews: every authenticated user has it (system:basic-user).
            ],
        },
    )
    admin.create(
        f"{rbac}/rolebindings",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "alphaswarm", "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "alphaswarm",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": LIMITED_USER}
            ],
        },
    )


@pytest.mark.xfail(
    strict=True,
    reason=ISSUE + "list_deployments() without a namespace lists cluster-wide, which the "
    "documented namespaced RBAC does not allow (403), and health() still reports healthy",
)
async def test_the_documented_rbac_is_enough_for_every_call(
    real_kube: Endpoint, real_kube_namespace: str
) -> None:
    namespace = real_kube_namespace
    _grant_documented_role(real_kube, namespace)
    limited = KubernetesProvider.from_connection(
        ClusterConnection(
            endpoint=real_kube.url,
            ca_data=real_kube.ca_pem,
            token=real_kube.limited_token,
            namespace=namespace,
            description="the tests' kube-apiserver, documented RBAC",
        ),
        env={},
    )
    await limited.open()
    try:
        assert (await limited.health()).healthy
        service = unique_name()
        await limited.start(make_spec(service, namespace, replicas=1))
        await wait_for(limited, service, namespace, ready(1))
        await limited.scale(service, 2, namespace=namespace)
        await limited.apply_config(ConfigMapPatch(service, namespace, set={"A": "1"}))
        assert service in {
            s.service_id for s in await limited.list_deployments(namespace=namespace)
        }
        watch = limited.watch(service, namespace=namespace, interval_seconds=0.2)
        try:
            async with asyncio.timeout(30):
                assert (await anext(watch)).service_id == service
        finally:
            await watch.aclose()
        await limited.stop(service, namespace=namespace)
        # The contract's list everywhere: the documented role must cover it too.
        assert service in {s.service_id for s in await limited.list_deployments()}
    finally:
        await limited.close()
