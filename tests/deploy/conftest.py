"""Fixtures for the container image tests: a real Docker engine and the built image.

The engine comes from DOCKER_HOST (``eval "$(bash scripts/ci/start-dockerd.sh)"``).
Without one these tests fail: a skip would let CI pass without ever building the
image.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.fakes.docker_images import connect_engine

REPO = Path(__file__).resolve().parents[2]
IMAGE_TAG = "alphaswarm-controller:test"


@pytest.fixture(scope="session")
def engine() -> Iterator[docker.APIClient]:
    api = connect_engine("the image tests", timeout=120)
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
