"""An in-process server on port 0 over a registry of in-memory providers."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm_controller.server import RunningServer, start_server
from alphaswarm_controller.settings import ServerSettings
from alphaswarm_core.providers.registry import LazyProvider, Registry
from tests.fakes.memory_provider import ConfiglessProvider, MemoryProvider, PlainProvider


@dataclass
class Harness:
    running: RunningServer
    channel: grpc.aio.Channel
    stub: pb_grpc.ProviderServiceAsyncStub

    async def provider(self, alias: str = "memory") -> MemoryProvider:
        instance = await self.running.pool.get(alias)
        assert isinstance(instance, MemoryProvider)
        return instance


def make_registry() -> Registry:
    registry = Registry(builtins=())
    registry.register("memory", MemoryProvider)
    registry.register("configless", ConfiglessProvider)
    registry.register("plain", PlainProvider)
    registry.register_lazy(
        LazyProvider(
            "ghost",
            "ghost_provider_module:GhostProvider",
            kind="ghost",
            extra="ghost",
            sdk_modules=("no_such_sdk_module_for_tests",),
        )
    )
    return registry


def settings(tmp_path: Path, **overrides: object) -> ServerSettings:
    base = ServerSettings(
        listen="127.0.0.1:0",
        default_provider="memory",
        providers=("memory",),
        state_dir=tmp_path,
        reflection="on",
        shutdown_grace_seconds=5.0,
        call_timeout_seconds=5.0,
        health_interval_seconds=60.0,
        log_level="INFO",
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    running = await start_server(settings(tmp_path), env={}, registry=make_registry())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        yield Harness(running, channel, pb_grpc.ProviderServiceStub(channel))
    finally:
        await channel.close(None)
        await running.stop()
