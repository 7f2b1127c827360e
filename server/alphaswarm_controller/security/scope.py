"""What a ProviderService request touches: provider, namespace, service (for auth and audit)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from alphaswarm_core.providers.models import DEFAULT_NAMESPACE


@dataclass(frozen=True, slots=True)
class Scope:
    provider: str
    namespace: str
    """Empty only for a ListDeployments across every namespace."""
    service_id: str


def request_scope(request: Any, default_provider: str) -> Scope:
    inner = getattr(request, "spec", None) or getattr(request, "patch", None)
    source = inner if inner is not None and inner.ByteSize() else request
    namespace = getattr(source, "namespace", "")
    is_list = type(request).__name__ == "ListDeploymentsRequest"
    return Scope(
        provider=getattr(request, "provider", "") or default_provider,
        namespace=namespace or ("" if is_list else DEFAULT_NAMESPACE),
        service_id=getattr(source, "service_id", ""),
    )
