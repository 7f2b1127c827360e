"""Servers under measurement, each run in its own process (``python -m benchmarks.servers``).

``full``: the real alphaswarm server (layers, validation, registry, conversion,
health, reflection) over the in-memory provider, with ``--services`` deployments
of 2 replicas. ``bare``: a plain grpc.aio server with health and reflection whose
GetDeploymentStatus answers a prebuilt message from memory: the same response
bytes the full server sends for ``svc-0`` (built once, the same way), so that the
comparison is of the serving, not of the payload; its StreamMetrics sends one
sample and then holds the stream open, idle; its StreamLogs sends ``tail_lines``
numbered lines as fast as it can. Both print ``PORT <n>`` when serving.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


async def _seed(provider: Any, services: int) -> None:
    from alphaswarm_core.providers.models import DeploymentSpec

    for index in range(services):
        spec = DeploymentSpec(f"svc-{index}", command=("sleep", "1"), replicas=2)
        await provider.start(spec)


async def run_full(services: int, state_dir: str) -> None:
    from alphaswarm_controller.server import start_server
    from alphaswarm_controller.settings import ServerSettings
    from alphaswarm_core.providers.registry import Registry
    from tests.fakes.memory_provider import MemoryProvider

    registry = Registry(builtins=())
    registry.register("memory", MemoryProvider)
    settings = ServerSettings.from_env(
        {
            "ALPHASWARM_CP_LISTEN": "127.0.0.1:0",
            "ALPHASWARM_CP_PROVIDER": "memory",
            "ALPHASWARM_CP_STATE_DIR": state_dir,
            "ALPHASWARM_CP_LOG_LEVEL": "WARNING",
        }
    )
    running = await start_server(settings, env={}, registry=registry)
    await _seed(await running.pool.get("memory"), services)
    print(f"PORT {running.port}", flush=True)
    await running.server.wait_for_termination()


async def run_bare() -> None:
    from alphaswarm.provider.v1 import provider_service_pb2 as pb
    from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
    from alphaswarm.provider.v1 import types_pb2 as types
    from alphaswarm_controller.convert import status_to_proto
    from alphaswarm_core.call import ANONYMOUS
    from tests.fakes.memory_provider import MemoryProvider

    provider = MemoryProvider(env={})
    await provider.open()
    await _seed(provider, 1)
    status = await provider.status("svc-0")
    answer = pb.GetDeploymentStatusResponse(status=status_to_proto(status, ANONYMOUS))

    sample = pb.StreamMetricsResponse()
    sample.sample.extra["poll"] = 1
    forever = asyncio.Event()

    class Bare(pb_grpc.ProviderServiceServicer):
        async def GetDeploymentStatus(self, request: Any, context: Any) -> Any:
            return answer

        async def StreamLogs(self, request: Any, context: Any) -> Any:
            # One message per line, as fast as grpc.aio sends them: tail_lines of them.
            entry = types.LogEntry(instance_id="logbench-0", stream=types.LOG_STREAM_STDOUT)
            entry.time.GetCurrentTime()
            for number in range(1, request.tail_lines + 1):
                entry.text = str(number)
                yield pb.StreamLogsResponse(entry=entry)

        async def StreamMetrics(self, request: Any, context: Any) -> Any:
            # What an idle stream costs grpc.aio itself: one sample, then nothing.
            yield sample
            await forever.wait()

    await serve_bare(Bare())  # type: ignore[abstract]


async def serve_bare(servicer: Any, until: asyncio.Event | None = None) -> None:
    """A plain grpc.aio server of ``servicer`` with health and reflection; prints its port
    and serves until terminated (or until ``until`` is set, then stops)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_health.v1._async import HealthServicer
    from grpc_reflection.v1alpha import reflection

    from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc

    server = grpc.aio.server()
    pb_grpc.add_ProviderServiceServicer_to_server(servicer, server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (
            "alphaswarm.provider.v1.ProviderService",
            "grpc.health.v1.Health",
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    print(f"PORT {port}", flush=True)
    if until is None:
        await server.wait_for_termination()
    else:
        await until.wait()
        await server.stop(None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["full", "bare"])
    parser.add_argument("--services", type=int, default=1)
    parser.add_argument("--state-dir", default="/tmp/alphaswarm-bench-state")
    args = parser.parse_args()
    if args.kind == "full":
        asyncio.run(run_full(args.services, args.state_dir))
    else:
        asyncio.run(run_bare())


if __name__ == "__main__":
    main()
