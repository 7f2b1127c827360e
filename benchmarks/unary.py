"""Unary overhead: GetDeploymentStatus through the full server vs a bare grpc.aio server.

Both servers run at once and take the load in turns (short bursts, alternating which
goes first), so that what else runs on the machine weighs on both alike; each figure
sums its server's bursts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from benchmarks.harness import ServerUnderTest, now, percentile, server

REQUEST = pb.GetDeploymentStatusRequest(service_id="svc-0")


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    def summary(self) -> dict[str, float]:
        calls = len(self.latencies)
        return {
            "calls_per_second": calls / self.seconds,
            "p50_ms": percentile(self.latencies, 0.50) * 1000,
            "p99_ms": percentile(self.latencies, 0.99) * 1000,
            "errors": self.errors,
            "server_cpu_per_call_us": self.cpu_seconds / max(1, calls) * 1e6,
        }


async def _burst(
    target: ServerUnderTest,
    stub: pb_grpc.ProviderServiceAsyncStub,
    concurrency: int,
    seconds: float,
    tally: _Tally,
) -> None:
    """``concurrency`` callers issuing calls back to back for ``seconds``."""
    stop_at = now() + seconds

    async def caller() -> None:
        while now() < stop_at:
            started = now()
            try:
                await stub.GetDeploymentStatus(REQUEST, timeout=10)
            except grpc.aio.AioRpcError:
                tally.errors += 1
            tally.latencies.append(now() - started)

    cpu_before = target.cpu_seconds()
    started = now()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    tally.seconds += now() - started
    tally.cpu_seconds += target.cpu_seconds() - cpu_before


async def load(
    targets: dict[str, ServerUnderTest], concurrency: int, seconds: float, rounds: int
) -> dict[str, dict[str, float]]:
    """Each target under load for ``seconds`` in all, in ``rounds`` alternating bursts."""
    channels = {kind: grpc.aio.insecure_channel(t.address) for kind, t in targets.items()}
    try:
        stubs = {kind: pb_grpc.ProviderServiceStub(c) for kind, c in channels.items()}
        for stub in stubs.values():
            for _ in range(50):  # warm up connection and caches
                await stub.GetDeploymentStatus(REQUEST)
        tallies = {kind: _Tally() for kind in targets}
        order = list(targets)
        for _ in range(rounds):
            for kind in order:
                await _burst(
                    targets[kind], stubs[kind], concurrency, seconds / rounds, tallies[kind]
                )
            order.reverse()
    finally:
        for channel in channels.values():
            await channel.close(None)
    return {kind: tally.summary() for kind, tally in tallies.items()}


def run(
    seconds: float = 5.0, concurrency: int = 32, rounds: int = 8
) -> dict[str, dict[str, float]]:
    with server("bare") as bare, server("full") as full:
        return asyncio.run(load({"bare": bare, "full": full}, concurrency, seconds, rounds))
