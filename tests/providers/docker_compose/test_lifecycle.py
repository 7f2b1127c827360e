"""Stops within the caller's deadline, concurrent writers, published ports."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import docker

from alphaswarm_controller.providers.docker_compose import DockerComposeProvider, compose
from alphaswarm_core.providers.protocol import DeploymentState, PortSpec
from alphaswarm_core.testing import SpecFactory, ready, wait_for
from tests.providers.docker_compose.support import call_deadline, free_port, project_objects

#: Far above the deadlines used here, far below the stop grace that must not be waited.
BOUND = 90.0


async def test_stop_ends_within_the_callers_deadline(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    docker_api: docker.APIClient,
) -> None:
    # Replicas that ignore SIGTERM only end at the grace's SIGKILL. With a grace of
    # 300 s and a deadline of 8 s, the stop must shorten the grace, not outlive the
    # deadline (the SDK's stop sent timeout = client timeout + grace, uncapped).
    stubborn = replace(
        spec_factory("stubborn", namespace, replicas=2),
        command=("/bin/sh", "-c", "trap '' TERM; while :; do /bin/busybox sleep 1; done"),
        provider_options={"stop_grace_period": "300"},
    )
    await provider.start(stubborn)
    await wait_for(provider, "stubborn", namespace, ready(2))
    with call_deadline(8.0):
        stopped = await asyncio.wait_for(provider.stop("stubborn", namespace=namespace), BOUND)
    assert stopped.state is DeploymentState.STOPPED
    assert project_objects(docker_api, namespace)["containers"] == []


async def test_two_controllers_stopping_one_service_both_succeed(
    spec_factory: SpecFactory, namespace: str, engine_env: dict[str, str]
) -> None:
    # Two controller replicas (no shared lock) remove the same containers at once: the
    # engine answers the later remover 404 or 409 "removal ... already in progress",
    # and both mean the replica is going, which is what both were asked for.
    first = DockerComposeProvider(env=engine_env)
    second = DockerComposeProvider(env=engine_env)
    try:
        for round_ in range(3):
            await first.start(spec_factory("twice", namespace, replicas=6))
            await wait_for(first, "twice", namespace, ready(6))
            results = await asyncio.gather(
                first.stop("twice", namespace=namespace),
                second.stop("twice", namespace=namespace),
                return_exceptions=True,
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            assert not errors, f"round {round_}: {errors}"
            assert (await first.status("twice", namespace=namespace)).desired_replicas == 0
    finally:
        await first.close()
        await second.close()


async def test_one_container_port_on_several_host_ports(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    docker_api: docker.APIClient,
) -> None:
    # Publishing port 80 on two host ports kept only the last binding.
    ports = (PortSpec(80, free_port()), PortSpec(80, free_port()), PortSpec(81, 0))
    await provider.start(replace(spec_factory("multi", namespace), ports=ports))
    await wait_for(provider, "multi", namespace, ready(1))
    bindings = docker_api.inspect_container(f"{namespace}-multi-1")["HostConfig"]["PortBindings"]
    assert sorted(int(b["HostPort"]) for b in bindings["80/tcp"]) == sorted(
        p.host_port for p in ports[:2]
    )
    assert (
        "81/tcp" in docker_api.inspect_container(f"{namespace}-multi-1")["Config"]["ExposedPorts"]
    )


async def test_the_project_network_is_compose_compatible_and_ours(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    docker_api: docker.APIClient,
) -> None:
    await provider.start(spec_factory("net", namespace))
    labels = docker_api.inspect_network(compose.network_name(namespace))["Labels"]
    assert labels[compose.PROJECT] == namespace
    assert labels[compose.NETWORK] == "default"
    assert labels[compose.MANAGED_BY] == compose.MANAGED_BY_VALUE
