"""Named fault-injection cases: what the real API server does not do on demand.

The provider talks to the real kube-apiserver through tests/fakes/kube_proxy.py,
which forwards every request and, where a test says so, answers instead with the
fault a real server (or the network in front of it) produces: 429 with
Retry-After, 5xx, 410 Gone opening a watch or as an ERROR event, a non-410 ERROR
event, a cut watch, a slow answer, a missing API group. Request counts are the
proxy's. Everything else about the provider's API behaviour is tested against
the real server directly (test_provider.py and the contract).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import pytest

from alphaswarm_controller.providers.kubernetes import KubernetesProvider
from alphaswarm_core.providers.protocol import (
    BackendConflictError,
    BackendUnavailableError,
    CapabilityUnsupported,
    ConfigMapPatch,
    ConfigVersionConflict,
    DeploymentStatus,
)
from alphaswarm_core.testing import ready, unique_name, wait_for
from tests.fakes.faults import Kind
from tests.fakes.kube_proxy import KubeFaultProxy
from tests.realkube.cluster import Endpoint
from tests.realkube.fixtures import connect_url, make_spec

WATCH = "kube:watch deployments"
LIST = "kube:list deployments"


@pytest.fixture
async def proxied(
    real_kube: Endpoint, kube_proxy: KubeFaultProxy
) -> AsyncIterator[KubernetesProvider]:
    provider = connect_url(real_kube, kube_proxy.url)
    await provider.open()
    yield provider
    await provider.close()


async def _until(
    watch: AsyncGenerator[DeploymentStatus, None], predicate: Callable[[DeploymentStatus], bool]
) -> DeploymentStatus:
    async for status in watch:
        if predicate(status):
            return status
    raise AssertionError("the watch ended")


async def _running(provider: KubernetesProvider, namespace: str, replicas: int = 1) -> str:
    service = unique_name()
    await provider.start(make_spec(service, namespace, replicas=replicas))
    await wait_for(provider, service, namespace, ready(replicas))
    return service


def _of(proxy: KubeFaultProxy, operation: str, service: str) -> int:
    """Requests of ``operation`` about ``service`` (its field selector)."""
    return sum(
        1
        for r in proxy.sent(operation)
        if r.query.get("fieldSelector", "") == f"metadata.name={service}"
    )


# -- the watch: reflector rules ------------------------------------------------------------


async def test_a_cut_watch_resumes_from_its_last_version_without_a_relist(
    proxied: KubernetesProvider, kube_proxy: KubeFaultProxy, namespace: str
) -> None:
    service = await _running(proxied, namespace)
    watch = proxied.watch(service, namespace=namespace)
    try:
        async with asyncio.timeout(60):
            await anext(watch)
            await proxied.scale(service, 2, namespace=namespace)
            await _until(watch, lambda s: s.desired_replicas == 2)
            first = [r.query for r in kube_proxy.sent(WATCH)]
            kube_proxy.drop_watches()
            await proxied.scale(service, 3, namespace=namespace)
            await _until(watch, lambda s: s.ready_replicas == 3)
    finally:
        await watch.aclose()
    opened = [r.query for r in kube_proxy.sent(WATCH)]
    assert len(first) == 1 and len(opened) == 2, opened
    assert opened[0]["allowWatchBookmarks"] == "true"
    assert int(opened[1]["resourceVersion"]) > int(opened[0]["resourceVersion"])
    assert _of(kube_proxy, LIST, service) == 1, "resuming does not list again"


@pytest.mark.parametrize("form", ["", "ERROR"], ids=["http-410", "error-event-410"])
async def test_410_gone_is_answered_by_one_relist(
    proxied: KubernetesProvider, kube_proxy: KubeFaultProxy, namespace: str, form: str
) -> None:
    service = await _running(proxied, namespace)
    kube_proxy.faults.inject(WATCH, Kind.GONE, code=form, times=1)
    watch = proxied.watch(service, namespace=namespace)
    try:
        async with asyncio.timeout(60):
            await anext(watch)
            pending = asyncio.ensure_future(anext(watch))  # the watch runs while awaited
            for _ in range(400):  # the 410, the relist, the new watch (bounded: 20 s)
                if _of(kube_proxy, WATCH, service) >= 2:
                    break
                await asyncio.sleep(0.05)
            await proxied.scale(service, 2, namespace=namespace)
            status = await pending
            if status.desired_replicas != 2:
                await _until(watch, lambda s: s.desired_replicas == 2)
    finally:
        await watch.aclose()
    assert _of(kube_proxy, WATCH, service) == 2, "the 410 watch and the one after the relist"
    assert _of(kube_proxy, LIST, service) == 2, "the first list and one relist"


async def test_a_non_410_error_event_is_retried_from_the_same_version(
    proxied: KubernetesProvider, kube_proxy: KubeFaultProxy, namespace: str
) -> None:
    """Was: any ERROR event but 410 ended the watch."""
    service = await _running(proxied, namespace)
    kube_proxy.faults.inject(WATCH, Kind.UNAVAILABLE, code="ERROR", times=2)
    watch = proxied.watch(service, namespace=namespace)
    try:
        async with asyncio.timeout(60):
            await anext(watch)
            await proxied.scale(service, 2, namespace=namespace)
            await _until(watch, lambda s: s.desired_replicas == 2)
    finally:
        await watch.aclose()
    versions = {r.query["resourceVersion"] for r in kube_proxy.sent(WATCH)}
    assert _of(kube_proxy, WATCH, service) == 3 and len(versions) == 1, versions
    assert _of(kube_proxy, LIST, service) == 1


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        (Kind.THROTTLED, ""),
        (Kind.UNAVAILABLE, ""),
        (Kind.UNAVAILABLE, "ERROR"),
        (Kind.GONE, ""),
        (Kind.GONE, "ERROR"),
    ],
    ids=["429", "503", "error-event-500", "http-410", "error-event-410"],
)
async def test_every_failure_mode_of_the_watch_is_rate_bounded(
    proxied: KubernetesProvider,
    kube_proxy: KubeFaultProxy,
    namespace: str,
    kind: Kind,
    code: str,
) -> None:
    """Every watch request fails for 4 s: the requests spread out (0.5 s doubling, with
    jitter; Retry-After honoured), then the watch recovers once the faults stop."""
    service = await _running(proxied, namespace)
    kube_proxy.faults.inject(WATCH, kind, code=code, times=0)  # until cleared
    watch = proxied.watch(service, namespace=namespace)
    try:
        async with asyncio.timeout(90):
            await anext(watch)
            pending = asyncio.ensure_future(anext(watch))
            done, _ = await asyncio.wait({pending}, timeout=4.0)
            assert not done
            watches, lists = _of(kube_proxy, WATCH, service), _of(kube_proxy, LIST, service)
            kube_proxy.faults.clear()
            await proxied.scale(service, 2, namespace=namespace)
            status = await pending
            if status.desired_replicas != 2:
                await _until(watch, lambda s: s.desired_replicas == 2)
    finally:
        await watch.aclose()
    # At most 5 attempts fit in 4 s (waits of 0.25-0.5, 0.5-1, 1-2, 2-4 s); a 410 costs a
    # list and a watch per attempt. Before the fix: hundreds.
    print(f"{kind} {code}: {watches} watch and {lists} list requests in 4 s of failures")
    assert 1 <= watches <= 5, watches
    assert lists <= (watches + 1 if kind is Kind.GONE else 1), lists


# -- answers the server gives under load ----------------------------------------------------


async def test_throttling_is_unavailable_with_the_servers_retry_after(
    proxied: KubernetesProvider, kube_proxy: KubeFaultProxy, namespace: str
) -> None:
    kube_proxy.faults.inject("kube:get deployments", Kind.THROTTLED, retry_after=7)
    with pytest.raises(BackendUnavailableError) as info:
        await proxied.status("anything", namespace=namespace)
    assert info.value.retry_after_seconds == 7
    assert info.value.code == "UNAVAILABLE"


async def test_a_slow_api_server_times_out_as_unavailable(
    real_kube: Endpoint, kube_proxy: KubeFaultProxy, namespace: str
) -> None:
    provider = connect_url(real_kube, kube_proxy.url, {"ALPHASWARM_KUBERNETES_TIMEOUT": "0.3"})
    kube_proxy.delay = 1.0
    try:
        with pytest.raises(BackendUnavailableError, match="timed out"):
            await provider.status("anything", namespace=namespace)
    finally:
        kube_proxy.delay = 0
        await provider.close()


async def test_a_conflict_on_scale_is_aborted(
    proxied: KubernetesProvider, kube_proxy: KubeFaultProxy, namespace: str
) -> None:
    service = unique_name()
    await proxied.start(make_spec(service, namespace))
    kube_proxy.faults.inject("kube:patch deployments/scale", Kind.CONFLICT)
    with pytest.raises(BackendConflictError) as info:
        await proxied.scale(service, 2, namespace=namespace)
    assert info.value.code == "ABORTED"


async def test_a_concurrent_config_writer_is_a_real_409_aborted_or_merged(
    proxied: KubernetesProvider, kube_proxy: KubeFaultProxy, real_kube: Endpoint, namespace: str
) -> None:
    """Another writer updates the ConfigMap between the provider's read and its PUT (the
    proxy lets it in just before forwarding the PUT): the real server answers 409."""
    service = unique_name()
    await proxied.start(make_spec(service, namespace))
    config = await proxied.get_config(service, namespace=namespace)
    admin = real_kube.admin()
    path = f"/api/v1/namespaces/{namespace}/configmaps/{service}-config"

    def other_writer(key: str) -> Callable[[], None]:
        def write() -> None:
            current = admin.get(path)
            current["data"] = {**(current.get("data") or {}), key: "theirs"}
            status, answer = admin.put(path, current)
            assert status == 200, answer

        return write

    kube_proxy.before("kube:update configmaps", other_writer("OTHER"))
    with pytest.raises(ConfigVersionConflict) as conflict:
        await proxied.apply_config(
            ConfigMapPatch(service, namespace, set={"A": "1"}, expected_version=config.version)
        )
    assert conflict.value.code == "ABORTED"
    assert admin.get(path)["data"] == {"OTHER": "theirs"}, "nothing of ours was written"

    # Without an expected version the provider reads again and merges.
    kube_proxy.before("kube:update configmaps", other_writer("THIRD"))
    merged = await proxied.apply_config(ConfigMapPatch(service, namespace, set={"A": "1"}))
    assert merged.data == {"OTHER": "theirs", "THIRD": "theirs", "A": "1"}
    updates = kube_proxy.sent("kube:update configmaps")
    assert len(updates) == 3, "one refused PUT per writer race, then the merged one"


# -- metrics --------------------------------------------------------------------------------


@pytest.mark.usefixtures("real_kube_metrics")
async def test_metrics_survive_a_transient_error(
    proxied: KubernetesProvider, kube_proxy: KubeFaultProxy, namespace: str
) -> None:
    service = await _running(proxied, namespace, replicas=1)
    stream = proxied.stream_metrics(service, namespace=namespace, interval_seconds=0.5)
    try:
        async with asyncio.timeout(120):
            async for sample in stream:  # until metrics-server has scraped the pod
                if sample.ok and sample.replicas == 1:
                    break
            kube_proxy.faults.inject("kube:list pods.metrics.k8s.io", Kind.UNAVAILABLE)
            failed = await anext(stream)
            recovered = await anext(stream)
    finally:
        await stream.aclose()
    assert not failed.ok and "unavailable" in failed.error
    assert recovered.ok and recovered.replicas == 1


async def test_without_the_metrics_api_the_stream_fails_once_with_unimplemented(
    proxied: KubernetesProvider, kube_proxy: KubeFaultProxy, namespace: str
) -> None:
    kube_proxy.hide("/apis/metrics.k8s.io")
    service = unique_name()
    await proxied.start(make_spec(service, namespace))
    stream = proxied.stream_metrics(service, namespace=namespace, interval_seconds=0.05)
    with pytest.raises(CapabilityUnsupported, match=r"metrics\.k8s\.io") as info:
        await anext(stream)
    assert info.value.code == "UNIMPLEMENTED"
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
