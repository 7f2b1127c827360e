"""Fixtures shared across test packages, registered once so session fixtures start once."""

from __future__ import annotations

import os

import pytest

# As the server does (alphaswarm_controller/main.py), before any test module imports
# gRPC: the tests run the local provider in their own process, beside gRPC channels and
# servers, and it forks its replicas. gRPC's fork handlers (on by default) restart its
# pollers in the forked child, where one that lost its epoll fd to close_fds wrote an
# error into the replica's stderr before exec (in a run, a replica's logs had a gRPC
# line). Replicas exec at once and never use gRPC: they need no handlers.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

pytest_plugins = ["tests.realkube.fixtures"]


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist gives its workers COLUMNS=80 and LINES=24 (for their own output);
    # commands the tests start would inherit them and, in the CLI's case, fit tables
    # to 80 columns. A test that wants a width sets one.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name in ("COLUMNS", "LINES"):
            os.environ.pop(name, None)
