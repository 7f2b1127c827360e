"""Kubernetes-specific behaviour against the real kube-apiserver (tests/realkube).

The contract covers the provider-agnostic semantics; these tests cover how the
provider uses the API (paged lists, server-side apply, the scale subresource,
what stop and a failed start leave behind), its errors (RBAC, credentials, TLS,
missing namespaces, unreachable clusters) and its connection sources. Objects
are read back with the admin's raw API, never through the provider.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from alphaswarm_controller.providers.kubernetes import ClusterConnection, KubernetesProvider
from alphaswarm_controller.providers.kubernetes.manifests import config_hash
from alphaswarm_core.providers.protocol import (
    BackendPermissionDenied,
    BackendRejectedError,
    BackendUnavailableError,
    ConfigMapPatch,
    DeploymentNotFoundError,
    DeploymentSpec,
    DeploymentState,
    InfrastructureProviderUnavailable,
    InvalidSpecError,
    PortSpec,
    ResourceNotFoundError,
)
from alphaswarm_core.providers.registry import Registry
from alphaswarm_core.testing import ready, unique_name, wait_for
from tests.realkube.api import AdminApi
from tests.realkube.cluster import (
    NODE_LEASE_SECONDS,
    NODE_MONITOR_GRACE_SECONDS,
    Endpoint,
    node_lease,
)
from tests.realkube.fixtures import IMAGE, make_spec
from tests.realkube.manifests import RBAC, RBAC_GROUP
from tests.realkube.pki import Pki
from tests.realkube.rbac import Identity, service_account, wait_granted

from .conftest import Sent, lists

APPS = "/apis/apps/v1"


def names(admin: AdminApi, collection: str) -> list[str]:
    return sorted(item["metadata"]["name"] for item in admin.get(collection)["items"])


def deployments(admin: AdminApi, namespace: str) -> list[str]:
    return names(admin, f"{APPS}/namespaces/{namespace}/deployments")


def services(admin: AdminApi, namespace: str) -> list[str]:
    return names(admin, f"/api/v1/namespaces/{namespace}/services")


def configmaps(admin: AdminApi, namespace: str) -> list[str]:
    """ConfigMaps other than the kube-root-ca.crt every namespace gets."""
    return [
        n
        for n in names(admin, f"/api/v1/namespaces/{namespace}/configmaps")
        if n != "kube-root-ca.crt"
    ]


def pods(admin: AdminApi, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = admin.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
    return items


def deployment_object(name: str, *, managed: bool) -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "alphaswarm"} if managed else {"team": "other"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {**labels, "alphaswarm.dev/service": name}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"alphaswarm.dev/service": name}},
            "template": {
                "metadata": {"labels": {"alphaswarm.dev/service": name}},
                "spec": {"containers": [{"name": "main", "image": IMAGE}]},
            },
        },
    }


def seed(admin: AdminApi, namespace: str, count: int, *, managed: bool) -> None:
    prefix = "svc" if managed else "foreign"
    for index in range(count):
        admin.create(
            f"{APPS}/namespaces/{namespace}/deployments",
            deployment_object(f"{prefix}-{index:03d}", managed=managed),
        )


def new_namespace(admin: AdminApi) -> str:
    name = unique_name("ns")
    admin.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    return name


# -- paging: no N+1 ------------------------------------------------------------------------


async def test_listing_costs_one_request_per_page(
    provider: KubernetesProvider,
    real_kube: Endpoint,
    namespace: str,
    requests_sent: Sent,
) -> None:
    admin = real_kube.admin()
    seed(admin, namespace, 23, managed=True)
    seed(admin, namespace, 4, managed=False)
    provider.page_size = 5
    listed = await provider.list_deployments(namespace=namespace)
    assert {s.service_id for s in listed} == {f"svc-{i:03d}" for i in range(23)}
    assert all(s.state is DeploymentState.STOPPED and s.provider == "kubernetes" for s in listed)
    made = list(requests_sent)
    assert len(made) == math.ceil(23 / 5), made
    assert all(r["path"] == f"{APPS}/namespaces/{namespace}/deployments" for r in made)
    assert all(
        r["query"]["labelSelector"] == "app.kubernetes.io/managed-by=alphaswarm"
        and r["query"]["limit"] == 5
        for r in made
    )


async def test_listing_all_namespaces_is_paged_too(
    provider: KubernetesProvider, real_kube: Endpoint, namespace: str, requests_sent: Sent
) -> None:
    admin = real_kube.admin()
    other = new_namespace(admin)
    try:
        for where in (namespace, other):
            seed(admin, where, 6, managed=True)
        provider.page_size = 5
        listed = await provider.list_deployments()
    finally:
        admin.delete(f"/api/v1/namespaces/{other}")
    mine = {(s.namespace, s.service_id) for s in listed if s.namespace in (namespace, other)}
    assert len(mine) == 12
    made = list(requests_sent)
    # Other tests' namespaces hold managed Deployments too: the pages cover all of them.
    assert len(made) == math.ceil(len(listed) / 5)
    assert all(r["path"] == f"{APPS}/deployments" for r in made)


# -- how start, scale and stop talk to the API ----------------------------------------------


async def test_start_applies_server_side_and_a_second_start_changes_nothing(
    provider: KubernetesProvider, real_kube: Endpoint, namespace: str, requests_sent: Sent
) -> None:
    admin = real_kube.admin()
    service = unique_name()
    spec = make_spec(service, namespace, replicas=2, env={"MODE": "a"})
    await provider.start(spec)
    await wait_for(provider, service, namespace, ready(2))
    path = f"{APPS}/namespaces/{namespace}/deployments/{service}"
    first = admin.get(path)

    requests_sent.clear()
    await provider.start(spec)
    writes = [r for r in requests_sent if r["method"] != "GET"]
    after = admin.get(path)

    assert after["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert [(r["method"], r["query"].get("fieldManager")) for r in writes] == [
        ("PATCH", "alphaswarm")
    ]
    managers = {m["manager"]: m["operation"] for m in after["metadata"]["managedFields"]}
    assert managers["alphaswarm"] == "Apply", "server-side apply, never a replace"
    container = after["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == [{"name": "MODE", "value": "a"}]
    assert container["envFrom"] == [{"configMapRef": {"name": f"{service}-config"}}]
    labels = after["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "alphaswarm"
    assert labels["alphaswarm.dev/service"] == service


async def test_start_removes_env_that_left_the_spec(
    provider: KubernetesProvider, real_kube: Endpoint, namespace: str
) -> None:
    service = unique_name()
    await provider.start(make_spec(service, namespace, env={"A": "1", "B": "2"}))
    await provider.start(make_spec(service, namespace, env={"A": "1"}))
    deployment = real_kube.admin().get(f"{APPS}/namespaces/{namespace}/deployments/{service}")
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "A", "value": "1"}]


async def test_scale_goes_through_the_scale_subresource(
    provider: KubernetesProvider, namespace: str, requests_sent: Sent
) -> None:
    service = unique_name()
    await provider.start(make_spec(service, namespace))
    requests_sent.clear()
    await provider.scale(service, 4, namespace=namespace)
    writes = [(r["method"], r["path"]) for r in requests_sent if r["method"] != "GET"]
    assert writes == [("PATCH", f"{APPS}/namespaces/{namespace}/deployments/{service}/scale")]
    await wait_for(provider, service, namespace, ready(4))


async def test_stop_deletes_pods_and_service_and_start_brings_them_back(
    provider: KubernetesProvider, real_kube: Endpoint, namespace: str
) -> None:
    admin = real_kube.admin()
    service = unique_name()
    spec = DeploymentSpec(
        service_id=service,
        namespace=namespace,
        image=IMAGE,
        replicas=2,
        ports=(PortSpec(8080, host_port=80),),
        provider_options={"service_type": "NodePort"},
    ).validate()
    await provider.start(spec)
    await wait_for(provider, service, namespace, ready(2))
    svc = admin.get(f"/api/v1/namespaces/{namespace}/services/{service}")
    assert svc["spec"]["type"] == "NodePort"
    [port] = svc["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"], port["protocol"]) == (
        "tcp-80",
        80,
        8080,
        "TCP",
    )
    assert 30000 <= port["nodePort"] <= 32767, "allocated by the real server"

    stopped = await provider.stop(service, namespace=namespace)
    assert stopped.state is DeploymentState.STOPPED and stopped.message == "stopped"
    assert services(admin, namespace) == []
    await wait_for(provider, service, namespace, ready(0))
    deadline = asyncio.get_running_loop().time() + 60
    while pods(admin, namespace):  # the ReplicaSet controller deletes them, kwok removes them
        assert asyncio.get_running_loop().time() < deadline, pods(admin, namespace)
        await asyncio.sleep(0.5)
    assert deployments(admin, namespace) == [service], "the definition is kept"
    kept = [f"{service}-config", f"{service}-config-{config_hash({})}"]  # + revision 1's
    assert configmaps(admin, namespace) == kept

    with pytest.raises(BackendRejectedError, match="StartDeployment"):
        await provider.scale(service, 3, namespace=namespace)
    await provider.scale(service, 0, namespace=namespace)  # already there: fine

    await provider.start(spec)
    await wait_for(provider, service, namespace, ready(2))
    assert services(admin, namespace) == [service]


async def test_start_without_ports_leaves_a_foreign_service_alone(
    provider: KubernetesProvider, real_kube: Endpoint, namespace: str
) -> None:
    admin = real_kube.admin()
    service = unique_name()
    admin.create(
        f"/api/v1/namespaces/{namespace}/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": service},
            "spec": {"ports": [{"port": 80}]},
        },
    )
    await provider.start(make_spec(service, namespace))
    await provider.stop(service, namespace=namespace)
    assert services(admin, namespace) == [service]


async def test_a_foreign_deployment_of_the_same_name_is_never_touched(
    provider: KubernetesProvider, real_kube: Endpoint, namespace: str
) -> None:
    admin = real_kube.admin()
    seed(admin, namespace, 1, managed=False)
    path = f"{APPS}/namespaces/{namespace}/deployments/foreign-000"
    await asyncio.sleep(1)  # let the deployment controller write its status first
    before = admin.get(path)["metadata"]["generation"]
    with pytest.raises(BackendRejectedError, match="does not manage") as info:
        await provider.start(make_spec("foreign-000", namespace))
    assert info.value.reason == "NAME_TAKEN"
    for call in (
        provider.status("foreign-000", namespace=namespace),
        provider.stop("foreign-000", namespace=namespace),
        provider.scale("foreign-000", 0, namespace=namespace),
        provider.get_config("foreign-000", namespace=namespace),
    ):
        with pytest.raises(DeploymentNotFoundError):
            await call
    after = admin.get(path)
    assert after["metadata"]["generation"] == before
    assert "alphaswarm" not in {m["manager"] for m in after["metadata"].get("managedFields", [])}
    assert configmaps(admin, namespace) == []


# -- config ---------------------------------------------------------------------------------


async def test_apply_config_updates_the_configmap_and_rolls_out(
    provider: KubernetesProvider, real_kube: Endpoint, namespace: str, requests_sent: Sent
) -> None:
    admin = real_kube.admin()
    service = unique_name()
    await provider.start(make_spec(service, namespace, replicas=2))
    before = await wait_for(provider, service, namespace, ready(2))
    config = await provider.get_config(service, namespace=namespace)
    path = f"/api/v1/namespaces/{namespace}/configmaps/{service}-config"
    assert config.version == admin.get(path)["metadata"]["resourceVersion"]

    requests_sent.clear()
    applied = await provider.apply_config(
        ConfigMapPatch(service, namespace, set={"LEVEL": "debug"}, expected_version=config.version)
    )
    assert admin.get(path)["data"] == {"LEVEL": "debug"}
    assert any(r["method"] == "PUT" and r["path"] == path for r in requests_sent)

    def rolled(status: Any) -> bool:
        ids = {i.instance_id for i in status.instances}
        return ready(2)(status) and not ids & {i.instance_id for i in before.instances}

    await wait_for(provider, service, namespace, rolled)
    same = await provider.apply_config(ConfigMapPatch(service, namespace, set={"LEVEL": "debug"}))
    assert same.version == applied.version, "an unchanged config is not rewritten"


async def test_config_of_a_missing_namespace_or_service_is_not_found(
    provider: KubernetesProvider,
) -> None:
    with pytest.raises(DeploymentNotFoundError):
        await provider.get_config("nothing", namespace="no-such-namespace")
    with pytest.raises(DeploymentNotFoundError):
        await provider.apply_config(ConfigMapPatch("nothing", "no-such-namespace", set={"A": "1"}))


# -- watch ----------------------------------------------------------------------------------


async def test_watch_ends_with_not_found_when_the_deployment_is_deleted(
    provider: KubernetesProvider, real_kube: Endpoint, namespace: str
) -> None:
    service = unique_name()
    await provider.start(make_spec(service, namespace))
    watch = provider.watch(service, namespace=namespace)
    try:
        async with asyncio.timeout(30):
            await anext(watch)
            real_kube.admin().delete(f"{APPS}/namespaces/{namespace}/deployments/{service}")
            with pytest.raises(DeploymentNotFoundError):
                async for _ in watch:
                    pass
    finally:
        await watch.aclose()


async def test_watching_an_unknown_or_foreign_deployment_is_not_found_at_once(
    provider: KubernetesProvider, real_kube: Endpoint, namespace: str, requests_sent: Sent
) -> None:
    seed(real_kube.admin(), namespace, 1, managed=False)
    for name in ("ghost", "foreign-000"):
        watch = provider.watch(name, namespace=namespace)
        with pytest.raises(DeploymentNotFoundError):
            await anext(watch)
        await watch.aclose()
    assert len(lists(requests_sent)) == 2 and not [
        r for r in requests_sent if r["query"].get("watch")
    ]


# -- health and connection sources ------------------------------------------------------------


def _grant(admin: AdminApi, who: Identity, namespace: str, rules: list[dict[str, Any]]) -> None:
    name = unique_name("role")
    admin.create(
        f"{RBAC}/namespaces/{namespace}/roles",
        {
            "apiVersion": f"{RBAC_GROUP}/v1",
            "kind": "Role",
            "metadata": {"name": name},
            "rules": rules,
        },
    )
    admin.create(
        f"{RBAC}/namespaces/{namespace}/rolebindings",
        {
            "apiVersion": f"{RBAC_GROUP}/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": name},
            "subjects": [who.subject],
        },
    )
    wait_granted(admin, who.subject, {"metadata": {"name": name}, "rules": rules}, namespace)


def _as(real_kube: Endpoint, who: Identity, namespace: str) -> KubernetesProvider:
    return KubernetesProvider.from_connection(
        ClusterConnection(
            endpoint=real_kube.url, ca_data=real_kube.ca_pem, token=who.token, namespace=namespace
        ),
        env={},
    )


EVERY = ["get", "list", "watch", "create", "patch", "update", "delete"]


async def test_health_names_the_server_version_and_missing_permissions(
    provider: KubernetesProvider, real_kube: Endpoint, namespace: str
) -> None:
    health = await provider.health()
    assert health.healthy and health.details["server_version"].startswith("v1.37")
    admin = real_kube.admin()
    who = service_account(admin, namespace)
    _grant(
        admin,
        who,
        namespace,
        [
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": EVERY},
            {"apiGroups": [""], "resources": ["services", "configmaps"], "verbs": EVERY},
        ],
    )
    limited = _as(real_kube, who, namespace)
    try:
        denied = await limited.health()
    finally:
        await limited.close()
    assert not denied.healthy
    missing = denied.details["missing_permissions"]
    assert "patch deployments/scale.apps" in missing and "list pods" in missing
    assert "get deployments.apps" not in missing
    assert f"namespace {namespace}" in denied.message


@pytest.mark.parametrize("resource", ["deployments", "services"])
async def test_rbac_denial_is_permission_denied_and_rolls_back(
    real_kube: Endpoint, namespace: str, resource: str
) -> None:
    """Everything but ``patch`` on one resource: the real server's 403 on the apply."""
    admin = real_kube.admin()
    who = service_account(admin, namespace)
    rules = [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": EVERY},
        {"apiGroups": [""], "resources": ["services", "configmaps"], "verbs": EVERY},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    ]
    for rule in rules:
        if resource in rule["resources"]:
            rule["resources"] = [resource]
            rule["verbs"] = [v for v in EVERY if v != "patch"]
    if resource == "services":
        rules.append({"apiGroups": [""], "resources": ["configmaps"], "verbs": EVERY})
    _grant(admin, who, namespace, rules)
    limited = _as(real_kube, who, namespace)
    spec = DeploymentSpec(
        service_id="denied", namespace=namespace, image=IMAGE, ports=(PortSpec(80),)
    ).validate()
    try:
        with pytest.raises(BackendPermissionDenied) as info:
            await limited.start(spec)
    finally:
        await limited.close()
    assert info.value.code == "PERMISSION_DENIED"
    assert "cannot patch" in info.value.message
    assert deployments(admin, namespace) == []
    assert configmaps(admin, namespace) == []
    assert services(admin, namespace) == []


def _token_kubeconfig(path: Path, real_kube: Endpoint, token: str, namespace: str) -> Path:
    ca = path.parent / "ca.crt"
    ca.write_bytes(real_kube.ca_pem)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "real", "cluster": {"server": real_kube.url, "certificate-authority": str(ca)}}
        ],
        "users": [{"name": "tests", "user": {"token": token}}],
        "contexts": [
            {"name": "other", "context": {"cluster": "real", "user": "tests"}},
            {
                "name": "real",
                "context": {"cluster": "real", "user": "tests", "namespace": namespace},
            },
        ],
        "current-context": "other",
    }
    path.write_text(json.dumps(config))
    return path


async def test_kubeconfig_context_and_namespace_are_used(
    real_kube: Endpoint, namespace: str, tmp_path: Path
) -> None:
    config = _token_kubeconfig(tmp_path / "config", real_kube, real_kube.token, namespace)
    provider = KubernetesProvider(
        env={"KUBECONFIG": str(config), "ALPHASWARM_KUBERNETES_CONTEXT": "real"}
    )
    try:
        health = await provider.health()
        assert health.healthy, health.message
        assert health.details["namespace"] == namespace
        assert f"KUBECONFIG={config}" in health.details["source"]
        assert "context real" in health.details["source"]
        service = unique_name()
        await provider.start(make_spec(service, namespace))
        status = await provider.status(service, namespace=namespace)
        assert status.namespace == namespace
    finally:
        await provider.close()


async def test_unreachable_cluster_is_unavailable_and_names_where_it_looked(
    real_kube: Endpoint, tmp_path: Path
) -> None:
    config = _token_kubeconfig(tmp_path / "config", real_kube, real_kube.token, "team-a")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    config.write_text(config.read_text().replace(real_kube.url, f"https://127.0.0.1:{dead}"))
    provider = KubernetesProvider(
        env={"KUBECONFIG": str(config), "ALPHASWARM_KUBERNETES_CONTEXT": "real"}
    )
    try:
        with pytest.raises(BackendUnavailableError) as info:
            await provider.health()
        with pytest.raises(BackendUnavailableError):
            await provider.status("anything")
    finally:
        await provider.close()
    message = info.value.message
    assert f"127.0.0.1:{dead}" in message
    assert f"KUBECONFIG={config}" in message and "context real" in message
    assert "namespace team-a" in message
    assert info.value.retry_after_seconds > 0 and info.value.code == "UNAVAILABLE"


async def test_missing_configuration_names_what_to_set(tmp_path: Path) -> None:
    provider = KubernetesProvider(env={"HOME": str(tmp_path)})
    with pytest.raises(InfrastructureProviderUnavailable) as info:
        await provider.health()
    assert info.value.reason == "CREDENTIALS_MISSING"
    assert "KUBECONFIG" in info.value.message
    assert "ALPHASWARM_KUBERNETES_CONTEXT" in info.value.message


async def test_a_rejected_token_is_reported_without_the_token(real_kube: Endpoint) -> None:
    provider = KubernetesProvider.from_connection(
        ClusterConnection(
            endpoint=real_kube.url, ca_data=real_kube.ca_pem, token="wrong-token-value"
        )
    )
    try:
        with pytest.raises(InfrastructureProviderUnavailable) as info:
            await provider.health()
    finally:
        await provider.close()
    assert info.value.reason == "CREDENTIALS_INVALID"
    assert "wrong-token-value" not in info.value.message
    assert "wrong-token-value" not in repr(provider.connection)


async def test_a_wrong_ca_is_a_tls_error(real_kube: Endpoint, tmp_path: Path) -> None:
    other = Pki(tmp_path, "other-ca")
    provider = KubernetesProvider.from_connection(
        ClusterConnection(endpoint=real_kube.url, ca_data=other.ca_pem, token=real_kube.token)
    )
    try:
        with pytest.raises(InfrastructureProviderUnavailable) as info:
            await provider.status("anything")
    finally:
        await provider.close()
    assert info.value.reason == "TLS_ERROR"


async def test_cloud_providers_reuse_it_under_their_own_alias(
    real_kube: Endpoint, namespace: str
) -> None:
    calls = []

    def fresh_token() -> str:
        calls.append(1)
        return real_kube.token

    provider = KubernetesProvider.from_connection(
        ClusterConnection(
            endpoint=real_kube.url, ca_data=real_kube.ca_pem, token_provider=fresh_token
        ),
        alias="aws",
        kind="aws",
    )
    try:
        health = await provider.health()
        assert (health.alias, health.kind) == ("aws", "aws")
        status = await provider.start(make_spec(unique_name(), namespace))
        assert status.provider == "aws"
        listed = await provider.list_deployments(namespace=namespace)
        assert {s.provider for s in listed} == {"aws"}
    finally:
        await provider.close()
    assert calls, "the token provider is asked for each request's token"


def test_registry_loads_the_provider_lazily() -> None:
    registry = Registry()
    cls = registry.get("kubernetes")
    assert cls is KubernetesProvider
    assert {"config", "metrics", "native_watch"} <= set(cls.capabilities())


# -- bad input: nothing partially applied -------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (DeploymentSpec(service_id="cmd", command=("sleep", "1")), "spec.image"),
        (
            DeploymentSpec(service_id="lbl", image=IMAGE, labels={"alphaswarm.dev/x": "y"}),
            "spec.labels",
        ),
        (
            DeploymentSpec(service_id="opt", image=IMAGE, provider_options={"gpu": "1"}),
            "spec.provider_options",
        ),
        (
            DeploymentSpec(
                service_id="typ", image=IMAGE, provider_options={"service_type": "Magic"}
            ),
            "spec.provider_options",
        ),
    ],
)
async def test_invalid_specs_are_rejected_before_any_request(
    provider: KubernetesProvider, requests_sent: Sent, spec: DeploymentSpec, field: str
) -> None:
    with pytest.raises(InvalidSpecError) as info:
        await provider.start(spec.validate())
    assert info.value.violations[0].field.startswith(field)
    assert requests_sent == []


async def test_an_absent_namespace_is_not_found_and_creates_nothing(real_kube: Endpoint) -> None:
    provider = KubernetesProvider.from_connection(
        ClusterConnection(endpoint=real_kube.url, ca_data=real_kube.ca_pem, token=real_kube.token),
        env={"ALPHASWARM_KUBERNETES_CREATE_NAMESPACES": "false"},
    )
    nowhere = unique_name("nowhere")
    try:
        with pytest.raises(ResourceNotFoundError, match=f"namespace '{nowhere}' does not exist"):
            await provider.start(make_spec("svc", nowhere))
        with pytest.raises(DeploymentNotFoundError):
            await provider.status("svc", namespace=nowhere)
    finally:
        await provider.close()
    assert nowhere not in names(real_kube.admin(), "/api/v1/namespaces")


async def test_unknown_service_everywhere_is_not_found(
    provider: KubernetesProvider, namespace: str
) -> None:
    for call in (
        provider.status("ghost", namespace=namespace),
        provider.stop("ghost", namespace=namespace),
        provider.scale("ghost", 1, namespace=namespace),
    ):
        with pytest.raises(DeploymentNotFoundError):
            await call


def test_the_node_heartbeats_through_its_lease(real_kube: Endpoint) -> None:
    """Without a Lease kwok's Node status moved every 10-20 min only: past the node
    lifecycle controller's grace the node turned Unknown, and each pod created later
    was marked NotReady for good (a Deployment that never got ready, late in a run)."""
    lease = node_lease(real_kube.admin())
    assert lease is not None, "kwok holds no Lease for its node"
    spec = lease["spec"]
    assert spec["leaseDurationSeconds"] == NODE_LEASE_SECONDS
    renewed = datetime.fromisoformat(spec["renewTime"].replace("Z", "+00:00"))
    # kwok renews every quarter of the duration; older than the grace, the node is Unknown.
    age = (datetime.now(UTC) - renewed).total_seconds()
    assert age < NODE_MONITOR_GRACE_SECONDS, f"the Lease was last renewed {age:.0f} s ago"
