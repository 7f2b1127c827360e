"""Kubernetes-specific behaviour, through the real client against the API emulator.

The contract suite covers the provider-agnostic semantics; these tests cover
what issue 4 adds: request counts of paged lists, server-side apply and the
scale subresource, stop's deletions, failure reasons, the metrics API being
absent, the resumable watch, health and every error mapping.
"""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from alphaswarm_controller.providers.kubernetes import ClusterConnection, KubernetesProvider
from alphaswarm_core.providers.protocol import (
    BackendConflictError,
    BackendPermissionDenied,
    BackendRejectedError,
    BackendUnavailableError,
    CapabilityUnsupported,
    ConfigMapPatch,
    ConfigVersionConflict,
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
from tests.fakes.kube_api import KubeApiEmulator
from tests.fakes.kube_fixtures import (
    IMAGE,
    TOKEN,
    connect,
    kube,
    kube_namespace,
    kube_provider,
    make_spec,
)

__all__ = ["kube", "kube_namespace", "kube_provider"]  # fixtures used by name below

Provider = KubernetesProvider


@pytest.fixture
def plain() -> Iterator[KubeApiEmulator]:
    """A plain-HTTP emulator without authentication, for kubeconfig and bulk tests."""
    emulator = KubeApiEmulator().start()
    yield emulator
    emulator.stop()


def _objects(emulator: KubeApiEmulator, resource: str, namespace: str) -> list[str]:
    with emulator.store.lock:
        return sorted(name for ns, name in emulator.store.objects[resource] if ns == namespace)


# -- paging: no N+1 ------------------------------------------------------------------------


def _seed(emulator: KubeApiEmulator, namespace: str, count: int, *, managed: bool) -> None:
    labels = {"app.kubernetes.io/managed-by": "alphaswarm"} if managed else {"team": "other"}
    prefix = "svc" if managed else "foreign"
    for index in range(count):
        name = f"{prefix}-{index:05d}"
        emulator.store.create(
            "deployments",
            namespace,
            {
                "metadata": {"name": name, "labels": {**labels, "alphaswarm.dev/service": name}},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"alphaswarm.dev/service": name}},
                    "template": {
                        "metadata": {"labels": {"alphaswarm.dev/service": name}},
                        "spec": {"containers": [{"name": "main", "image": IMAGE}]},
                    },
                },
            },
        )


@pytest.mark.parametrize("page_size", [500, 1000])
async def test_listing_5000_deployments_costs_one_request_per_page(
    plain: KubeApiEmulator, page_size: int
) -> None:
    plain.controller.paused = True  # 5,000 idle Deployments; no pods needed
    plain.create_namespace("bulk")
    _seed(plain, "bulk", 5000, managed=True)
    _seed(plain, "bulk", 7, managed=False)
    provider = KubernetesProvider(
        env={
            "KUBECONFIG": str(plain.kubeconfig(Path(plain._tmp.name) / "config")),
            "ALPHASWARM_KUBERNETES_PAGE_SIZE": str(page_size),
        }
    )
    try:
        before = len(plain.requests)
        listed = await provider.list_deployments(namespace="bulk")
        made = plain.requests[before:]
    finally:
        await provider.close()

    assert len(listed) == 5000, "foreign Deployments are not listed"
    assert {s.service_id for s in listed} == {f"svc-{i:05d}" for i in range(5000)}
    assert all(s.state is DeploymentState.STOPPED and s.provider == "kubernetes" for s in listed)
    expected = math.ceil(5000 / page_size)
    assert len(made) == expected, [(r.method, r.path) for r in made[:20]]
    assert all(r.path == "/apis/apps/v1/namespaces/bulk/deployments" for r in made)
    assert all(
        r.query["labelSelector"] == "app.kubernetes.io/managed-by=alphaswarm"
        and r.query["limit"] == str(page_size)
        for r in made
    )
    print(f"5,000 deployments, page {page_size}: {len(made)} list requests")


async def test_listing_all_namespaces_is_paged_too(plain: KubeApiEmulator) -> None:
    plain.controller.paused = True
    for namespace in ("team-a", "team-b"):
        plain.create_namespace(namespace)
        _seed(plain, namespace, 30, managed=True)
    provider = KubernetesProvider(
        env={
            "KUBECONFIG": str(plain.kubeconfig(Path(plain._tmp.name) / "config")),
            "ALPHASWARM_KUBERNETES_PAGE_SIZE": "25",
        }
    )
    try:
        before = len(plain.requests)
        listed = await provider.list_deployments()
        made = plain.requests[before:]
    finally:
        await provider.close()
    assert len(listed) == 60
    assert {s.namespace for s in listed} == {"team-a", "team-b"}
    assert len(made) == math.ceil(60 / 25)
    assert all(r.path == "/apis/apps/v1/deployments" for r in made)


# -- how start, scale and stop talk to the API ----------------------------------------------


async def test_start_applies_server_side_and_a_second_start_changes_nothing(
    kube: KubeApiEmulator, kube_provider: Provider, kube_namespace: str
) -> None:
    service = unique_name()
    spec = make_spec(service, kube_namespace, replicas=2, env={"MODE": "a"})
    await kube_provider.start(spec)
    await wait_for(kube_provider, service, kube_namespace, ready(2))
    first = kube.store.get("deployments", kube_namespace, service)

    before = len(kube.requests)
    await kube_provider.start(spec)
    writes = [r for r in kube.requests[before:] if r.method != "GET"]
    after = kube.store.get("deployments", kube_namespace, service)

    assert after["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert [(r.method, r.content_type, r.query.get("fieldManager")) for r in writes] == [
        ("PATCH", "application/apply-patch+yaml", "alphaswarm")
    ]
    assert not any(r.method == "PUT" and "/deployments" in r.path for r in kube.requests)
    container = after["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == [{"name": "MODE", "value": "a"}]
    assert container["envFrom"] == [{"configMapRef": {"name": f"{service}-config"}}]
    labels = after["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "alphaswarm"
    assert labels["alphaswarm.dev/service"] == service


async def test_start_removes_env_that_left_the_spec(
    kube: KubeApiEmulator, kube_provider: Provider, kube_namespace: str
) -> None:
    service = unique_name()
    await kube_provider.start(make_spec(service, kube_namespace, env={"A": "1", "B": "2"}))
    await kube_provider.start(make_spec(service, kube_namespace, env={"A": "1"}))
    deployment = kube.store.get("deployments", kube_namespace, service)
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "A", "value": "1"}]


async def test_scale_goes_through_the_scale_subresource(
    kube: KubeApiEmulator, kube_provider: Provider, kube_namespace: str
) -> None:
    service = unique_name()
    await kube_provider.start(make_spec(service, kube_namespace))
    before = len(kube.requests)
    await kube_provider.scale(service, 4, namespace=kube_namespace)
    writes = [(r.method, r.path) for r in kube.requests[before:] if r.method != "GET"]
    assert writes == [
        ("PATCH", f"/apis/apps/v1/namespaces/{kube_namespace}/deployments/{service}/scale")
    ]
    await wait_for(kube_provider, service, kube_namespace, ready(4))


async def test_stop_deletes_pods_and_service_and_start_brings_them_back(
    kube: KubeApiEmulator, kube_provider: Provider, kube_namespace: str
) -> None:
    service = unique_name()
    spec = DeploymentSpec(
        service_id=service,
        namespace=kube_namespace,
        image=IMAGE,
        replicas=2,
        ports=(PortSpec(8080, host_port=80),),
        provider_options={"service_type": "NodePort"},
    ).validate()
    await kube_provider.start(spec)
    await wait_for(kube_provider, service, kube_namespace, ready(2))
    svc = kube.store.get("services", kube_namespace, service)
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["ports"] == [
        {"name": "tcp-80", "port": 80, "targetPort": 8080, "protocol": "TCP"}
    ]

    stopped = await kube_provider.stop(service, namespace=kube_namespace)
    assert stopped.state is DeploymentState.STOPPED
    assert stopped.message == "stopped"
    assert _objects(kube, "services", kube_namespace) == []
    await wait_for(kube_provider, service, kube_namespace, ready(0))
    assert _objects(kube, "pods", kube_namespace) == []
    assert _objects(kube, "deployments", kube_namespace) == [service], "the definition is kept"
    assert _objects(kube, "configmaps", kube_namespace) == [f"{service}-config"]

    with pytest.raises(BackendRejectedError, match="StartDeployment"):
        await kube_provider.scale(service, 3, namespace=kube_namespace)
    await kube_provider.scale(service, 0, namespace=kube_namespace)  # already there: fine

    await kube_provider.start(spec)
    await wait_for(kube_provider, service, kube_namespace, ready(2))
    assert _objects(kube, "services", kube_namespace) == [service]


async def test_start_without_ports_leaves_a_foreign_service_alone(
    kube: KubeApiEmulator, kube_provider: Provider, kube_namespace: str
) -> None:
    service = unique_name()
    kube.store.create(
        "services", kube_namespace, {"metadata": {"name": service}, "spec": {"ports": []}}
    )
    await kube_provider.start(make_spec(service, kube_namespace))
    await kube_provider.stop(service, namespace=kube_namespace)
    assert _objects(kube, "services", kube_namespace) == [service]


async def test_a_foreign_deployment_of_the_same_name_is_never_touched(
    kube: KubeApiEmulator, kube_provider: Provider, kube_namespace: str
) -> None:
    kube.controller.paused = True  # so the foreign object changes only if we change it
    _seed(kube, kube_namespace, 1, managed=False)
    foreign = kube.store.get("deployments", kube_namespace, "foreign-00000")
    with pytest.raises(BackendRejectedError, match="does not manage"):
        await kube_provider.start(make_spec("foreign-00000", kube_namespace))
    for call in (
        kube_provider.status("foreign-00000", namespace=kube_namespace),
        kube_provider.stop("foreign-00000", namespace=kube_namespace),
        kube_provider.scale("foreign-00000", 0, namespace=kube_namespace),
    ):
        with pytest.raises(DeploymentNotFoundError):
            await call
    assert kube.store.get("deployments", kube_namespace, "foreign-00000") == foreign
    assert _objects(kube, "configmaps", kube_namespace) == []


# -- status ---------------------------------------------------------------------------------


async def test_failing_pods_surface_their_reason_then_fail_the_deployment(
    kube: KubeApiEmulator, kube_provider: Provider, kube_namespace: str
) -> None:
    service = unique_name()
    spec = DeploymentSpec(
        service_id=service, namespace=kube_namespace, image="registry.example/crashloop:1"
    ).validate()
    await kube_provider.start(spec)
    pending = await wait_for(
        kube_provider,
        service,
        kube_namespace,
        lambda s: "CrashLoopBackOff" in s.message,
        timeout=10,
    )
    assert pending.state is DeploymentState.PENDING
    assert pending.instances and pending.instances[0].state == "CrashLoopBackOff"
    failed = await wait_for(
        kube_provider,
        service,
        kube_namespace,
        lambda s: s.state is DeploymentState.FAILED,
        timeout=15,
    )
    assert "ProgressDeadlineExceeded" in failed.message
    assert "CrashLoopBackOff" in failed.message
    assert failed.restarts >= 1


# -- config ---------------------------------------------------------------------------------


async def test_apply_config_updates_the_configmap_and_rolls_out(
    kube: KubeApiEmulator, kube_provider: Provider, kube_namespace: str
) -> None:
    service = unique_name()
    await kube_provider.start(make_spec(service, kube_namespace, replicas=2))
    before = await wait_for(kube_provider, service, kube_namespace, ready(2))
    config = await kube_provider.get_config(service, namespace=kube_namespace)
    stored = kube.store.get("configmaps", kube_namespace, f"{service}-config")
    assert config.version == stored["metadata"]["resourceVersion"]

    applied = await kube_provider.apply_config(
        ConfigMapPatch(
            service, kube_namespace, set={"LEVEL": "debug"}, expected_version=config.version
        )
    )
    assert kube.store.get("configmaps", kube_namespace, f"{service}-config")["data"] == {
        "LEVEL": "debug"
    }
    assert any(
        r.method == "PUT" and r.path.endswith(f"/configmaps/{service}-config")
        for r in kube.requests
    )

    def rolled(status: object) -> bool:
        ids = {i.instance_id for i in status.instances}  # type: ignore[attr-defined]
        return ready(2)(status) and not ids & {i.instance_id for i in before.instances}  # type: ignore[arg-type]

    await wait_for(kube_provider, service, kube_namespace, rolled, timeout=20)
    same = await kube_provider.apply_config(
        ConfigMapPatch(service, kube_namespace, set={"LEVEL": "debug"})
    )
    assert same.version == applied.version, "an unchanged config is not rewritten"


async def test_a_concurrent_config_writer_is_aborted_or_merged(
    kube: KubeApiEmulator, kube_provider: Provider, kube_namespace: str
) -> None:
    service = unique_name()
    await kube_provider.start(make_spec(service, kube_namespace))
    config = await kube_provider.get_config(service, namespace=kube_namespace)

    # Another writer wins the race between our read and our conditional PUT.
    kube.fail(409, path_contains="/configmaps/", method="PUT")
    with pytest.raises(ConfigVersionConflict) as conflict:
        await kube_provider.apply_config(
            ConfigMapPatch(service, kube_namespace, set={"A": "1"}, expected_version=config.version)
        )
    assert conflict.value.code == "ABORTED"
    assert kube.store.get("configmaps", kube_namespace, f"{service}-config").get("data") == {}

    # Without an expected version the provider re-reads and merges instead.
    kube.fail(409, path_contains="/configmaps/", method="PUT")
    merged = await kube_provider.apply_config(
        ConfigMapPatch(service, kube_namespace, set={"A": "1"})
    )
    assert merged.data == {"A": "1"}


async def test_config_of_a_missing_namespace_or_service_is_not_found(
    kube_provider: Provider,
) -> None:
    with pytest.raises(DeploymentNotFoundError):
        await kube_provider.get_config("nothing", namespace="no-such-namespace")
    with pytest.raises(DeploymentNotFoundError):
        await kube_provider.apply_config(
            ConfigMapPatch("nothing", "no-such-namespace", set={"A": "1"})
        )


# -- metrics --------------------------------------------------------------------------------


async def test_metrics_sum_pod_metrics_and_survive_a_transient_error(
    kube: KubeApiEmulator, kube_provider: Provider, kube_namespace: str
) -> None:
    service = unique_name()
    await kube_provider.start(make_spec(service, kube_namespace, replicas=3))
    await wait_for(kube_provider, service, kube_namespace, ready(3))
    stream = kube_provider.stream_metrics(service, namespace=kube_namespace, interval_seconds=0.05)
    try:
        first = await anext(stream)
        kube.fail(503, path_contains=f"/metrics.k8s.io/v1beta1/namespaces/{kube_namespace}")
        second = await anext(stream)
        third = await anext(stream)
    finally:
        await stream.aclose()
    # 3 pods x (25000000n CPU, 12Mi memory) in the emulator's PodMetrics.
    assert (first.ok, first.replicas, first.memory_bytes) == (True, 3, 3 * 12 * 1024**2)
    assert first.cpu_percent == pytest.approx(7.5)
    assert not second.ok and "unavailable" in second.error
    assert third.ok and third.replicas == 3


async def test_metrics_api_absent_fails_once_with_unimplemented(
    kube: KubeApiEmulator, kube_provider: Provider, kube_namespace: str
) -> None:
    kube.metrics_enabled = False
    service = unique_name()
    await kube_provider.start(make_spec(service, kube_namespace))
    stream = kube_provider.stream_metrics(service, namespace=kube_namespace, interval_seconds=0.05)
    with pytest.raises(CapabilityUnsupported, match=r"metrics\.k8s\.io") as info:
        await anext(stream)
    assert info.value.code == "UNIMPLEMENTED"
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    with pytest.raises(DeploymentNotFoundError):
        await anext(kube_provider.stream_metrics("missing", namespace=kube_namespace))


# -- watch ----------------------------------------------------------------------------------


async def test_watch_resumes_from_its_resource_version_after_a_dropped_connection(
    kube: KubeApiEmulator, kube_provider: Provider, kube_namespace: str
) -> None:
    service = unique_name()
    await kube_provider.start(make_spec(service, kube_namespace))
    await wait_for(kube_provider, service, kube_namespace, ready(1))
    watch = kube_provider.watch(service, namespace=kube_namespace, interval_seconds=0.05)
    path = f"/apis/apps/v1/namespaces/{kube_namespace}/deployments"

    def watches() -> list[dict[str, str]]:
        return [r.query for r in kube.requests if r.path == path and r.query.get("watch")]

    def item_reads() -> list[object]:
        return [r for r in kube.requests if r.path == f"{path}/{service}" and r.method == "GET"]

    try:
        async with asyncio.timeout(30):
            first = await anext(watch)
            assert first.ready_replicas == 1
            version = kube.store.get("deployments", kube_namespace, service)["metadata"][
                "resourceVersion"
            ]
            await kube_provider.scale(service, 2, namespace=kube_namespace)
            async for status in watch:
                if status.desired_replicas == 2:
                    break
            opened = watches()[0]
            assert opened["fieldSelector"] == f"metadata.name={service}"
            assert opened["resourceVersion"] == version, "the watch starts where the read ended"

            kube.drop_watches()
            resized = await kube_provider.scale(service, 3, namespace=kube_namespace)
            assert resized.desired_replicas == 3
            reads_before = len(item_reads())
            async for status in watch:
                if status.ready_replicas == 3 and status.state is DeploymentState.RUNNING:
                    break
    finally:
        await watch.aclose()
    assert len(watches()) == 2, "one reconnection, no re-list"
    resumed = watches()[1]
    assert int(resumed["resourceVersion"]) > int(opened["resourceVersion"])
    assert len(item_reads()) == reads_before, "resuming does not read the Deployment again"


async def test_watch_ends_with_not_found_when_the_deployment_is_deleted(
    kube: KubeApiEmulator, kube_provider: Provider, kube_namespace: str
) -> None:
    service = unique_name()
    await kube_provider.start(make_spec(service, kube_namespace))
    watch = kube_provider.watch(service, namespace=kube_namespace)
    try:
        async with asyncio.timeout(30):
            await anext(watch)
            kube.store.delete("deployments", kube_namespace, service)
            with pytest.raises(DeploymentNotFoundError):
                async for _ in watch:
                    pass
    finally:
        await watch.aclose()


# -- health and connection sources ------------------------------------------------------------


async def test_health_names_server_version_and_missing_permissions(
    kube: KubeApiEmulator, kube_provider: Provider
) -> None:
    health = await kube_provider.health()
    assert health.healthy and health.details["server_version"].startswith("v1.31")
    kube.deny("patch", "deployments/scale", "default")
    denied = await kube_provider.health()
    assert not denied.healthy
    assert "patch deployments/scale.apps" in denied.message
    assert "namespace default" in denied.message


async def test_kubeconfig_context_and_namespace_are_used(
    plain: KubeApiEmulator, tmp_path: Path
) -> None:
    plain.create_namespace("team-a")
    config = plain.kubeconfig(tmp_path / "config", context="emu", namespace="team-a")
    provider = KubernetesProvider(
        env={"KUBECONFIG": str(config), "ALPHASWARM_KUBERNETES_CONTEXT": "emu"}
    )
    try:
        health = await provider.health()
        assert health.healthy, health.message
        assert health.details["namespace"] == "team-a"
        assert f"KUBECONFIG={config}" in health.details["source"]
        assert "context emu" in health.details["source"]
        service = unique_name()
        await provider.start(make_spec(service, "team-a"))
        status = await provider.status(service, namespace="team-a")
        assert status.namespace == "team-a"
    finally:
        await provider.close()


async def test_unreachable_cluster_is_unavailable_and_names_where_it_looked(
    plain: KubeApiEmulator, tmp_path: Path
) -> None:
    config = plain.kubeconfig(tmp_path / "config", context="emu", namespace="team-a")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    config.write_text(config.read_text().replace(f":{plain.port}", f":{dead}"))
    provider = KubernetesProvider(
        env={"KUBECONFIG": str(config), "ALPHASWARM_KUBERNETES_CONTEXT": "emu"}
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
    assert f"KUBECONFIG={config}" in message and "context emu" in message
    assert "namespace team-a" in message
    assert info.value.retry_after_seconds > 0 and info.value.code == "UNAVAILABLE"


async def test_a_slow_api_server_times_out_as_unavailable(kube: KubeApiEmulator) -> None:
    provider = connect(kube, {"ALPHASWARM_KUBERNETES_TIMEOUT": "0.3"})
    kube.delay = 1.0
    try:
        with pytest.raises(BackendUnavailableError, match="timed out"):
            await provider.status("anything")
    finally:
        kube.delay = 0
        await provider.close()


async def test_server_errors_are_unavailable_with_the_server_retry_hint(
    kube: KubeApiEmulator, kube_provider: Provider
) -> None:
    kube.fail(503, path_contains="/deployments/", retry_after=7)
    with pytest.raises(BackendUnavailableError) as info:
        await kube_provider.status("anything")
    assert info.value.retry_after_seconds == 7


async def test_missing_configuration_names_what_to_set(tmp_path: Path) -> None:
    provider = KubernetesProvider(env={"HOME": str(tmp_path)})
    with pytest.raises(InfrastructureProviderUnavailable) as info:
        await provider.health()
    assert info.value.reason == "CREDENTIALS_MISSING"
    assert "KUBECONFIG" in info.value.message
    assert "ALPHASWARM_KUBERNETES_CONTEXT" in info.value.message


async def test_a_rejected_token_is_reported_without_the_token(kube: KubeApiEmulator) -> None:
    provider = KubernetesProvider.from_connection(
        ClusterConnection(endpoint=kube.url, ca_data=kube.ca_pem, token="wrong-token-value")
    )
    try:
        with pytest.raises(InfrastructureProviderUnavailable) as info:
            await provider.health()
    finally:
        await provider.close()
    assert info.value.reason == "CREDENTIALS_INVALID"
    assert "wrong-token-value" not in info.value.message
    assert "wrong-token-value" not in repr(provider.connection)


async def test_a_wrong_ca_is_a_tls_error(kube: KubeApiEmulator) -> None:
    other = KubeApiEmulator(tls=True).start()
    try:
        provider = KubernetesProvider.from_connection(
            ClusterConnection(endpoint=kube.url, ca_data=other.ca_pem, token=TOKEN)
        )
        with pytest.raises(InfrastructureProviderUnavailable) as info:
            await provider.status("anything")
        await provider.close()
    finally:
        other.stop()
    assert info.value.reason == "TLS_ERROR"


async def test_cloud_providers_reuse_it_under_their_own_alias(kube: KubeApiEmulator) -> None:
    calls = []

    def fresh_token() -> str:
        calls.append(1)
        return TOKEN

    provider = KubernetesProvider.from_connection(
        ClusterConnection(endpoint=kube.url, ca_data=kube.ca_pem, token_provider=fresh_token),
        env={"ALPHASWARM_KUBERNETES_CREATE_NAMESPACES": "true"},
        alias="aws",
        kind="aws",
    )
    try:
        health = await provider.health()
        assert (health.alias, health.kind) == ("aws", "aws")
        status = await provider.start(make_spec(unique_name(), "eks-apps"))
        assert status.provider == "aws"
        listed = await provider.list_deployments(namespace="eks-apps")
        assert {s.provider for s in listed} == {"aws"}
    finally:
        await provider.close()
    assert calls, "the token provider is asked for each request's token"


def test_registry_loads_the_provider_lazily() -> None:
    registry = Registry()
    cls = registry.get("kubernetes")
    assert cls is KubernetesProvider
    assert {"config", "metrics", "native_watch"} <= set(cls.capabilities())


# -- bad input and faults: nothing partially applied --------------------------------------------


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
    kube: KubeApiEmulator, kube_provider: Provider, spec: DeploymentSpec, field: str
) -> None:
    before = len(kube.requests)
    with pytest.raises(InvalidSpecError) as info:
        await kube_provider.start(spec.validate())
    assert info.value.violations[0].field.startswith(field)
    assert len(kube.requests) == before


async def test_an_absent_namespace_is_not_found_and_creates_nothing(
    kube: KubeApiEmulator,
) -> None:
    provider = connect(kube, {"ALPHASWARM_KUBERNETES_CREATE_NAMESPACES": "false"})
    try:
        with pytest.raises(ResourceNotFoundError, match="namespace 'nowhere' does not exist"):
            await provider.start(make_spec("svc", "nowhere"))
        with pytest.raises(DeploymentNotFoundError):
            await provider.status("svc", namespace="nowhere")
    finally:
        await provider.close()
    assert not kube.store.namespace_exists("nowhere")
    assert all(ns != "nowhere" for objects in kube.store.objects.values() for ns, _ in objects)


@pytest.mark.parametrize("resource", ["deployments", "services"])
async def test_rbac_denial_is_permission_denied_and_rolls_back(
    kube: KubeApiEmulator, kube_provider: Provider, kube_namespace: str, resource: str
) -> None:
    kube.deny("patch", resource, kube_namespace)
    spec = DeploymentSpec(
        service_id="denied", namespace=kube_namespace, image=IMAGE, ports=(PortSpec(80),)
    ).validate()
    with pytest.raises(BackendPermissionDenied) as info:
        await kube_provider.start(spec)
    assert info.value.code == "PERMISSION_DENIED"
    assert "cannot patch" in info.value.message
    for kind in ("deployments", "configmaps", "services"):
        assert _objects(kube, kind, kube_namespace) == [], f"{kind} left behind"


async def test_an_update_rejected_by_the_server_is_rejected_cleanly(
    kube: KubeApiEmulator, kube_provider: Provider, kube_namespace: str
) -> None:
    kube.fail(422, path_contains="/deployments/", method="PATCH")
    with pytest.raises(BackendRejectedError):
        await kube_provider.start(make_spec("rejected", kube_namespace))
    assert _objects(kube, "configmaps", kube_namespace) == []


async def test_unknown_service_everywhere_is_not_found(kube_provider: Provider) -> None:
    for call in (
        kube_provider.status("ghost", namespace="default"),
        kube_provider.stop("ghost", namespace="default"),
        kube_provider.scale("ghost", 1, namespace="default"),
    ):
        with pytest.raises(DeploymentNotFoundError):
            await call


async def test_conflicts_from_the_server_are_aborted(
    kube: KubeApiEmulator, kube_provider: Provider, kube_namespace: str
) -> None:
    service = unique_name()
    await kube_provider.start(make_spec(service, kube_namespace))
    kube.fail(409, path_contains="/scale", method="PATCH")
    with pytest.raises(BackendConflictError) as info:
        await kube_provider.scale(service, 2, namespace=kube_namespace)
    assert info.value.code == "ABORTED"
