"""Nothing blocks the server's event loop: probes keep passing while providers load.

The first ListProviders imports every installed provider's module and SDK. Done
on the event loop, it stalled every other call: on a slow disk a health Check
sent meanwhile took 3.4 s, so a probe with a 1 s timeout failed. Here the built-in
providers load in under a second, so a third-party provider (installed the way
users install one: an ``alphaswarm.providers`` entry point) whose import takes
6 s stands in for a slow SDK. A probe may take 3 s: a loaded two-core machine can
hold a probe back a while, a blocked loop holds it for the whole import.
"""

from __future__ import annotations

import asyncio
import os
import textwrap
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm_core.providers.registry import BUILTIN_PROVIDERS
from tests.e2e.server_process import start_server

pytestmark = pytest.mark.e2e

PROBE_TIMEOUT = 3.0
SLOW_IMPORT_SECONDS = 6.0
ROOT = Path(__file__).resolve().parents[2]


def install_slow_provider(site: Path) -> None:
    """A provider package whose module takes ``SLOW_IMPORT_SECONDS`` to import."""
    site.mkdir()
    (site / "slow_provider.py").write_text(
        textwrap.dedent(f"""
        import time

        from tests.fakes.memory_provider import MemoryProvider

        time.sleep({SLOW_IMPORT_SECONDS})  # a large SDK on a cold disk

        class SlowProvider(MemoryProvider):
            provider_kind = "slow"
            provider_alias = "slow"
        """)
    )
    dist = site / "slow_provider-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: slow-provider\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[alphaswarm.providers]\nslow = slow_provider:SlowProvider\n"
    )


async def probe_until(done: asyncio.Event, health: health_pb2_grpc.HealthStub) -> list[str]:
    """Health Checks with a 1 s deadline, back to back, until ``done``; their outcomes."""
    outcomes = []
    while not done.is_set():
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=PROBE_TIMEOUT)
            outcomes.append(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
        except grpc.aio.AioRpcError as error:
            outcomes.append(error.code().name)
        await asyncio.sleep(0.02)
    return outcomes


async def test_probes_pass_while_list_providers_loads_every_provider(tmp_path: Path) -> None:
    install_slow_provider(tmp_path / "site")
    path = os.pathsep.join([str(tmp_path / "site"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    running = start_server(tmp_path / "state", {"PYTHONPATH": path})
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            stub = pb_grpc.ProviderServiceStub(channel)
            assert (await health.Check(health_pb2.HealthCheckRequest(), timeout=30)).status
            done = asyncio.Event()
            probes = asyncio.create_task(probe_until(done, health))
            try:
                listed = await stub.ListProviders(pb.ListProvidersRequest(), timeout=120)
            finally:
                done.set()
            outcomes = await probes
        # Every provider was loaded (its module and SDK imported): the load really happened.
        installed = {info.alias for info in listed.providers if info.installed}
        assert installed >= {"slow", *(entry.alias for entry in BUILTIN_PROVIDERS)}, listed
        # Probes ran throughout the load (6 s of it at least), and every one passed.
        assert len(outcomes) >= 2 and set(outcomes) == {"SERVING"}, outcomes
        assert running.terminate() == 0, running.log
    finally:
        running.kill()
