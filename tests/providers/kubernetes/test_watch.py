"""The watch is client-go's reflector: list, watch from the list's version, relist on 410.

Against the real API server. ``restart_apiserver`` gives what a long-running
cluster has: a Deployment untouched since before the watch cache window (the
new process's cache begins at the current revision). Request counts come from
the provider's transport (``requests_sent``).

Restarting the API server would break the other tests of a run that share its
control plane (tests/realkube/shared.py): this module's tests have one of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from alphaswarm_controller.providers.kubernetes import KubernetesProvider
from alphaswarm_core.providers.protocol import DeploymentStatus
from alphaswarm_core.testing import ready, unique_name, wait_for
from tests.realkube.cluster import Endpoint, KubeCluster
from tests.realkube.fixtures import make_spec, private_cluster

from .conftest import Sent, lists, watches


@pytest.fixture(scope="module")
def real_kube_cluster(request: pytest.FixtureRequest) -> Iterator[KubeCluster]:
    """This module's own control plane (its tests restart the API server)."""
    with private_cluster(request.config) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def real_kube(real_kube_cluster: KubeCluster) -> Endpoint:
    assert real_kube_cluster.endpoint is not None
    return real_kube_cluster.endpoint


async def _until(watch: object, predicate: object) -> DeploymentStatus:
    async for status in watch:  # type: ignore[attr-defined]
        if predicate(status):  # type: ignore[operator]
            return status  # type: ignore[no-any-return]
    raise AssertionError("the watch ended")


async def test_watch_of_a_deployment_older_than_the_watch_cache_is_rate_bounded(
    provider: KubernetesProvider,
    real_kube_cluster: KubeCluster,
    namespace: str,
    requests_sent: Sent,
) -> None:
    """Was: 518 watch requests in 2 s (the Deployment's own version, 410, again at once)."""
    service = unique_name()
    await provider.start(make_spec(service, namespace, replicas=1))
    await wait_for(provider, service, namespace, ready(1))
    # After a restart the API server's watch cache begins at the current revision:
    # the Deployment's resourceVersion is older than anything it can replay (410).
    real_kube_cluster.restart_apiserver()
    await provider.close()
    requests_sent.clear()

    watch = provider.watch(service, namespace=namespace, interval_seconds=0.2)
    try:
        async with asyncio.timeout(60):
            first = await anext(watch)
            assert first.desired_replicas == 1 and first.ready_replicas == 1
            # Nothing changes for 2 s: one list, one watch from the list's version.
            following = asyncio.ensure_future(anext(watch))
            done, _ = await asyncio.wait({following}, timeout=2.0)
            assert not done, f"a status without a change: {following.result()}"
            idle = list(requests_sent)
            await provider.scale(service, 2, namespace=namespace)
            status = await following
            if status.desired_replicas != 2:
                await _until(watch, lambda s: s.desired_replicas == 2)
    finally:
        await watch.aclose()
    assert len(watches(idle)) == 1, idle
    opened = watches(idle)[0]["query"]
    assert opened["allowWatchBookmarks"] is True
    listed = [r for r in lists(idle) if "/deployments" in r["path"]]
    assert len(listed) == 1 and listed[0]["query"]["fieldSelector"] == f"metadata.name={service}"
    # The list, the watch, and for the first status its pods and ReplicaSets (instances,
    # the revision its replicas run).
    assert len(idle) <= 4, f"{len(idle)} requests in 2 s of an unchanged Deployment: {idle}"


async def test_a_watch_across_an_api_server_restart_relists_once_and_goes_on(
    provider: KubernetesProvider,
    real_kube_cluster: KubeCluster,
    namespace: str,
    requests_sent: Sent,
) -> None:
    """The watch is open; the API server restarts. Its connection drops; the reconnect
    from the last version seen meets the new server's watch cache, which no longer has
    that version: a real 410 Gone, answered by one relist. Every step waits with
    backoff, so the outage costs a handful of requests, not hundreds."""
    service = unique_name()
    await provider.start(make_spec(service, namespace, replicas=1))
    await wait_for(provider, service, namespace, ready(1))
    watch = provider.watch(service, namespace=namespace)
    try:
        async with asyncio.timeout(120):
            await anext(watch)
            requests_sent.clear()
            # Other writes move the revision on (kwok's node lease does so every few
            # seconds too), so the watch's last version falls out of the new cache.
            await provider.start(make_spec(unique_name(), namespace))
            real_kube_cluster.restart_apiserver()
            await provider.scale(service, 2, namespace=namespace)
            await _until(watch, lambda s: s.desired_replicas == 2)
    finally:
        await watch.aclose()
    deployment_lists = [
        r
        for r in lists(requests_sent)
        if r["query"].get("fieldSelector") == f"metadata.name={service}"
    ]
    deployment_watches = [
        r for r in watches(requests_sent) if r["query"].get("fieldSelector", "").endswith(service)
    ]
    # While the server is down each reconnect fails and waits longer (0.5 s doubling).
    assert 1 <= len(deployment_watches) <= 10, deployment_watches
    assert 1 <= len(deployment_lists) <= 3, deployment_lists
