"""The provider contract against moto server (HTTP, real boto3 clients) plus a fake ECS scheduler.

See tests/fakes/moto_server.py for what the scheduler adds to moto and why.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from alphaswarm_core.providers.protocol import DeploymentSpec
from alphaswarm_core.testing import ProviderContract, SpecFactory, unique_name
from tests.fakes.moto_server import IMAGE


@pytest.fixture
def spec_factory() -> SpecFactory:
    def make(
        service_id: str,
        namespace: str,
        replicas: int = 1,
        env: Mapping[str, str] | None = None,
    ) -> DeploymentSpec:
        return DeploymentSpec(
            service_id=service_id,
            namespace=namespace,
            image=IMAGE,
            replicas=replicas,
            env=dict(env or {}),
        )

    return make


@pytest.fixture
def namespace() -> str:
    return unique_name("ns")


class TestAwsContract(ProviderContract):
    expected_capabilities = frozenset(
        {"start", "stop", "scale", "status", "list", "config", "metrics"}
    )
