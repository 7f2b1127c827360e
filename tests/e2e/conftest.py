"""Fixtures that run the real server (``python -m alphaswarm_controller``) on port 0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.e2e.server_process import ServerProcess, start_server

if TYPE_CHECKING:  # the docker SDK comes with the docker_compose extra only
    import docker


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server on the `local` provider with its own state dir; stopped with SIGTERM."""
    running = start_server(tmp_path / "state")
    try:
        yield running
    finally:
        code = running.terminate()
        assert code == 0, f"server exited with {code}:\n{running.log}"


@pytest.fixture
def engine() -> Iterator[docker.APIClient]:
    """The tests' Docker engine (DOCKER_HOST), as the docker_compose tests reach it."""
    from tests.fakes.docker_images import connect_engine

    api = connect_engine("the docker_compose end-to-end tests", timeout=60)
    try:
        yield api
    finally:
        api.close()


@pytest.fixture
def compose_server(tmp_path: Path, engine: docker.APIClient) -> Iterator[ServerProcess]:
    """A server whose default provider is docker_compose, on that engine."""
    running = start_server(tmp_path / "state", {"ALPHASWARM_CP_PROVIDER": "docker_compose"})
    try:
        yield running
    finally:
        code = running.terminate()
        assert code == 0, f"server exited with {code}:\n{running.log}"
