"""Fixtures for the local provider's tests: real processes, a per-test marker, the orphan check.

Every process a local-provider test starts carries ``ALPHASWARM_TEST_MARKER``;
after the test (and after its provider closed) no live process may carry it.
``provider`` is a LocalProvider on a state directory of the test's own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import pytest

from alphaswarm_controller.providers.local import LocalProvider
from alphaswarm_core.providers.protocol import DeploymentSpec
from alphaswarm_core.testing import SpecFactory, unique_name

from .support import command_spec, local_env, marked_processes, opened


@pytest.fixture
def local_marker() -> Iterator[str]:
    marker = uuid.uuid4().hex
    yield marker
    deadline = time.monotonic() + 5
    left = marked_processes(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = marked_processes(marker)
    for pid in left:  # do not leak them into the rest of the session, then fail
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"orphaned replica processes after the test: {left}"


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary directory any user may enter: local replicas run as another user
    under root, and pytest's own tmp_path sits in a 0700 directory."""
    with tempfile.TemporaryDirectory(prefix="alphaswarm-local-test-") as raw:
        path = Path(raw)
        path.chmod(0o755)
        yield path


@pytest.fixture
async def provider(tmp_path: Path, local_marker: str) -> AsyncIterator[LocalProvider]:
    provider = await opened(local_env(tmp_path / "state"))
    yield provider
    await provider.close()


@pytest.fixture
def spec_factory(local_marker: str) -> SpecFactory:
    def make(
        service_id: str,
        namespace: str,
        replicas: int = 1,
        env: Mapping[str, str] | None = None,
    ) -> DeploymentSpec:
        return command_spec(service_id, namespace, local_marker, replicas=replicas, env=env)

    return make


@pytest.fixture
def namespace() -> str:
    return unique_name("ns")
