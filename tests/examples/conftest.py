"""Fixtures for the polyglot examples."""

from __future__ import annotations

import pytest

from tests.examples.node_env import NodeExample, prepare_node_example


@pytest.fixture(scope="session")
def node_example() -> NodeExample:
    """Node.js >= 20 with examples/node/node_modules installed from package-lock.json.

    `npm ci` runs only when node_modules is missing or came from another lock file,
    so repeated runs stay offline and fast.
    """
    return prepare_node_example()
