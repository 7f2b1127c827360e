"""Fixtures for the local provider's tests: a per-test env marker and the orphan check.

Every process a local-provider test starts carries ``ALPHASWARM_TEST_MARKER``;
after the test (and after its provider closed) no live process may carry it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

MARKER_ENV = "ALPHASWARM_TEST_MARKER"


def marked_processes(marker: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries ``marker``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(MARKER_ENV) == marker:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


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
