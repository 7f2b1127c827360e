"""Fixtures that run the real server (``python -m alphaswarm_controller``) on port 0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.server_process import ServerProcess, start_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server on the `local` provider with its own state dir; stopped with SIGTERM."""
    running = start_server(tmp_path / "state")
    try:
        yield running
    finally:
        code = running.terminate()
        assert code == 0, f"server exited with {code}:\n{running.log}"
