"""The docker_compose provider against a real Docker engine (DOCKER_HOST).

The contract suite runs unchanged; the rest checks what only this backend has:
Compose compatibility with the real Compose v2 CLI, engine-held definitions and
config, rolling config changes, shared stats streams, and error mapping with the
engine's real failures (missing image, port taken, engine gone).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import replace
from pathlib import Path

import docker
import pytest

from alphaswarm_controller.providers.docker_compose import DockerComposeProvider, compose
from alphaswarm_core.providers.protocol import (
    BackendRejectedError,
    BackendUnavailableError,
    ConfigMapPatch,
    DeploymentNotFoundError,
    DeploymentSpec,
    DeploymentState,
    InfrastructureProviderError,
    InvalidSpecError,
    PortSpec,
    ResourceNotFoundError,
)
from alphaswarm_core.providers.registry import Registry
from alphaswarm_core.testing import ProviderContract, SpecFactory, ready, unique_name, wait_for
from tests.providers.docker_fixtures import (  # noqa: F401 - fixtures
    EngineProxy,
    busybox_image,
    compose_cli,
    docker_api,
    engine_socket_path,
    free_port,
    listening_port,
    remove_project,
    run_compose,
)


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith(("DOCKER_", "ALPHASWARM_"))}
    env.update(overrides)
    return env


@pytest.fixture
def namespace(docker_api: docker.APIClient) -> Iterator[str]:  # noqa: F811
    name = unique_name("t")
    yield name
    remove_project(docker_api, name)


@pytest.fixture
async def provider(busybox_image: str) -> AsyncIterator[DockerComposeProvider]:  # noqa: F811
    instance = DockerComposeProvider(env=_env())
    await instance.open()
    yield instance
    await instance.close()


@pytest.fixture
def spec_factory(busybox_image: str) -> SpecFactory:  # noqa: F811
    def make(
        service_id: str,
        namespace: str,
        replicas: int = 1,
        env: Mapping[str, str] | None = None,
    ) -> DeploymentSpec:
        return DeploymentSpec(
            service_id=service_id,
            namespace=namespace,
            image=busybox_image,
            env=dict(env or {}),
            replicas=replicas,
        )

    return make


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
    compose_cli: list[str],  # noqa: F811
    docker_api: docker.APIClient,  # noqa: F811
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
    assert not docker_api.networks(names=[f"{namespace}_default"])
    after = await provider.status("web", namespace=namespace)
    assert after.state is DeploymentState.STOPPED, "the definition outlives compose down"
    await provider.start(spec_factory("web", namespace, replicas=1))
    await wait_for(provider, "web", namespace, ready(1))


async def test_services_started_by_compose_are_visible_and_manageable(
    provider: DockerComposeProvider,
    namespace: str,
    busybox_image: str,  # noqa: F811
    compose_cli: list[str],  # noqa: F811
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
    docker_api: docker.APIClient,  # noqa: F811
) -> None:
    spec = replace(spec_factory("db", namespace), provider_options={"volumes": "data:/data"})
    await provider.start(spec)
    await wait_for(provider, "db", namespace, ready(1))
    volume = docker_api.inspect_volume(f"{namespace}_data")
    assert volume["Labels"][compose.VOLUME] == "data"
    await provider.stop("db", namespace=namespace)
    assert not docker_api.containers(all=True, filters={"label": f"{compose.PROJECT}={namespace}"})
    assert docker_api.inspect_volume(f"{namespace}_data")["Name"] == f"{namespace}_data"


# -- state on the engine, rolling config ----------------------------------------------------


async def test_definition_and_config_survive_a_controller_restart(
    spec_factory: SpecFactory,
    namespace: str,
    busybox_image: str,  # noqa: F811
) -> None:
    first = DockerComposeProvider(env=_env())
    await first.start(spec_factory("svc", namespace, replicas=1, env={"A": "1"}))
    await wait_for(first, "svc", namespace, ready(1))
    applied = await first.apply_config(ConfigMapPatch("svc", namespace, set={"K": "v"}))
    await first.scale("svc", 0, namespace=namespace)
    await first.close()

    second = DockerComposeProvider(env=_env())
    try:
        config = await second.get_config("svc", namespace=namespace)
        assert (config.data, config.version) == ({"K": "v"}, applied.version)
        assert (await second.status("svc", namespace=namespace)).state is DeploymentState.STOPPED
        await second.scale("svc", 1, namespace=namespace)
        status = await wait_for(second, "svc", namespace, ready(1))
        assert status.image == busybox_image
    finally:
        await second.close()


async def test_apply_config_rolls_one_replica_at_a_time(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    docker_api: docker.APIClient,  # noqa: F811
) -> None:
    await provider.start(spec_factory("roll", namespace, replicas=2))
    before = await wait_for(provider, "roll", namespace, ready(2))
    lowest_ready: list[int] = []
    done = asyncio.Event()

    running = {"label": [f"{compose.PROJECT}={namespace}", f"{compose.SERVICE}=roll"]}

    async def watch() -> None:
        while not done.is_set():
            entries = await asyncio.to_thread(docker_api.containers, filters=running)
            lowest_ready.append(len(entries))
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    try:
        applied = await provider.apply_config(
            ConfigMapPatch("roll", namespace, set={"GREETING": "hi"})
        )
    finally:
        done.set()
        await watcher
    assert applied.data == {"GREETING": "hi"}
    assert min(lowest_ready) >= 1, "a 2-replica service never drops to zero while rolling"
    assert max(lowest_ready) <= 3, "one replica at a time: never more than one extra"
    after = await wait_for(provider, "roll", namespace, ready(2))
    assert not {i.instance_id for i in after.instances} & {i.instance_id for i in before.instances}
    for n in (1, 2):
        env = docker_api.inspect_container(f"{namespace}-roll-{n}")["Config"]["Env"]
        assert "GREETING=hi" in env


async def test_a_config_that_does_not_run_is_rolled_back(
    provider: DockerComposeProvider, spec_factory: SpecFactory, namespace: str
) -> None:
    from tests.fakes.docker_images import IDLE_COMMAND

    picky = replace(
        spec_factory("picky", namespace, replicas=2),
        command=("/bin/sh", "-c", f'[ "$MODE" = broken ] && exit 3; {IDLE_COMMAND}'),
    )
    await provider.start(picky)
    before = await wait_for(provider, "picky", namespace, ready(2))
    initial = await provider.get_config("picky", namespace=namespace)

    with pytest.raises(BackendRejectedError) as caught:
        await provider.apply_config(ConfigMapPatch("picky", namespace, set={"MODE": "broken"}))
    assert caught.value.metadata["cause"] == "REPLICA_FAILED"

    restored = await provider.get_config("picky", namespace=namespace)
    assert "MODE" not in restored.data, "the failed config is not left in place"
    assert restored.version != initial.version, "readers of the failed version notice"
    after = await wait_for(provider, "picky", namespace, ready(2))
    assert {i.instance_id for i in after.instances} == {i.instance_id for i in before.instances}


async def test_health_check_decides_readiness(
    provider: DockerComposeProvider, spec_factory: SpecFactory, namespace: str
) -> None:
    base = spec_factory("hc", namespace)
    healthy = replace(
        base, provider_options={"healthcheck": "test -d /bin", "healthcheck_interval": "2"}
    )
    first = await provider.start(healthy)
    assert first.ready_replicas == 0, "not ready before the first health check passes"
    await wait_for(provider, "hc", namespace, ready(1))

    sick = replace(
        base,
        service_id="sick",
        provider_options={
            "healthcheck": "test -d /nonexistent",
            "healthcheck_interval": "0.3",
            "healthcheck_retries": "1",
        },
    )
    await provider.start(sick)
    status = await wait_for(
        provider, "sick", namespace, lambda s: s.state is DeploymentState.DEGRADED
    )
    assert (status.desired_replicas, status.ready_replicas) == (1, 0)
    assert "unhealthy" in status.message


# -- metrics --------------------------------------------------------------------------------


async def test_metrics_share_one_stats_stream_per_container(
    provider: DockerComposeProvider, spec_factory: SpecFactory, namespace: str
) -> None:
    await provider.start(spec_factory("m", namespace, replicas=2))
    settled = await wait_for(provider, "m", namespace, ready(2))
    first = provider.stream_metrics("m", namespace=namespace, interval_seconds=0.2)
    second = provider.stream_metrics("m", namespace=namespace, interval_seconds=0.2)
    a = await anext(first)
    b = await anext(second)
    assert a.ok and b.ok, (a.error, b.error)
    assert a.replicas == b.replicas == 2 and a.memory_bytes > 0
    streams = provider.stats.open_streams()
    assert len(streams) == 2 and set(streams.values()) == {2}
    assert {cid[:12] for cid in streams} == {i.instance_id for i in settled.instances}

    await first.aclose()
    assert set(provider.stats.open_streams().values()) == {1}
    await second.aclose()
    assert provider.stats.open_streams() == {}
    # The engine streams are really closed: their reader threads end.
    for _ in range(50):
        if not [t for t in threading.enumerate() if t.name.startswith("docker-stats-")]:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("stats reader threads outlived their last subscriber")


async def test_metrics_survive_the_engine_going_away(
    spec_factory: SpecFactory, namespace: str
) -> None:
    proxy = EngineProxy(engine_socket_path())
    provider = DockerComposeProvider(env=_env(DOCKER_HOST=proxy.docker_host))
    try:
        await provider.start(spec_factory("m", namespace, replicas=1))
        await wait_for(provider, "m", namespace, ready(1))
        stream = provider.stream_metrics("m", namespace=namespace, interval_seconds=0.1)
        first = await anext(stream)
        assert first.ok, first.error
        proxy.cut()
        after = [await anext(stream) for _ in range(3)]
        assert all(not sample.ok for sample in after), "failed reads are marked, not hidden"
        assert "DOCKER_HOST" in after[-1].error
        await stream.aclose()
        assert provider.stats.open_streams() == {}
    finally:
        await provider.close()
        proxy.close()


async def test_metrics_of_unknown_service_is_not_found(
    provider: DockerComposeProvider, namespace: str
) -> None:
    stream = provider.stream_metrics("ghost", namespace=namespace, interval_seconds=0.2)
    with pytest.raises(DeploymentNotFoundError):
        await anext(stream)


# -- bad input and faults -------------------------------------------------------------------


async def test_missing_image_is_not_found_and_leaves_nothing(
    provider: DockerComposeProvider,
    namespace: str,
    docker_api: docker.APIClient,  # noqa: F811
) -> None:
    spec = DeploymentSpec("ghost", namespace, image="alphaswarm-test/does-not-exist:1")
    with pytest.raises(ResourceNotFoundError) as caught:
        await provider.start(spec)
    assert (caught.value.code, caught.value.reason) == ("NOT_FOUND", "BACKEND_RESOURCE_NOT_FOUND")
    assert caught.value.metadata["cause"] == "IMAGE_NOT_FOUND"
    assert "alphaswarm-test/does-not-exist:1" in caught.value.message
    with pytest.raises(DeploymentNotFoundError):
        await provider.status("ghost", namespace=namespace)
    assert not docker_api.networks(names=[f"{namespace}_default"])


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
    docker_api: docker.APIClient,  # noqa: F811
) -> None:
    # Two replicas cannot publish one host port: the second fails after the first ran.
    spec = replace(
        spec_factory("pair", namespace, replicas=2), ports=(PortSpec(8080, free_port()),)
    )
    with pytest.raises(BackendRejectedError):
        await provider.start(spec)
    assert not docker_api.containers(all=True, filters={"label": f"{compose.PROJECT}={namespace}"})
    with pytest.raises(DeploymentNotFoundError):
        await provider.status("pair", namespace=namespace)


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
        env=_env(DOCKER_HOST=proxy.docker_host, ALPHASWARM_DOCKER_COMPOSE_PARALLELISM="1")
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
    provider = DockerComposeProvider(env=_env(DOCKER_HOST=proxy.docker_host))
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


def test_scale_benchmark_runs_end_to_end(
    busybox_image: str,  # noqa: F811
    compose_cli: list[str],  # noqa: F811
) -> None:
    """Tiny load, timings not asserted: keeps benchmarks/docker_compose_scale.py working."""
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "benchmarks/docker_compose_scale.py", "--replicas", "2", "--rounds", "1"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "provider / compose = " in result.stdout
    assert "provider / engine  = " in result.stdout
