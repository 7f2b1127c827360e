"""Images: pulls end by the call's deadline, and a name never resolves to an ID prefix."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace

import docker
import pytest

from alphaswarm_controller.providers.docker_compose import DockerComposeProvider
from alphaswarm_core.providers.protocol import (
    BackendTimeoutError,
    BackendUnavailableError,
    DeploymentNotFoundError,
    ResourceNotFoundError,
)
from alphaswarm_core.testing import SpecFactory, ready, wait_for
from tests.fakes.docker_registry import RegistryFake
from tests.providers.docker_compose.support import NOTHING, call_deadline, project_objects

#: How long a test waits for a call that must end by a deadline of a few seconds: far
#: above that deadline (no tight timing), far below "never" (the bug being tested).
BOUND = 90.0


@pytest.fixture
def registry() -> Iterator[RegistryFake]:
    with RegistryFake("stall") as stalling:
        yield stalling


async def test_a_pull_ends_at_the_deadline_and_leaves_nothing(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    registry: RegistryFake,
    docker_api: docker.APIClient,
) -> None:
    # The registry never serves the manifest, so only the deadline can end the pull.
    # Before the fix the SDK's pull had timeout=None and this call never returned.
    spec = replace(spec_factory("slow", namespace, replicas=2), image=registry.image("slow/app"))
    with call_deadline(4.0), pytest.raises(BackendTimeoutError) as caught:
        await asyncio.wait_for(provider.start(spec), BOUND)
    assert (caught.value.code, caught.value.reason) == ("DEADLINE_EXCEEDED", "BACKEND_TIMEOUT")
    assert caught.value.metadata["cause"] == "IMAGE_PULL_TIMEOUT"
    assert registry.stalled >= 1, "the engine really tried to pull from the registry"
    with pytest.raises(DeploymentNotFoundError):
        await provider.status("slow", namespace=namespace)
    assert project_objects(docker_api, namespace) == NOTHING


async def test_a_pull_during_scale_ends_at_the_deadline(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    registry: RegistryFake,
    docker_api: docker.APIClient,
) -> None:
    # A stopped service whose image must be pulled on scale-up (policy: always).
    spec = replace(
        spec_factory("slow", namespace, replicas=0),
        image=registry.image("slow/app"),
        provider_options={"pull": "always"},
    )
    await provider.start(spec)
    with call_deadline(4.0), pytest.raises(BackendTimeoutError):
        await asyncio.wait_for(provider.scale("slow", 2, namespace=namespace), BOUND)
    status = await provider.status("slow", namespace=namespace)
    assert status.desired_replicas == 0, "no replica was created"
    assert project_objects(docker_api, namespace)["containers"] == []


async def test_an_image_id_prefix_is_not_an_image_name(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    busybox_image: str,
    docker_api: docker.APIClient,
) -> None:
    # The engine resolves an unknown name that is a hex prefix of an image ID to that
    # image: "image: <12 hex digits>" ran the busybox image instead of failing.
    image_id = str(docker_api.inspect_image(busybox_image)["Id"])  # type: ignore[no-untyped-call]
    prefix = image_id.removeprefix("sha256:")[:12]
    spec = replace(
        spec_factory("prefix", namespace), image=prefix, provider_options={"pull": "never"}
    )
    with pytest.raises(ResourceNotFoundError) as caught:
        await provider.start(spec)
    assert caught.value.metadata["cause"] == "IMAGE_NOT_FOUND"
    assert project_objects(docker_api, namespace) == NOTHING
    # The same image by its name, or by its full ID, is found.
    by_id = replace(spec, service_id="by-id", image=image_id)
    await provider.start(by_id)
    await wait_for(provider, "by-id", namespace, ready(1))


async def test_a_throttling_registry_is_unavailable_not_missing(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    docker_api: docker.APIClient,
) -> None:
    # Over Docker Hub's pull rate limit the image exists: retry later (UNAVAILABLE),
    # not "no such image" (NOT_FOUND).
    with RegistryFake("throttle") as throttling:
        spec = replace(spec_factory("busy", namespace), image=throttling.image("team/app"))
        with pytest.raises(BackendUnavailableError) as caught:
            await provider.start(spec)
        assert throttling.throttled >= 1
    assert (caught.value.code, caught.value.reason) == ("UNAVAILABLE", "BACKEND_THROTTLED")
    assert caught.value.metadata["cause"] == "REGISTRY_THROTTLED"
    assert project_objects(docker_api, namespace) == NOTHING
