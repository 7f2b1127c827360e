"""metrics.k8s.io PodMetrics -> one MetricSample (summed over the service's pods)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from alphaswarm_core.providers.models import MetricSample

from .transport import JsonObj

_QUANTITY = re.compile(r"([0-9.]+)([a-zA-Z]*)")
_SUFFIX = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(1000),
    "M": Decimal(1000**2),
    "G": Decimal(1000**3),
    "T": Decimal(1000**4),
    "Ki": Decimal(1024),
    "Mi": Decimal(1024**2),
    "Gi": Decimal(1024**3),
    "Ti": Decimal(1024**4),
}


def quantity(value: str) -> Decimal:
    """A Kubernetes resource quantity (``250m``, ``25000000n``, ``12Mi``) as a number."""
    match = _QUANTITY.fullmatch(value.strip())
    if match is None or match.group(2) not in _SUFFIX:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return Decimal(match.group(1)) * _SUFFIX[match.group(2)]


def sample_from_pod_metrics(
    items: Sequence[JsonObj], *, service_id: str, namespace: str, alias: str, now: datetime
) -> MetricSample:
    cores = Decimal(0)
    memory = Decimal(0)
    for item in items:
        for container in item.get("containers") or []:
            usage = container.get("usage") or {}
            cores += quantity(str(usage.get("cpu", "0")))
            memory += quantity(str(usage.get("memory", "0")))
    return MetricSample(
        service_id=service_id,
        namespace=namespace,
        provider=alias,
        timestamp=now,
        replicas=len(items),
        cpu_percent=float(cores * 100),
        memory_bytes=int(memory),
        extra={"cpu_millicores": float(cores * 1000)},
    )
