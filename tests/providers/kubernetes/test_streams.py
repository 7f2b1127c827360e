"""Issue 20 on Kubernetes: one watch for a namespace, pod logs, delete (real API server).

Request counts come from the provider's transport (``requests_sent``) or, in the
fault cases, from the proxy in front of the API server. Pod logs are kwok's: every
pod on its node prints a line every half second (tests/realkube/podlogs.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest

from alphaswarm_controller.providers.kubernetes import KubernetesProvider
from alphaswarm_core.providers.protocol import (
    BackendUnavailableError,
    ConfigMapPatch,
    DeploymentEvent,
    DeploymentNotFoundError,
    DeploymentSpec,
    EventKind,
    LogEntry,
    LogQuery,
    PortSpec,
)
from alphaswarm_core.testing import ready, unique_name, wait_for
from tests.fakes.faults import Kind
from tests.fakes.kube_proxy import KubeFaultProxy
from tests.realkube.cluster import Endpoint
from tests.realkube.contract import held
from tests.realkube.fixtures import IMAGE, connect_url, make_spec

from .conftest import Sent, lists, watches
from .test_provider import deployment_object, new_namespace, seed, services

APPS = "/apis/apps/v1"


@pytest.fixture
async def proxied(
    real_kube: Endpoint, kube_proxy: KubeFaultProxy
) -> AsyncIterator[KubernetesProvider]:
    provider = connect_url(real_kube, kube_proxy.url)
    await provider.open()
    yield provider
    await provider.close()


async def _snapshot(watch: AsyncGenerator[DeploymentEvent, None]) -> list[DeploymentEvent]:
    """Events up to and including SNAPSHOT_DONE."""
    events = []
    async for event in watch:
        events.append(event)
        if event.kind is EventKind.SNAPSHOT_DONE:
            return events
    raise AssertionError("the watch ended before its snapshot")


async def _until_event(
    watch: AsyncGenerator[DeploymentEvent, None], kind: EventKind, service: str
) -> list[DeploymentEvent]:
    """Events up to the first ``kind`` of ``service``."""
    seen = []
    async for event in watch:
        seen.append(event)
        if event.kind is kind and event.status and event.status.service_id == service:
            return seen
    raise AssertionError(f"the watch ended before {kind} of {service}")


# -- WatchDeployments: one list+watch, not one per service ------------------------------------


@pytest.mark.parametrize("everywhere", [False, True], ids=["namespace", "all-namespaces"])
async def test_fifty_services_cost_one_list_and_one_watch(
    provider: KubernetesProvider,
    real_kube: Endpoint,
    namespace: str,
    requests_sent: Sent,
    everywhere: bool,
) -> None:
    admin = real_kube.admin()
    seed(admin, namespace, 50, managed=True)
    seed(admin, namespace, 3, managed=False)
    requests_sent.clear()
    watch = provider.watch_deployments(namespace=None if everywhere else namespace)
    try:
        async with asyncio.timeout(120):
            snapshot = await _snapshot(watch)
            mine = {
                e.status.service_id
                for e in snapshot
                if e.status is not None and e.status.namespace == namespace
            }
            assert mine == {f"svc-{i:03d}" for i in range(50)}
            assert all(e.kind is EventKind.ADDED for e in snapshot[:-1])
            await provider.scale("svc-007", 1, namespace=namespace)
            await _until_event(watch, EventKind.MODIFIED, "svc-007")
            await provider.delete("svc-011", namespace=namespace)
            await _until_event(watch, EventKind.DELETED, "svc-011")
    finally:
        await watch.aclose()
    path = f"{APPS}/deployments" if everywhere else f"{APPS}/namespaces/{namespace}/deployments"
    on_path = [r for r in requests_sent if r["path"] == path]
    print(f"50 services: {len(lists(on_path))} list and {len(watches(on_path))} watch requests")
    assert len(lists(on_path)) == 1, "one list, whatever the number of services"
    assert len(watches(on_path)) == 1, "one watch for all of them"
    assert watches(on_path)[0]["query"]["allowWatchBookmarks"] is True


async def test_a_relist_after_410_sends_only_what_changed(
    proxied: KubernetesProvider,
    kube_proxy: KubeFaultProxy,
    real_kube: Endpoint,
    namespace: str,
) -> None:
    """While the watch is down (410, then a relist) one service is deleted and one added:
    the relist is diffed against what was sent, so they come as DELETED and ADDED and
    the unchanged ones are not repeated."""
    admin = real_kube.admin()
    seed(admin, namespace, 3, managed=True)
    watch = proxied.watch_deployments(namespace=namespace)
    try:
        async with asyncio.timeout(60):
            await _snapshot(watch)
            kube_proxy.faults.inject("kube:watch deployments", Kind.GONE, code="ERROR", times=0)
            kube_proxy.drop_watches()  # the reconnect meets the 410s
            admin.delete(f"{APPS}/namespaces/{namespace}/deployments/svc-000")
            admin.create(
                f"{APPS}/namespaces/{namespace}/deployments",
                deployment_object("svc-003", managed=True),
            )
            pending = asyncio.ensure_future(anext(watch))
            await asyncio.sleep(1.0)
            kube_proxy.faults.clear()
            events = [await pending]
            wanted = {(EventKind.DELETED, "svc-000"), (EventKind.ADDED, "svc-003")}
            while not wanted <= {(e.kind, e.status.service_id) for e in events if e.status}:
                events.append(await anext(watch))
    finally:
        await watch.aclose()
    kinds = [(e.kind, e.status.service_id) for e in events if e.status]
    assert (EventKind.ADDED, "svc-001") not in kinds and (EventKind.ADDED, "svc-002") not in kinds
    assert len(kube_proxy.sent("kube:list deployments")) >= 2, "relisted"


async def test_the_namespace_watch_survives_failing_watches(
    proxied: KubernetesProvider, kube_proxy: KubeFaultProxy, namespace: str
) -> None:
    await proxied.start(make_spec("first", namespace))
    kube_proxy.faults.inject("kube:watch deployments", Kind.UNAVAILABLE, times=3)
    watch = proxied.watch_deployments(namespace=namespace)
    try:
        async with asyncio.timeout(60):
            await _snapshot(watch)
            await proxied.start(make_spec("second", namespace))
            await _until_event(watch, EventKind.ADDED, "second")
    finally:
        await watch.aclose()
    assert len(kube_proxy.sent("kube:watch deployments")) == 4


async def test_an_absent_namespace_is_an_empty_snapshot(
    provider: KubernetesProvider,
) -> None:
    watch = provider.watch_deployments(namespace="no-such-namespace-" + unique_name())
    try:
        async with asyncio.timeout(30):
            snapshot = await _snapshot(watch)  # an absent namespace is empty, not an error
    finally:
        await watch.aclose()
    assert [e.kind for e in snapshot] == [EventKind.SNAPSHOT_DONE]


# -- logs -------------------------------------------------------------------------------------


async def _entries(
    provider: KubernetesProvider, service: str, namespace: str, **query: Any
) -> list[LogEntry]:
    stream = provider.stream_logs(service, LogQuery(**query), namespace=namespace)
    try:
        async with asyncio.timeout(60):
            return [entry async for entry in stream]
    finally:
        await stream.aclose()


async def test_logs_are_read_per_pod_of_the_service_only(
    provider: KubernetesProvider, namespace: str, requests_sent: Sent
) -> None:
    service, other = unique_name(), unique_name()
    await provider.start(make_spec(service, namespace, replicas=2))
    await provider.start(make_spec(other, namespace, replicas=1))
    status = await wait_for(provider, service, namespace, ready(2))
    await wait_for(provider, other, namespace, ready(1))
    pods = {i.instance_id for i in status.instances}
    requests_sent.clear()
    entries = await _entries(provider, service, namespace, tail_lines=3)
    log_requests = [r for r in requests_sent if r["path"].endswith("/log")]
    assert {r["path"].split("/")[-2] for r in log_requests} == pods
    assert all(r["query"]["tailLines"] == 3 and r["query"]["timestamps"] for r in log_requests)
    assert {e.instance_id for e in entries} == pods
    assert all(len([e for e in entries if e.instance_id == pod]) == 3 for pod in pods)
    times = [e.time for e in entries]
    assert times == sorted(times), "replicas merged by time"


async def test_a_cut_log_follow_resumes_without_losing_or_repeating_lines(
    proxied: KubernetesProvider, kube_proxy: KubeFaultProxy, namespace: str
) -> None:
    service = unique_name()
    await proxied.start(make_spec(service, namespace))
    [pod] = (await wait_for(proxied, service, namespace, ready(1))).instances
    stream = proxied.stream_logs(service, LogQuery(follow=True, tail_lines=1), namespace=namespace)
    seen: list[LogEntry] = []
    try:
        async with asyncio.timeout(60):
            async for entry in stream:
                seen.append(entry)
                if len(seen) == 4:
                    break
            kube_proxy.drop_watches()  # cuts the log follow too
            async for entry in stream:
                seen.append(entry)
                if len(seen) == 10:
                    break
    finally:
        await stream.aclose()
    numbers = [int(e.text.split()[1]) for e in seen]
    assert numbers == list(range(numbers[0], numbers[0] + 10)), numbers
    follows = [r for r in kube_proxy.sent("kube:get pods/log") if r.query.get("follow")]
    assert len(follows) == 2, "one follow, reopened once from its last line"
    assert follows[1].query["sinceTime"], follows[1].query
    assert {e.instance_id for e in seen} == {pod.instance_id}


async def test_logs_of_a_service_without_running_pods_end_empty(
    provider: KubernetesProvider, namespace: str
) -> None:
    service = unique_name()
    await provider.start(make_spec(service, namespace, replicas=0))
    assert await _entries(provider, service, namespace) == []


# -- delete -----------------------------------------------------------------------------------


async def test_delete_removes_only_what_is_ours(
    provider: KubernetesProvider, real_kube: Endpoint, namespace: str
) -> None:
    """A Service of the same name that alphaswarm did not create stays; a service
    with ports loses its own Service."""
    admin = real_kube.admin()
    mine, theirs = unique_name(), unique_name()
    await provider.start(
        DeploymentSpec(mine, namespace, image=IMAGE, ports=(PortSpec(8080),)).validate()
    )
    admin.create(
        f"/api/v1/namespaces/{namespace}/services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": theirs},
            "spec": {"ports": [{"port": 80}]},
        },
    )
    await provider.start(make_spec(theirs, namespace))
    assert await provider.delete(mine, namespace=namespace)
    assert await provider.delete(theirs, namespace=namespace)
    assert services(admin, namespace) == [theirs]


async def test_a_delete_that_fails_half_way_is_finished_by_a_retry(
    proxied: KubernetesProvider, kube_proxy: KubeFaultProxy, real_kube: Endpoint, namespace: str
) -> None:
    """The Deployment goes last: a failure before it leaves the service listed (and
    status works), and deleting again removes everything."""
    service = unique_name()
    await proxied.start(make_spec(service, namespace))
    await proxied.apply_config(ConfigMapPatch(service, namespace, set={"A": "1"}))
    kube_proxy.faults.inject("kube:delete deployments", Kind.UNAVAILABLE)
    with pytest.raises(BackendUnavailableError):
        await proxied.delete(service, namespace=namespace)
    assert (await proxied.status(service, namespace=namespace)).service_id == service
    assert await proxied.delete(service, namespace=namespace) is True
    with pytest.raises(DeploymentNotFoundError):
        await proxied.status(service, namespace=namespace)
    admin = real_kube.admin()
    for _ in range(180):  # the garbage collector removes the ReplicaSet and pods
        if not held(admin, service, namespace):
            break
        await asyncio.sleep(0.5)
    assert held(admin, service, namespace) == []


async def test_deleting_a_foreign_deployment_is_not_found_and_touches_nothing(
    provider: KubernetesProvider, real_kube: Endpoint, namespace: str
) -> None:
    admin = real_kube.admin()
    seed(admin, namespace, 1, managed=False)
    with pytest.raises(DeploymentNotFoundError):
        await provider.delete("foreign-000", namespace=namespace)
    assert await provider.delete("foreign-000", namespace=namespace, allow_missing=True) is False
    assert admin.find(f"{APPS}/namespaces/{namespace}/deployments/foreign-000") is not None


async def test_watch_deployments_sees_other_namespaces_only_when_asked(
    provider: KubernetesProvider, real_kube: Endpoint, namespace: str
) -> None:
    admin = real_kube.admin()
    other = new_namespace(admin)
    try:
        seed(admin, other, 1, managed=True)
        watch = provider.watch_deployments(namespace=namespace)
        try:
            async with asyncio.timeout(30):
                snapshot = await _snapshot(watch)
        finally:
            await watch.aclose()
    finally:
        admin.delete(f"/api/v1/namespaces/{other}")
    assert all(e.status is None or e.status.namespace == namespace for e in snapshot)
