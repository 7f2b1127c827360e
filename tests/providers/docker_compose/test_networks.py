"""Names are matched exactly, and only what the provider created is ever removed.

The engine's name filters are unanchored (``web_default`` finds ``myweb_default``);
label filters are exact. Each test puts a project whose name contains the test's
namespace next to it (``my<namespace>``) and checks the two never touch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import docker
import docker.errors
import pytest
import requests

from alphaswarm_controller.providers.docker_compose import DockerComposeProvider, compose, networks
from alphaswarm_controller.providers.docker_compose.engine import DeadlineAPIClient
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


# -- endpoints of removed containers ---------------------------------------------------------


class LingeringEndpoint(DeadlineAPIClient):
    """The real engine, except that one network also lists the endpoint of a container
    that no longer exists, as moby does:

    - for a moment after the container's removal, until the exit handler has released
      its endpoint (``released_after`` inspects later here; a loaded run met it);
    - for good when the engine lost track of it (``released_after=None``; moby#33156,
      #17217), until ``docker network disconnect -f <network> <name>``, which takes the
      endpoint's name (moby#33156: the ID does not work).

    While listed, removing the network is refused with 403 "has active endpoints" (moby
    20.10 ``libnetwork/network.go``, ``ActiveEndpointsError``, a Forbidden error).
    """

    def __init__(self, network_id: str, gone: dict[str, Any], released_after: int | None) -> None:
        super().__init__(base_url=os.environ["DOCKER_HOST"], version="auto", timeout=60)
        self.network_id = network_id
        self.gone = gone
        self.released_after = released_after
        self.inspects = 0
        self.container_inspects: list[str] = []
        self.forced: list[str] = []

    def _listed(self) -> bool:
        if self.forced:
            return False
        return self.released_after is None or self.inspects <= self.released_after

    def inspect_network(self, net_id: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        detail: dict[str, Any] = super().inspect_network(net_id, *args, **kwargs)
        if detail["Id"] == self.network_id:
            self.inspects += 1
            if self._listed():
                detail["Containers"] = {**(detail.get("Containers") or {}), **self.gone}
        return detail

    def inspect_container(self, container: Any) -> dict[str, Any]:
        self.container_inspects.append(str(container))
        detail: dict[str, Any] = super().inspect_container(container)
        return detail

    def remove_network(self, net_id: Any) -> None:
        if net_id == self.network_id and self._listed():
            response = requests.Response()
            response.status_code = 403
            raise docker.errors.APIError(
                f"error while removing network: network {net_id} has active endpoints",
                response=response,
            )
        super().remove_network(net_id)

    def disconnect_container_from_network(
        self, container: Any, net_id: str, force: bool = False
    ) -> None:
        name = next(iter(self.gone.values()))["Name"]
        if net_id == self.network_id and force and container == name and self._listed():
            self.forced.append(container)
            return
        super().disconnect_container_from_network(container, net_id, force=force)


@pytest.fixture
def removed_replica(
    docker_api: docker.APIClient, busybox_image: str, namespace: str
) -> dict[str, Any]:
    """The network entry of a replica that was on the project network and is gone: its
    real (now unknown) container ID, and its name."""
    name = f"{namespace}-web-1"
    created = docker_api.create_container(busybox_image, ["/bin/busybox", "true"], name=name)
    docker_api.remove_container(created["Id"], force=True)
    return {created["Id"]: {"Name": name, "EndpointID": "e" * 64}}


@pytest.mark.parametrize("released_after", [3, None], ids=["released-late", "stale"])
async def test_an_endpoint_of_a_removed_replica_does_not_keep_the_network(
    provider: DockerComposeProvider,
    namespace: str,
    docker_api: docker.APIClient,
    removed_replica: dict[str, Any],
    released_after: int | None,
) -> None:
    # Before: the first inspect still listed the endpoint, so the delete kept the
    # network for good ("the backend still holds network <ns>_default").
    network_id, created = networks.ensure(provider._client(), namespace)
    assert created
    engine = LingeringEndpoint(network_id, removed_replica, released_after)
    try:
        removed = await provider._call(
            "removing", networks.remove_if_ours_and_unused, engine, namespace, network_id
        )
    finally:
        engine.close()
    assert removed is True
    assert compose.network_name(namespace) not in _network_names(docker_api)
    name = next(iter(removed_replica.values()))["Name"]
    assert engine.forced == ([] if released_after is not None else [name])
    if released_after is not None:
        assert engine.inspects > released_after, "it waited for the release"
    # A container ID found gone is asked about once, however many polls list it; the
    # stale endpoint's name is asked again before its forced disconnect (a name is reused).
    [gone_id] = removed_replica
    assert engine.container_inspects.count(gone_id) == 1, engine.container_inspects


async def test_a_network_a_container_is_attached_to_stays(
    provider: DockerComposeProvider,
    namespace: str,
    docker_api: docker.APIClient,
    busybox_image: str,
) -> None:
    # Anyone's container counts, not only a replica: the network is in use.
    network_id, _ = networks.ensure(provider._client(), namespace)
    other = docker_api.create_container(
        busybox_image,
        ["/bin/busybox", "sleep", "60"],
        name=f"{namespace}-visitor",
        labels={TEST_LABEL: namespace},
        host_config=docker_api.create_host_config(network_mode=compose.network_name(namespace)),
    )
    docker_api.start(other["Id"])
    try:
        removed = await provider._call(
            "removing",
            networks.remove_if_ours_and_unused,
            provider._client(),
            namespace,
            network_id,
        )
        assert removed is False
        attached = docker_api.inspect_network(network_id)["Containers"]
        assert list(attached) == [other["Id"]]
    finally:
        docker_api.remove_container(other["Id"], force=True)
