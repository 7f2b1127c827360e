"""``secret.*`` config values: in the replicas' environment, nowhere else on the engine.

The engine shows everything it stores to whoever can ``docker inspect``, list
volumes or read its event stream. These tests inspect every object of the
service (and every volume and network on the engine, and the event stream) and
look for the value: it may appear only as the replicas' ``Config.Env`` entry,
which is how it reaches their processes.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from alphaswarm_controller.providers.docker_compose import DockerComposeProvider, definitions
from alphaswarm_core.providers.errors import SettingInvalid
from alphaswarm_core.providers.protocol import ConfigMapPatch, InfrastructureProviderError
from alphaswarm_core.testing import SpecFactory, ready, wait_for
from tests.providers.docker_compose.conftest import KEY_SETTING, write_key_file
from tests.providers.docker_compose.support import provider_env


def _exec_env(api: docker.APIClient, container: str, name: str) -> str:
    """The variable as a process in the replica sees it."""
    run = api.exec_create(container, ["/bin/sh", "-c", f'echo "${name}"'])
    return api.exec_start(run["Id"]).decode().strip()


def _everything_shown(api: docker.APIClient, since: int) -> dict[str, Any]:
    """What the engine shows of every container, volume and network, and its events.
    Other test sessions share the engine: what one of them removed between the list and
    the inspect is skipped (it is not this test's, and shows nothing any more)."""
    shown: dict[str, Any] = {"containers": {}, "volumes": {}, "networks": {}}
    for entry in api.containers(all=True):
        with contextlib.suppress(docker.errors.NotFound):
            detail = api.inspect_container(entry["Id"])
            shown["containers"][detail["Name"]] = detail
    for volume in api.volumes().get("Volumes") or []:
        with contextlib.suppress(docker.errors.NotFound):
            shown["volumes"][volume["Name"]] = api.inspect_volume(volume["Name"])
    for network in api.networks():
        with contextlib.suppress(docker.errors.NotFound):
            shown["networks"][network["Name"]] = api.inspect_network(network["Id"])
    shown["volume_list"] = api.volumes()
    shown["events"] = list(api.events(since=since, until=int(time.time()) + 1, decode=True))
    return shown


def _without_replica_env(shown: dict[str, Any], namespace: str) -> dict[str, Any]:
    """``shown`` minus the one place a secret belongs: its replicas' Config.Env."""
    copy: dict[str, Any] = json.loads(json.dumps(shown))
    for name, detail in copy["containers"].items():
        if name.startswith(f"/{namespace}-"):
            detail["Config"]["Env"] = []
    return copy


async def test_secret_values_reach_replicas_and_no_engine_metadata(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    docker_api: docker.APIClient,
    engine_env: dict[str, str],
) -> None:
    since = int(time.time()) - 1
    value = f"s3cr3t-{secrets.token_hex(16)}"
    await provider.start(spec_factory("vault", namespace, replicas=2))
    await wait_for(provider, "vault", namespace, ready(2))
    applied = await provider.apply_config(
        ConfigMapPatch("vault", namespace, set={"secret.TOKEN": value, "LEVEL": "debug"})
    )
    assert applied.data == {"secret.TOKEN": "<secret>", "LEVEL": "debug"}
    status = await wait_for(provider, "vault", namespace, ready(2))

    replicas = [f"{namespace}-vault-{n}" for n in (1, 2)]
    for replica in replicas:
        assert _exec_env(docker_api, replica, "TOKEN") == value
        assert f"TOKEN={value}" in docker_api.inspect_container(replica)["Config"]["Env"]
    shown = _everything_shown(docker_api, since)
    assert value in json.dumps(shown), "the check can see the value where it is"
    assert value not in json.dumps(_without_replica_env(shown, namespace))
    assert value not in repr(status)
    config = await provider.get_config("vault", namespace=namespace)
    assert config.data["secret.TOKEN"] == "<secret>"

    # Stopped, the service keeps its secret only sealed, and a controller with the
    # same key gives it to the next replica.
    await provider.stop("vault", namespace=namespace)
    assert value not in json.dumps(_everything_shown(docker_api, since))
    other = DockerComposeProvider(env=engine_env)
    try:
        await other.scale("vault", 1, namespace=namespace)
        await wait_for(other, "vault", namespace, ready(1))
        assert _exec_env(docker_api, replicas[0], "TOKEN") == value
    finally:
        await other.close()


async def test_an_unchanged_secret_does_not_replace_replicas(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
) -> None:
    await provider.start(spec_factory("keep", namespace, replicas=1))
    await provider.apply_config(ConfigMapPatch("keep", namespace, set={"secret.TOKEN": "x"}))
    before = await wait_for(provider, "keep", namespace, ready(1))
    # Starting the same spec again, or setting the same secret value again, changes
    # nothing the replicas run: the Compose config-hash holds the sealed value.
    await provider.start(spec_factory("keep", namespace, replicas=1))
    await provider.apply_config(ConfigMapPatch("keep", namespace, set={"secret.TOKEN": "x"}))
    after = await wait_for(provider, "keep", namespace, ready(1))
    assert {i.instance_id for i in after.instances} == {i.instance_id for i in before.instances}


async def test_secrets_need_the_controllers_key(
    spec_factory: SpecFactory,
    namespace: str,
    busybox_image: str,
    engine_env: dict[str, str],
    tmp_path: Path,
) -> None:
    keyless = DockerComposeProvider(env=provider_env())
    keyed = DockerComposeProvider(env=engine_env)
    other_key = DockerComposeProvider(
        env=provider_env(**{KEY_SETTING: str(write_key_file(tmp_path / "other.key"))})
    )
    try:
        await keyless.start(spec_factory("locked", namespace, replicas=0))
        before = await keyless.get_config("locked", namespace=namespace)
        with pytest.raises(SettingInvalid) as caught:
            await keyless.apply_config(
                ConfigMapPatch("locked", namespace, set={"secret.TOKEN": "x"})
            )
        assert caught.value.code == "FAILED_PRECONDITION"
        assert caught.value.metadata["setting"] == KEY_SETTING
        assert await keyless.get_config("locked", namespace=namespace) == before

        await keyed.apply_config(ConfigMapPatch("locked", namespace, set={"secret.TOKEN": "x"}))
        with pytest.raises(InfrastructureProviderError) as mismatch:
            await other_key.scale("locked", 1, namespace=namespace)
        assert mismatch.value.code == "FAILED_PRECONDITION"
        assert mismatch.value.metadata["cause"] == "SECRET_KEY_MISMATCH"
        assert (await keyed.status("locked", namespace=namespace)).desired_replicas == 0
    finally:
        for instance in (keyless, keyed, other_key):
            await instance.close()


async def test_clear_secrets_of_an_older_release_are_sealed_on_the_next_write(
    provider: DockerComposeProvider,
    spec_factory: SpecFactory,
    namespace: str,
    docker_api: docker.APIClient,
) -> None:
    # A definition as release 0.1 wrote it: schema 1, the secret in clear in a label.
    await provider.start(spec_factory("old", namespace, replicas=0))
    current = definitions.read(provider._client(), namespace, "old")
    assert current is not None
    body = json.loads(current.to_body())
    body.update(schema=1, config={"secret.TOKEN": "legacy-value"})
    body.pop("sealed")
    old = docker_api.create_volume(
        definitions.volume_name(namespace, "old", current.generation + 1),
        driver="local",
        labels={
            definitions.KIND: "1",
            definitions.PROJECT: namespace,
            definitions.SERVICE: "old",
            definitions.GENERATION: str(current.generation + 1),
            definitions.BODY: json.dumps(body),
        },
    )
    await provider.scale("old", 1, namespace=namespace)
    await wait_for(provider, "old", namespace, ready(1))
    assert _exec_env(docker_api, f"{namespace}-old-1", "TOKEN") == "legacy-value"

    await provider.apply_config(ConfigMapPatch("old", namespace, set={"LEVEL": "info"}))
    volumes = docker_api.volumes(filters={"label": f"{definitions.PROJECT}={namespace}"})
    assert old["Name"] not in {v["Name"] for v in volumes["Volumes"]}
    assert "legacy-value" not in json.dumps(volumes)
    await wait_for(provider, "old", namespace, ready(1))
    assert _exec_env(docker_api, f"{namespace}-old-1", "TOKEN") == "legacy-value"
