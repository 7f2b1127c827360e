"""What the contract needs against the real control plane, for every Kubernetes-backed provider.

``RealKubeFixtures`` gives a ``ProviderContract`` subclass the two fixtures of the
optional capabilities: ``leftovers`` reads what the API server still holds of a
service with the admin's raw API (never through the provider), and
``log_spec_factory`` is the ordinary spec factory, because every pod on the kwok
node writes a line every half second (podlogs.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from urllib.parse import quote

import pytest

from alphaswarm_core.providers.protocol import DeploymentSpec, InfrastructureProvider, MetricSample
from alphaswarm_core.testing import SpecFactory, ready, unique_name, wait_for
from alphaswarm_core.testing.contract import Leftovers

from .api import AdminApi
from .cluster import Endpoint
from .failures import UNPULLABLE_IMAGE
from .fixtures import make_spec

#: What KubernetesProvider and its EKS, AKS and GKE subclasses implement.
KUBERNETES_CAPABILITIES = frozenset(
    {
        "start",
        "stop",
        "scale",
        "status",
        "list",
        "config",
        "metrics",
        "native_watch",
        "logs",
        "delete",
        "revisions",
    }
)

#: Everything the kubernetes provider creates for a service, by name...
NAMED = (
    ("Deployment", "/apis/apps/v1/namespaces/{ns}/deployments/{id}"),
    ("Service", "/api/v1/namespaces/{ns}/services/{id}"),
    ("ConfigMap", "/api/v1/namespaces/{ns}/configmaps/{id}-config"),
)
#: ...and what the controllers create from it, by the service's label.
LABELLED = (
    ("ReplicaSet", "/apis/apps/v1/namespaces/{ns}/replicasets"),
    ("ConfigMap", "/api/v1/namespaces/{ns}/configmaps"),  # the config of each revision
    ("Pod", "/api/v1/namespaces/{ns}/pods"),
)


def held(admin: AdminApi, service_id: str, namespace: str) -> list[str]:
    """``Kind/name`` of every object of ``service_id`` the API server still holds."""
    found = [
        f"{kind}/{service_id}"
        for kind, path in NAMED
        if admin.find(path.format(ns=namespace, id=service_id)) is not None
    ]
    selector = quote(f"alphaswarm.dev/service={service_id}")
    for kind, path in LABELLED:
        items = admin.get(f"{path.format(ns=namespace)}?labelSelector={selector}")["items"]
        found += [f"{kind}/{item['metadata']['name']}" for item in items]
    return found


class RealKubeFixtures:
    """Mix in before ``ProviderContract``: the fixtures of ``delete``, ``logs`` and
    ``revisions`` (an image the kwok node reports ImagePullBackOff for: failures.py)."""

    @pytest.fixture
    def leftovers(self, real_kube: Endpoint) -> Leftovers:
        admin = real_kube.admin()

        async def leftovers(service_id: str, namespace: str) -> list[str]:
            return await asyncio.to_thread(held, admin, service_id, namespace)

        return leftovers

    @pytest.fixture
    def log_spec_factory(self) -> SpecFactory:
        return make_spec

    @pytest.fixture
    def failing_spec_factory(self) -> SpecFactory:
        return make_failing_spec


def make_failing_spec(
    service_id: str,
    namespace: str,
    replicas: int = 1,
    env: Mapping[str, str] | None = None,
) -> DeploymentSpec:
    """A spec whose pods stay in ImagePullBackOff on the kwok node."""
    return replace(make_spec(service_id, namespace, replicas, env), image=UNPULLABLE_IMAGE)


#: Two metrics-server scrapes (10 s apart) after the pods started, with room for a
#: loaded machine.
METRICS_DELAY = 90


async def read_real_metrics(
    provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
) -> None:
    """The contract's metrics test, waiting as long as real metrics take to appear.

    metrics-server reports a new pod only after two scrapes of its node, at
    least 10 s apart (its minimum resolution), so the stream is read until
    both replicas are in a sample (bounded) instead of for exactly three
    samples. kwok's default usage is 1m CPU and 1Mi memory per pod.
    """
    service = unique_name()
    await provider.start(spec_factory(service, namespace, replicas=2))
    await wait_for(provider, service, namespace, ready(2))
    stream = provider.stream_metrics(service, namespace=namespace, interval_seconds=1.0)
    samples: list[MetricSample] = []
    try:
        async with asyncio.timeout(METRICS_DELAY):
            async for sample in stream:
                samples.append(sample)
                if sample.ok and sample.replicas == 2:
                    break
    finally:
        await stream.aclose()
    assert {s.service_id for s in samples} == {service}
    assert all(s.provider == provider.provider_alias for s in samples)
    assert all(s.ok for s in samples), [s.error for s in samples]
    last = samples[-1]
    assert last.memory_bytes == 2 * 1024 * 1024
    assert 1.0 <= last.extra["cpu_millicores"] <= 3.0, last
    assert samples[0].timestamp <= last.timestamp
