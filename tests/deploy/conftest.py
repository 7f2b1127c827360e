"""Fixtures for the container image tests: a real Docker engine and the built image.

The engine comes from DOCKER_HOST (``eval "$(bash scripts/ci/start-dockerd.sh)"``).
Without one these tests fail: a skip would let CI pass without ever building the
image.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGE_TAG = "alphaswarm-controller:test"
START_HINT = 'start one with: eval "$(bash scripts/ci/start-dockerd.sh)"'


@pytest.fixture(scope="session")
def engine() -> Iterator[docker.APIClient]:
    host = os.environ.get("DOCKER_HOST")
    if not host:
        pytest.fail(f"DOCKER_HOST is not set: the image tests need an engine; {START_HINT}")
    try:
        api = docker.APIClient(base_url=host, version="auto", timeout=120)
        api.ping()
    except Exception as exc:
        pytest.fail(f"no Docker engine answers at DOCKER_HOST={host} ({exc}); {START_HINT}")
    yield api
    api.close()


@pytest.fixture(scope="session")
def image(engine: docker.APIClient) -> str:
    """The image from the repository's Dockerfile, built offline with no extras."""
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts/ci/build_image.py"), "--tag", IMAGE_TAG],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"building the image failed ({done.returncode}):\n{done.stderr[-6000:]}")
    assert done.stdout.strip().splitlines()[-1] == IMAGE_TAG
    return IMAGE_TAG
