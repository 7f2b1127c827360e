"""Fixtures shared across test packages, registered once so session fixtures start once."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.realkube.fixtures"]


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist gives its workers COLUMNS=80 and LINES=24 (for their own output);
    # commands the tests start would inherit them and, in the CLI's case, fit tables
    # to 80 columns. A test that wants a width sets one.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name in ("COLUMNS", "LINES"):
            os.environ.pop(name, None)
