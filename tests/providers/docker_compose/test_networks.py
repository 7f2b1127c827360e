"""Names are matched exactly, and only what the provider created is ever removed.

The engine's name filters are unanchored (``web_default`` finds ``myweb_default``);
label filters are exact. Each test puts a project whose name contains the test's
namespace next to it (``my<namespace>``) and checks the two never touch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import docker
import pytest

from alphaswarm_controller.providers.docker_compose import DockerComposeProvider, compose, networks
from alphaswarm_core.providers.protocol import (
    BackendRejectedError,
    DeploymentNotFoundError,
    PortSpec,
)
from alphaswarm_core.testing import SpecFactory, ready, wait_for
from tests.providers.docker_compose.support import (
    TEST_LABEL,
    listening_port,
    project_objects,
    remove_project,
)


@pytest.fixture
def neighbour(docker_api: docker.APIClient, namespace: str) -> Iterator[str]:
    """A Compose project whose network name ends with this namespace's network name."""
    project = f"my{namespace}"
    docker_api.create_network(
        compose.network_name(project),
        driver="bridge",
        labels={
            compose.PROJECT: project,
            compose.NETWORK: "default",
            compose.VERSION: compose.COMPOSE_VERSION,
            TEST_LABEL: project,
        },
    )
    yield project
    remove_project(docker_api, project)


def _network_names(api: docker.APIClient) -> set[str]:
    return {network["Name"] for network in api.networks()}


async def test_a_network_whose_name_contains_ours_is_not_ours(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    neighbour: str,
    docker_api: docker.APIClient,
) -> None:
    # Before: the name filter returned my<ns>_default, the provider took <ns>_default
    # for existing, and every replica create failed with "network ... not found".
    await provider.start(spec_factory("web", namespace, replicas=1))
    await wait_for(provider, "web", namespace, ready(1))
    ours = docker_api.inspect_network(compose.network_name(namespace))
    assert ours["Labels"][compose.PROJECT] == namespace
    assert [c["Name"] for c in ours["Containers"].values()] == [f"{namespace}-web-1"]
    theirs = docker_api.inspect_network(compose.network_name(neighbour))
    assert theirs["Containers"] == {}, "no replica joined the neighbour's network"


async def test_a_failed_start_removes_only_the_network_it_created(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    neighbour: str,
    docker_api: docker.APIClient,
) -> None:
    with listening_port() as port:
        spec = replace(spec_factory("web", namespace), ports=(PortSpec(8080, port),))
        with pytest.raises(BackendRejectedError):
            await provider.start(spec)
    names = _network_names(docker_api)
    assert compose.network_name(namespace) not in names, "the network it created is gone"
    assert compose.network_name(neighbour) in names, "the neighbour's network stays"


async def test_never_removes_a_network_it_did_not_create(
    provider: DockerComposeProvider, namespace: str, neighbour: str, docker_api: docker.APIClient
) -> None:
    theirs = docker_api.inspect_network(compose.network_name(neighbour))
    # Even asked to, by id and with the right project: it lacks our managed-by label.
    removed = await provider._call(
        "removing", networks.remove_if_ours_and_unused, provider._client(), neighbour, theirs["Id"]
    )
    assert removed is False
    assert compose.network_name(neighbour) in _network_names(docker_api)


async def test_a_same_named_network_of_another_project_is_refused(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    docker_api: docker.APIClient,
) -> None:
    docker_api.create_network(
        compose.network_name(namespace), driver="bridge", labels={TEST_LABEL: namespace}
    )
    with pytest.raises(BackendRejectedError) as caught:
        await provider.start(spec_factory("web", namespace))
    assert caught.value.metadata["cause"] == "NETWORK_NOT_OURS"
    assert compose.network_name(namespace) in caught.value.message
    with pytest.raises(DeploymentNotFoundError):
        await provider.status("web", namespace=namespace)
    assert project_objects(docker_api, namespace)["containers"] == []
    assert compose.network_name(namespace) in _network_names(docker_api), "left as it was"


async def test_every_list_filter_is_exact(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    neighbour: str,
    docker_api: docker.APIClient,
) -> None:
    # Containers, definition volumes and named volumes are found by label, which the
    # engine matches exactly; a project named my<ns> must stay invisible from <ns>.
    for project in (namespace, neighbour):
        spec = replace(spec_factory("web", project), provider_options={"volumes": "data:/data"})
        await provider.start(spec)
    listed = await provider.list_deployments(namespace=namespace)
    assert [(s.namespace, s.service_id) for s in listed] == [(namespace, "web")]
    await provider.stop("web", namespace=namespace)
    theirs = await provider.status("web", namespace=neighbour)
    assert theirs.desired_replicas == 1, "stopping <ns>/web left my<ns>/web alone"
    assert project_objects(docker_api, neighbour)["containers"] == [f"{neighbour}-web-1"]
    assert f"{neighbour}_data" in project_objects(docker_api, neighbour)["volumes"]
