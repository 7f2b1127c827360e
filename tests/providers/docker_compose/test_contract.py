"""The provider-agnostic contract, unchanged, against a real engine; and the registry."""

from __future__ import annotations

from alphaswarm_controller.providers.docker_compose import DockerComposeProvider
from alphaswarm_core.providers.registry import Registry
from alphaswarm_core.testing import ProviderContract


class TestDockerComposeContract(ProviderContract):
    """The provider-agnostic contract, unchanged, against the engine."""

    expected_capabilities = frozenset(
        {"start", "stop", "scale", "status", "list", "config", "metrics"}
    )


# -- registry -------------------------------------------------------------------------------


def test_registry_loads_the_provider_lazily() -> None:
    registry = Registry()
    assert registry.installed("docker_compose")
    assert registry.get("docker_compose") is DockerComposeProvider
    assert DockerComposeProvider.capabilities() == (
        "start",
        "stop",
        "scale",
        "status",
        "list",
        "config",
        "metrics",
    )
