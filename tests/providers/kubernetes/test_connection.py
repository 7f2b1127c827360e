"""The one hook for subclasses that learn their cluster lazily: ``_discover_connection``."""

from __future__ import annotations

import asyncio

import pytest

from alphaswarm_controller.providers.kubernetes import ClusterConnection, KubernetesProvider
from alphaswarm_core.providers.protocol import BackendUnavailableError, DeploymentNotFoundError
from tests.realkube.cluster import Endpoint


class Discovering(KubernetesProvider):
    """Finds the tests' API server on first use, failing the first ``failures`` times."""

    def __init__(
        self, endpoint: Endpoint, failures: int = 0, connection: ClusterConnection | None = None
    ) -> None:
        super().__init__(env={}, connection=connection)
        self.endpoint = endpoint
        self.failures = failures
        self.calls = 0

    async def _discover_connection(self) -> ClusterConnection:
        self.calls += 1
        await asyncio.sleep(0.05)  # a lookup that takes time: concurrent calls queue behind it
        if self.failures:
            self.failures -= 1
            raise BackendUnavailableError("the cloud API is down")
        return ClusterConnection(
            endpoint=self.endpoint.url, ca_data=self.endpoint.ca_pem, token=self.endpoint.token
        )


async def test_the_hook_runs_once_for_concurrent_first_calls(real_kube: Endpoint) -> None:
    provider = Discovering(real_kube)
    try:
        results = await asyncio.gather(
            *(provider.status(f"missing-{i}", namespace="default") for i in range(5)),
            return_exceptions=True,
        )
        assert all(isinstance(r, DeploymentNotFoundError) for r in results), results
        assert provider.calls == 1
        assert provider.connection is not None and provider.connection.endpoint == real_kube.url
    finally:
        await provider.close()


async def test_a_failed_discovery_reaches_the_caller_and_the_next_call_asks_again(
    real_kube: Endpoint,
) -> None:
    provider = Discovering(real_kube, failures=1)
    try:
        with pytest.raises(BackendUnavailableError, match="cloud API is down"):
            await provider.health()
        assert (await provider.health()).healthy
        assert provider.calls == 2
    finally:
        await provider.close()


async def test_a_given_connection_is_never_discovered(real_kube: Endpoint) -> None:
    given = ClusterConnection(
        endpoint=real_kube.url, ca_data=real_kube.ca_pem, token=real_kube.token
    )
    provider = Discovering(real_kube, connection=given)
    try:
        assert (await provider.health()).healthy
        assert provider.calls == 0 and provider.connection is given
    finally:
        await provider.close()
