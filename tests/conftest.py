"""Fixtures shared across test packages, registered once so session fixtures start once."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.realkube.fixtures"]

#: Tests that drive the one Docker engine of the run: scripts/test.sh's workers run
#: them one after another, on one worker, as a serial run would (see
#: pytest_collection_modifyitems).
DOCKER_ENGINE_TESTS = (
    "tests/providers/docker_compose/",
    "tests/e2e/test_docker_compose_",
    "tests/e2e/test_cli_logs_delete_watch.py",
    "tests/deploy/test_image.py",
    "tests/test_benchmarks_smoke.py",
)


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist gives its workers COLUMNS=80 and LINES=24 (for their own output);
    # commands the tests start would inherit them and, in the CLI's case, fit tables
    # to 80 columns. A test that wants a width sets one.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name in ("COLUMNS", "LINES"):
            os.environ.pop(name, None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The groups of ``--dist loadgroup``: a module, or a class of the contract suite,
    stays on one worker with its fixtures (as ``loadscope`` would), and every test of
    the Docker engine runs on one worker: several rollouts at once on one engine have
    lost a new replica's container (a 404 on inspect, not yet explained), which a
    serial run never showed."""
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        if path.startswith(DOCKER_ENGINE_TESTS):
            group = "docker-engine"
        else:
            in_class = getattr(item, "cls", None) is not None
            group = item.nodeid.rsplit("::", 1)[0] if in_class else path
        item.add_marker(pytest.mark.xdist_group(group))
