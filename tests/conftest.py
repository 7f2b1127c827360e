"""Fixtures shared across test packages, registered once so session fixtures start once."""

pytest_plugins = ["tests.realkube.fixtures"]
