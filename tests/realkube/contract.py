"""What the contract needs against the real control plane, for every Kubernetes-backed provider."""

from __future__ import annotations

import asyncio

from alphaswarm_core.providers.protocol import InfrastructureProvider, MetricSample
from alphaswarm_core.testing import SpecFactory, ready, unique_name, wait_for

#: What KubernetesProvider and its EKS, AKS and GKE subclasses implement.
KUBERNETES_CAPABILITIES = frozenset(
    {"start", "stop", "scale", "status", "list", "config", "metrics", "native_watch"}
)
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
