"""Bad input and the engine's real failures: clear errors, nothing left behind."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import docker
import pytest

from alphaswarm_controller.providers.docker_compose import DockerComposeProvider, compose
from alphaswarm_controller.providers.docker_compose.options import parse
from alphaswarm_core.providers.protocol import (
    BackendConflictError,
    BackendRejectedError,
    BackendUnavailableError,
    DeploymentNotFoundError,
    DeploymentSpec,
    DeploymentState,
    InfrastructureProviderError,
    InvalidSpecError,
    PortSpec,
    ResourceNotFoundError,
)
from alphaswarm_core.testing import SpecFactory
from tests.providers.docker_compose.support import (
    NOTHING,
    TEST_LABEL,
    EngineProxy,
    engine_socket_path,
    listening_port,
    project_objects,
    provider_env,
)

# -- bad input and faults -------------------------------------------------------------------


async def test_missing_image_is_not_found_and_leaves_nothing(
    provider: DockerComposeProvider,
    namespace: str,
    docker_api: docker.APIClient,
) -> None:
    spec = DeploymentSpec("ghost", namespace, image="alphaswarm-test/does-not-exist:1")
    with pytest.raises(ResourceNotFoundError) as caught:
        await provider.start(spec)
    assert (caught.value.code, caught.value.reason) == ("NOT_FOUND", "BACKEND_RESOURCE_NOT_FOUND")
    assert caught.value.metadata["cause"] == "IMAGE_NOT_FOUND"
    assert "alphaswarm-test/does-not-exist:1" in caught.value.message
    with pytest.raises(DeploymentNotFoundError):
        await provider.status("ghost", namespace=namespace)
    assert project_objects(docker_api, namespace) == NOTHING


async def test_port_already_taken_is_failed_precondition(
    provider: DockerComposeProvider, spec_factory: SpecFactory, namespace: str
) -> None:
    with listening_port() as port:
        spec = replace(spec_factory("web", namespace), ports=(PortSpec(8080, port),))
        with pytest.raises(BackendRejectedError) as caught:
            await provider.start(spec)
    assert caught.value.code == "FAILED_PRECONDITION"
    assert caught.value.reason == "BACKEND_REJECTED"
    assert caught.value.metadata["cause"] == "PORT_IN_USE"
    with pytest.raises(DeploymentNotFoundError):
        await provider.status("web", namespace=namespace)


async def test_failed_start_removes_the_replicas_it_created(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    docker_api: docker.APIClient,
    busybox_image: str,
) -> None:
    # A container that is not the service's holds replica 2's name: replica 1 is
    # created and started, replica 2 fails, and the start must take replica 1 back.
    squatter = docker_api.create_container(
        busybox_image, name=f"{namespace}-pair-2", labels={TEST_LABEL: namespace}
    )
    with pytest.raises(BackendRejectedError) as caught:
        await provider.start(spec_factory("pair", namespace, replicas=2))
    # Retrying cannot free a name someone else holds: FAILED_PRECONDITION, not ABORTED.
    assert (caught.value.code, caught.value.metadata["cause"]) == (
        "FAILED_PRECONDITION",
        "NAME_IN_USE",
    )
    assert f"{namespace}-pair-2" in caught.value.message
    assert project_objects(docker_api, namespace) == NOTHING
    with pytest.raises(DeploymentNotFoundError):
        await provider.status("pair", namespace=namespace)
    assert docker_api.inspect_container(squatter["Id"])["Name"] == f"/{namespace}-pair-2"


async def test_a_replica_created_concurrently_is_a_conflict(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    docker_api: docker.APIClient,
    busybox_image: str,
) -> None:
    # Another controller created replica 1 between our read and our create: retryable.
    await provider.start(spec_factory("race", namespace, replicas=0))
    docker_api.create_container(
        busybox_image,
        name=f"{namespace}-race-1",
        labels={compose.PROJECT: namespace, compose.SERVICE: "race", TEST_LABEL: namespace},
    )
    definition, refs = await provider._call("reading", provider._observe, namespace, "race")
    assert definition is not None and len(refs) == 1
    with pytest.raises(BackendConflictError) as caught:
        await provider._create_many(
            definition, parse({}), [1], await provider._target(definition, parse({}), None)
        )
    assert (caught.value.code, caught.value.metadata["cause"]) == ("ABORTED", "REPLICA_EXISTS")


async def test_unknown_option_is_invalid_and_creates_nothing(
    provider: DockerComposeProvider, spec_factory: SpecFactory, namespace: str
) -> None:
    spec = replace(spec_factory("opt", namespace), provider_options={"restrat": "always"})
    with pytest.raises(InvalidSpecError) as caught:
        await provider.start(spec)
    assert caught.value.violations[0].field == "spec.provider_options['restrat']"
    with pytest.raises(DeploymentNotFoundError):
        await provider.status("opt", namespace=namespace)


async def test_unreachable_engine_names_the_settings() -> None:
    provider = DockerComposeProvider(env={"DOCKER_HOST": "unix:///tmp/no-such-engine.sock"})
    with pytest.raises(BackendUnavailableError) as caught:
        await provider.health()
    assert caught.value.code == "UNAVAILABLE"
    assert "DOCKER_HOST=unix:///tmp/no-such-engine.sock" in caught.value.message
    assert "DOCKER_TLS_VERIFY" in caught.value.message
    assert "DOCKER_CERT_PATH" in caught.value.message
    assert caught.value.metadata["env"] == "DOCKER_HOST,DOCKER_TLS_VERIFY,DOCKER_CERT_PATH"
    with pytest.raises(BackendUnavailableError):
        await provider.status("x", namespace="y")


async def test_tls_without_certificates_names_docker_cert_path(tmp_path: Path) -> None:
    provider = DockerComposeProvider(
        env={
            "DOCKER_HOST": "tcp://127.0.0.1:1",
            "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": str(tmp_path),
        }
    )
    with pytest.raises(InfrastructureProviderError) as caught:
        await provider.health()
    assert caught.value.code == "FAILED_PRECONDITION"
    assert "DOCKER_CERT_PATH" in caught.value.message


async def test_engine_going_away_mid_scale_is_unavailable(
    spec_factory: SpecFactory, namespace: str
) -> None:
    proxy = EngineProxy(engine_socket_path(), cut_after=("/containers/create", 3))
    provider = DockerComposeProvider(
        env=provider_env(DOCKER_HOST=proxy.docker_host, ALPHASWARM_DOCKER_COMPOSE_PARALLELISM="1")
    )
    try:
        await provider.start(spec_factory("gone", namespace, replicas=1))
        with pytest.raises(BackendUnavailableError) as caught:
            await provider.scale("gone", 5, namespace=namespace)
        assert caught.value.code == "UNAVAILABLE"
        assert proxy.docker_host in caught.value.message
    finally:
        await provider.close()
        proxy.close()


async def test_list_is_one_engine_call_whatever_the_number_of_services(
    spec_factory: SpecFactory, namespace: str
) -> None:
    proxy = EngineProxy(engine_socket_path())
    provider = DockerComposeProvider(env=provider_env(DOCKER_HOST=proxy.docker_host))
    try:
        for name in ("a", "b", "c", "d"):
            await provider.start(spec_factory(name, namespace))
        await provider.scale("d", 0, namespace=namespace)
        proxy.requests.clear()
        listed = await provider.list_deployments(namespace=namespace)
        assert [s.service_id for s in listed] == ["a", "b", "c", "d"]
        assert listed[-1].state is DeploymentState.STOPPED
        # One container list and one definition (volume) list, for any number of services.
        assert proxy.count("GET", "/containers/json") == 1
        assert proxy.count("GET", "/volumes") == 1
        assert sum(proxy.requests.values()) == 2, proxy.requests
    finally:
        await provider.close()
        proxy.close()
