"""The provider contract against a real kube-apiserver (tests/realkube).

Real Kubernetes v1.37 components: the provider connects as the cloud providers
connect to a managed cluster (``from_connection`` with the HTTPS endpoint, its
CA and a bearer token), Deployments become ReplicaSets and pods through the
real controllers and scheduler, kwok reports the pods Ready, and metrics come
from metrics-server through the aggregation layer. One test differs, and says
why: real metrics appear seconds after the pods.
"""

from __future__ import annotations

import asyncio

import pytest

from alphaswarm_core.providers.protocol import InfrastructureProvider, MetricSample
from alphaswarm_core.testing import ProviderContract, SpecFactory, ready, unique_name, wait_for

#: Two metrics-server scrapes (10 s apart) after the pods started, with room for a
#: loaded machine.
METRICS_DELAY = 90
CAPABILITIES = frozenset(
    {"start", "stop", "scale", "status", "list", "config", "metrics", "native_watch"}
)


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


class TestKubernetesContract(ProviderContract):
    expected_capabilities = CAPABILITIES

    @pytest.mark.usefixtures("real_kube_metrics")
    async def test_metrics_stream_until_cancelled(
        self, provider: InfrastructureProvider, spec_factory: SpecFactory, namespace: str
    ) -> None:
        await read_real_metrics(provider, spec_factory, namespace)
