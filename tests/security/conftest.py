"""Servers with TLS, mTLS and token auth over in-memory providers; certificates made per session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from alphaswarm_controller.security.devcerts import DevCerts, make_dev_certs
from alphaswarm_controller.security.tokens import hash_token
from alphaswarm_controller.server import RunningServer, start_server
from tests.service.conftest import make_registry, settings

TOKENS = {
    "viewer": "tok-viewer-0123456789",
    "operator": "tok-operator-0123456789",
    "admin": "tok-admin-0123456789",
    "team-a": "tok-team-a-0123456789",
}


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> DevCerts:
    return make_dev_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens.yaml"
    path.write_text(
        "tokens:\n"
        f"  - {{name: dashboards, sha256: {hash_token(TOKENS['viewer'])}, role: viewer}}\n"
        f"  - {{name: deployer, sha256: {hash_token(TOKENS['operator'])}, role: operator}}\n"
        f"  - {{name: root, sha256: {hash_token(TOKENS['admin'])}, role: admin}}\n"
        f"  - name: team-a-ci\n    sha256: {hash_token(TOKENS['team-a'])}\n"
        "    role: operator\n    namespaces: [team-a]\n    providers: [memory]\n"
    )
    return path


ServerFactory = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
async def make_server(tmp_path: Path) -> AsyncIterator[ServerFactory]:
    started: list[RunningServer] = []

    async def factory(**overrides: object) -> RunningServer:
        running = await start_server(
            settings(tmp_path, **overrides), env={}, registry=make_registry()
        )
        started.append(running)
        return running

    yield factory
    for running in started:
        await running.stop()
