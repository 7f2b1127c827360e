"""What the engine would refuse is refused before any engine call, naming the field.

A proxy in front of the engine counts the requests the provider sends: a spec
the engine cannot run must cost none (INVALID_ARGUMENT), or, when only the
engine knows (its CPU count), reads only and no write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest

from alphaswarm_controller.providers.docker_compose import DockerComposeProvider
from alphaswarm_core.providers.protocol import (
    BackendRejectedError,
    ConfigMapPatch,
    InvalidSpecError,
    PortSpec,
    Resources,
)
from alphaswarm_core.testing import SpecFactory
from tests.providers.docker_compose.support import EngineProxy, engine_socket_path, provider_env


@dataclass
class Counted:
    provider: DockerComposeProvider
    proxy: EngineProxy

    def writes(self) -> int:
        return sum(
            n for line, n in self.proxy.requests.items() if line.startswith(("POST", "DELETE"))
        )


@pytest.fixture
async def counted(busybox_image: str, engine_env: dict[str, str]) -> AsyncIterator[Counted]:
    proxy = EngineProxy(engine_socket_path())
    instance = DockerComposeProvider(env={**engine_env, "DOCKER_HOST": proxy.docker_host})
    await instance.open()
    proxy.requests.clear()
    try:
        yield Counted(instance, proxy)
    finally:
        await instance.close()
        proxy.close()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"image": "Not/A:Valid:Reference"}, "spec.image"),
        ({"image": ""}, "spec.image"),
        ({"resources": Resources(cpu="5m")}, "spec.resources.cpu"),
        ({"resources": Resources(memory="4Mi")}, "spec.resources.memory"),
        ({"ports": (PortSpec(80, 18080), PortSpec(81, 18080))}, "spec.ports[1].host_port"),
        ({"ports": (PortSpec(80, 18081),), "replicas": 2}, "spec.replicas"),
        ({"provider_options": {"volumes": "data:/"}}, "spec.provider_options['volumes']"),
    ],
)
async def test_a_spec_the_engine_would_refuse_costs_no_call(
    counted: Counted,
    spec_factory: SpecFactory,
    namespace: str,
    change: dict[str, object],
    field: str,
) -> None:
    spec = replace(spec_factory("web", namespace), **change)  # type: ignore[arg-type]
    with pytest.raises(InvalidSpecError) as caught:
        await counted.provider.start(spec)
    assert caught.value.code == "INVALID_ARGUMENT"
    assert field in [v.field for v in caught.value.violations]
    assert sum(counted.proxy.requests.values()) == 0, counted.proxy.requests


async def test_scaling_a_fixed_host_port_beyond_one_replica_costs_no_write(
    counted: Counted, spec_factory: SpecFactory, namespace: str
) -> None:
    spec = replace(spec_factory("web", namespace), ports=(PortSpec(80, 0), PortSpec(81, 18082)))
    await counted.provider.start(replace(spec, replicas=0))
    counted.proxy.requests.clear()
    with pytest.raises(InvalidSpecError) as caught:
        await counted.provider.scale("web", 2, namespace=namespace)
    assert [v.field for v in caught.value.violations] == ["replicas"]
    assert counted.writes() == 0, counted.proxy.requests


async def test_more_cpus_than_the_engine_has_is_refused_before_any_write(
    counted: Counted, spec_factory: SpecFactory, namespace: str
) -> None:
    # More cores than the engine has, yet under the 1000-core bound every request is held to.
    spec = replace(spec_factory("big", namespace), resources=Resources(cpu="512"))
    with pytest.raises(BackendRejectedError) as caught:
        await counted.provider.start(spec)
    assert (caught.value.code, caught.value.metadata["cause"]) == (
        "FAILED_PRECONDITION",
        "CPU_EXCEEDS_ENGINE",
    )
    assert counted.writes() == 0, counted.proxy.requests


async def test_config_keys_that_clash_as_variables_cost_no_write(
    counted: Counted, spec_factory: SpecFactory, namespace: str
) -> None:
    await counted.provider.start(spec_factory("cfg", namespace, replicas=0))
    counted.proxy.requests.clear()
    for patch in (
        {"LEVEL": "a", "secret.LEVEL": "b"},
        {"secret.": "nameless"},
    ):
        with pytest.raises(InvalidSpecError):
            await counted.provider.apply_config(ConfigMapPatch("cfg", namespace, set=patch))
    assert counted.writes() == 0, counted.proxy.requests
    assert (await counted.provider.get_config("cfg", namespace=namespace)).version == "0"


def test_provider_settings_are_checked_when_the_provider_is_made() -> None:
    from alphaswarm_core.providers.errors import SettingInvalid

    for name, value in (("TIMEOUT", "soon"), ("PARALLELISM", "0"), ("PULL_TIMEOUT", "-1")):
        with pytest.raises(SettingInvalid) as caught:
            DockerComposeProvider(env=provider_env(**{f"ALPHASWARM_DOCKER_COMPOSE_{name}": value}))
        assert caught.value.metadata["setting"] == f"ALPHASWARM_DOCKER_COMPOSE_{name}"


async def test_every_refused_field_is_named_at_once(
    counted: Counted, spec_factory: SpecFactory, namespace: str
) -> None:
    spec = replace(
        spec_factory("web", namespace),
        image="UPPER",
        resources=Resources(memory="1Mi"),
        provider_options={"restrat": "always"},
    )
    with pytest.raises(InvalidSpecError) as caught:
        await counted.provider.start(spec)
    assert sorted(v.field for v in caught.value.violations) == [
        "spec.image",
        "spec.provider_options['restrat']",
        "spec.resources.memory",
    ]
    assert sum(counted.proxy.requests.values()) == 0
