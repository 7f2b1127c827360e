"""An in-process server over the in-memory provider, for testing the client over real gRPC.

The client is tested here against the real servicer and error-mapping layer
(the same code ``alphaswarm-server`` runs), with ``MemoryProvider`` in place of a
backend so each error can be provoked on demand; tests/e2e drives the real
server process on the ``local`` provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from alphaswarm_client import AlphaswarmClient
from alphaswarm_controller.server import RunningServer, start_server
from alphaswarm_controller.settings import ServerSettings
from alphaswarm_core.providers.registry import Registry
from tests.fakes.memory_provider import ConfiglessProvider, MemoryProvider, PlainProvider


@dataclass
class InProcess:
    running: RunningServer
    client: AlphaswarmClient

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    async def memory(self) -> MemoryProvider:
        instance = await self.running.pool.get("memory")
        assert isinstance(instance, MemoryProvider)
        return instance


@pytest.fixture
async def inproc(tmp_path: Path) -> AsyncIterator[InProcess]:
    registry = Registry(builtins=())
    registry.register("memory", MemoryProvider)
    registry.register("configless", ConfiglessProvider)
    registry.register("plain", PlainProvider)
    # From an environment, so settings added to the server later keep their defaults.
    settings = ServerSettings.from_env(
        {
            "ALPHASWARM_CP_LISTEN": "127.0.0.1:0",
            "ALPHASWARM_CP_PROVIDER": "memory",
            "ALPHASWARM_CP_STATE_DIR": str(tmp_path),
            "ALPHASWARM_CP_SHUTDOWN_GRACE_SECONDS": "2",
            "ALPHASWARM_CP_CALL_TIMEOUT_SECONDS": "5",
            "ALPHASWARM_CP_HEALTH_INTERVAL_SECONDS": "60",
        }
    )
    running = await start_server(settings, env={}, registry=registry)
    try:
        async with AlphaswarmClient(f"127.0.0.1:{running.port}", timeout=10.0) as client:
            yield InProcess(running, client)
    finally:
        await running.stop()
