"""Compose compatibility, checked with the real Compose v2 CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import docker

from alphaswarm_controller.providers.docker_compose import DockerComposeProvider, compose
from alphaswarm_core.providers.protocol import (
    DeploymentState,
)
from alphaswarm_core.testing import SpecFactory, ready, wait_for
from tests.providers.docker_compose.support import (
    run_compose,
)

# -- Compose compatibility -------------------------------------------------------------------


def _compose_ps(cli: list[str], project: str) -> list[dict[str, str]]:
    out = run_compose(cli, "-p", project, "ps", "--all", "--format", "json")
    rows = []
    for raw in out.splitlines():
        line = raw.strip()
        if line.startswith("["):
            rows.extend(json.loads(line))
        elif line:
            rows.append(json.loads(line))
    return rows


async def test_compose_ps_and_down_see_provider_services(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    compose_cli: list[str],
    docker_api: docker.APIClient,
) -> None:
    await provider.start(spec_factory("web", namespace, replicas=2))
    await wait_for(provider, "web", namespace, ready(2))

    rows = _compose_ps(compose_cli, namespace)
    assert sorted(row["Name"] for row in rows) == [f"{namespace}-web-1", f"{namespace}-web-2"]
    assert {row["Service"] for row in rows} == {"web"}
    assert all(row["State"] == "running" for row in rows)

    labels = docker_api.inspect_container(f"{namespace}-web-1")["Config"]["Labels"]
    assert labels[compose.PROJECT] == namespace
    assert labels[compose.SERVICE] == "web"
    assert labels[compose.NUMBER] == "1"
    assert labels[compose.ONEOFF] == "False"
    assert len(labels[compose.CONFIG_HASH]) == 64
    assert labels[compose.IMAGE].startswith("sha256:")
    network = docker_api.inspect_network(f"{namespace}_default")
    assert network["Labels"][compose.PROJECT] == namespace
    assert network["Labels"][compose.NETWORK] == "default"
    assert len(network["Containers"]) == 2

    run_compose(compose_cli, "-p", namespace, "down")
    assert _compose_ps(compose_cli, namespace) == []
    assert f"{namespace}_default" not in {n["Name"] for n in docker_api.networks()}
    after = await provider.status("web", namespace=namespace)
    assert after.state is DeploymentState.STOPPED, "the definition outlives compose down"
    await provider.start(spec_factory("web", namespace, replicas=1))
    await wait_for(provider, "web", namespace, ready(1))


async def test_services_started_by_compose_are_visible_and_manageable(
    provider: DockerComposeProvider,
    namespace: str,
    busybox_image: str,
    compose_cli: list[str],
    tmp_path: Path,
) -> None:
    (tmp_path / "compose.yaml").write_text(
        f"services:\n  api:\n    image: {busybox_image}\n    environment:\n      MODE: compose\n"
    )
    run_compose(compose_cli, "-p", namespace, "up", "-d", "--scale", "api=2", cwd=tmp_path)

    status = await wait_for(provider, "api", namespace, ready(2))
    assert "Docker Compose" in status.message
    listed = await provider.list_deployments(namespace=namespace)
    assert [(s.service_id, s.desired_replicas) for s in listed] == [("api", 2)]
    config = await provider.get_config("api", namespace=namespace)
    assert (config.data, config.version) == ({}, "0")

    scaled = await provider.scale("api", 3, namespace=namespace)
    assert scaled.desired_replicas == 3
    await wait_for(provider, "api", namespace, ready(3))
    names = sorted(row["Name"] for row in _compose_ps(compose_cli, namespace))
    assert names == [f"{namespace}-api-{n}" for n in (1, 2, 3)]

    stopped = await provider.stop("api", namespace=namespace)
    assert stopped.state is DeploymentState.STOPPED
    assert (await provider.stop("api", namespace=namespace)).state is DeploymentState.STOPPED
    assert _compose_ps(compose_cli, namespace) == []


async def test_stop_keeps_named_volumes(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    docker_api: docker.APIClient,
) -> None:
    spec = replace(spec_factory("db", namespace), provider_options={"volumes": "data:/data"})
    await provider.start(spec)
    await wait_for(provider, "db", namespace, ready(1))
    volume = docker_api.inspect_volume(f"{namespace}_data")
    assert volume["Labels"][compose.VOLUME] == "data"
    await provider.stop("db", namespace=namespace)
    assert not docker_api.containers(all=True, filters={"label": f"{compose.PROJECT}={namespace}"})
    assert docker_api.inspect_volume(f"{namespace}_data")["Name"] == f"{namespace}_data"
