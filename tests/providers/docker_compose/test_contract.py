"""The provider-agnostic contract, unchanged, against a real engine; and the registry."""

from __future__ import annotations

import asyncio

import docker
import pytest

from alphaswarm_controller.providers.docker_compose import DockerComposeProvider
from alphaswarm_core.providers.registry import Registry
from alphaswarm_core.testing import Leftovers, ProviderContract, SpecFactory, spec_factory_for
from tests.providers.docker_compose.support import log_spec_factory_for

#: Compose's labels, and the definition volumes' (written out here rather than taken
#: from the provider, so that a provider that renamed them would not hide its leftovers).
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
DEFINITION_PROJECT = "dev.alphaswarm.project"
DEFINITION_SERVICE = "dev.alphaswarm.service"


def engine_leftovers(api: docker.APIClient, service_id: str, namespace: str) -> list[str]:
    """What the engine itself holds of a service: its containers (by Compose's labels and
    by name), its definition volumes (by label and by name), and the project network
    when no other service of the project is left to use it."""
    service_labels = [f"{PROJECT_LABEL}={namespace}", f"{SERVICE_LABEL}={service_id}"]
    found = {
        f"container {c['Names'][0].lstrip('/')}"
        for c in api.containers(all=True, filters={"label": service_labels})
    }
    found |= {
        f"container {name.lstrip('/')}"
        for c in api.containers(all=True)
        for name in c["Names"]
        if name.lstrip("/").startswith(f"{namespace}-{service_id}-")
    }
    volumes = api.volumes().get("Volumes") or []
    found |= {
        f"volume {v['Name']}"
        for v in volumes
        if v["Name"].startswith(f"alphaswarm.{namespace}.{service_id}.")
        or (
            (v.get("Labels") or {}).get(DEFINITION_PROJECT) == namespace
            and (v.get("Labels") or {}).get(DEFINITION_SERVICE) == service_id
        )
    }
    others = [
        c
        for c in api.containers(all=True, filters={"label": f"{PROJECT_LABEL}={namespace}"})
        if c["Labels"].get(SERVICE_LABEL) != service_id
    ] + [
        v
        for v in volumes
        if (v.get("Labels") or {}).get(DEFINITION_PROJECT) == namespace
        and (v.get("Labels") or {}).get(DEFINITION_SERVICE) != service_id
    ]
    if not others:
        found |= {
            f"network {n['Name']}" for n in api.networks() if n["Name"] == f"{namespace}_default"
        }
    return sorted(found)


class TestDockerComposeContract(ProviderContract):
    """The provider-agnostic contract, unchanged, against the engine."""

    expected_capabilities = frozenset(
        {"start", "stop", "scale", "status", "list", "config", "metrics", "logs", "delete"}
        | {"revisions"}
    )

    @pytest.fixture
    def failing_spec_factory(self, busybox_image: str) -> SpecFactory:
        # A command that exits at once: the engine restarts it (restart policy
        # unless-stopped) until it has exited CRASH_LOOP_EXITS times in a row.
        return spec_factory_for(image=busybox_image, command=("/bin/sh", "-c", "exit 3"))

    @pytest.fixture
    def leftovers(self, docker_api: docker.APIClient) -> Leftovers:
        async def still(service_id: str, namespace: str) -> list[str]:
            return await asyncio.to_thread(engine_leftovers, docker_api, service_id, namespace)

        return still

    @pytest.fixture
    def log_spec_factory(self, busybox_image: str) -> SpecFactory:
        return log_spec_factory_for(busybox_image)


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
        "logs",
        "delete",
        "revisions",
    )
