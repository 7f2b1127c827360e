"""The kubernetes provider's tests run against the real control plane of tests/realkube.

``provider`` is the provider as the cloud providers build it for a managed cluster
(``from_connection`` with the HTTPS endpoint, its CA and a bearer token bound to
cluster-admin); ``namespace`` a fresh namespace per test; ``spec_factory`` specs kwok
runs; ``requests_sent`` records every request the provider's transport sends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from alphaswarm_controller.providers.kubernetes import KubernetesProvider, transport
from alphaswarm_core.testing import SpecFactory
from tests.realkube.cluster import Endpoint
from tests.realkube.fixtures import connect_real, make_spec


@pytest.fixture
async def provider(real_kube: Endpoint) -> AsyncIterator[KubernetesProvider]:
    provider = connect_real(real_kube)
    await provider.open()
    yield provider
    await provider.close()


@pytest.fixture
def namespace(real_kube_namespace: str) -> str:
    return real_kube_namespace


@pytest.fixture
def spec_factory() -> SpecFactory:
    return make_spec


Sent = list[dict[str, Any]]


@pytest.fixture
def requests_sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sent]:
    """Every request the provider's transport sends: method, path, query."""
    sent: Sent = []
    original = transport.Transport._send

    def counting(self: transport.Transport, method: str, path: str, **kwargs: Any) -> Any:
        sent.append({"method": method, "path": path, "query": dict(kwargs.get("query") or {})})
        return original(self, method, path, **kwargs)

    monkeypatch.setattr(transport.Transport, "_send", counting)
    yield sent


def watches(sent: Sent) -> Sent:
    return [r for r in sent if r["query"].get("watch")]


def lists(sent: Sent) -> Sent:
    return [r for r in sent if r["method"] == "GET" and not r["query"].get("watch")]
