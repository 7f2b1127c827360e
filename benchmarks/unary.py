"""Unary overhead: GetDeploymentStatus through the full server vs a bare grpc.aio server."""

from __future__ import annotations

import asyncio

import grpc

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from benchmarks.harness import ServerUnderTest, now, percentile, server


async def load(target: ServerUnderTest, concurrency: int, seconds: float) -> dict[str, float]:
    """``concurrency`` callers issuing calls back to back for ``seconds``."""
    request = pb.GetDeploymentStatusRequest(service_id="svc-0")
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target.address) as channel:
        stub = pb_grpc.ProviderServiceStub(channel)
        for _ in range(50):  # warm up connection and caches
            await stub.GetDeploymentStatus(request)
        stop_at = now() + seconds

        async def caller() -> None:
            nonlocal errors
            while now() < stop_at:
                started = now()
                try:
                    await stub.GetDeploymentStatus(request, timeout=10)
                except grpc.aio.AioRpcError:
                    errors += 1
                latencies.append(now() - started)

        cpu_before = target.cpu_seconds()
        started = now()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = now() - started
        cpu = target.cpu_seconds() - cpu_before
    return {
        "calls_per_second": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "errors": errors,
        "server_cpu_per_call_us": cpu / max(1, len(latencies)) * 1e6,
    }


def run(seconds: float = 5.0, concurrency: int = 32) -> dict[str, dict[str, float]]:
    results = {}
    for kind in ("bare", "full"):
        with server(kind) as target:
            results[kind] = asyncio.run(load(target, concurrency, seconds))
    return results
