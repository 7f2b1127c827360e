"""Mixed load against the real server on the `local` provider, for a bounded time.

``python -m benchmarks.load [--seconds 150] [--clients 16] [--streams 50]``

Clients issue reads (GetDeploymentStatus, ListDeployments), scales (between 1
and 3 replicas of a few ``sleep`` services) and keep metric streams open. It
reports throughput, p50/p99 per kind and errors, and samples the server's RSS
and open file descriptors every few seconds: the first minute's averages are
compared with the last minute's (with a short run, the first and last third).
Traffic goes only to 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import grpc
import psutil

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm.provider.v1 import types_pb2 as types
from benchmarks.harness import now, percentile

SERVICES = 4
MARKER = "ALPHASWARM_LOAD_MARKER"


async def _client(
    stub: pb_grpc.ProviderServiceAsyncStub,
    stop_at: float,
    latencies: dict[str, list[float]],
    errors: dict[str, int],
    rng: random.Random,
) -> None:
    while now() < stop_at:
        service = f"svc-{rng.randrange(SERVICES)}"
        roll = rng.random()
        call: Any
        if roll < 0.6:
            kind, call = (
                "status",
                stub.GetDeploymentStatus(
                    pb.GetDeploymentStatusRequest(service_id=service, namespace="load"), timeout=30
                ),
            )
        elif roll < 0.9:
            kind, call = (
                "list",
                stub.ListDeployments(pb.ListDeploymentsRequest(namespace="load"), timeout=30),
            )
        else:
            kind, call = (
                "scale",
                stub.ScaleDeployment(
                    pb.ScaleDeploymentRequest(
                        service_id=service, namespace="load", replicas=rng.randint(1, 3)
                    ),
                    timeout=60,
                ),
            )
        started = now()
        try:
            await call
        except grpc.aio.AioRpcError as error:
            errors[f"{kind}:{error.code().name}"] = errors.get(f"{kind}:{error.code().name}", 0) + 1
        latencies.setdefault(kind, []).append(now() - started)


async def _stream(stub: pb_grpc.ProviderServiceAsyncStub, index: int, counter: list[int]) -> None:
    request = pb.StreamMetricsRequest(service_id=f"svc-{index % SERVICES}", namespace="load")
    request.interval.FromMilliseconds(1000)
    with contextlib.suppress(grpc.aio.AioRpcError):
        async for _ in stub.StreamMetrics(request):
            counter[0] += 1


async def _sample(process: psutil.Process, stop_at: float, every: float) -> list[dict[str, float]]:
    samples = []
    while now() < stop_at:
        samples.append(
            {"t": now(), "rss": float(process.memory_info().rss), "fds": float(process.num_fds())}
        )
        await asyncio.sleep(every)
    return samples


async def run(address: str, pid: int, seconds: float, clients: int, streams: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.ProviderServiceStub(channel)
        for index in range(SERVICES):
            await stub.StartDeployment(
                pb.StartDeploymentRequest(
                    spec=types.DeploymentSpec(
                        service_id=f"svc-{index}",
                        namespace="load",
                        command=["sleep", "600"],
                        replicas=1,
                        env={MARKER: tag},
                    )
                )
            )
        latencies: dict[str, list[float]] = {}
        errors: dict[str, int] = {}
        delivered = [0]
        stream_tasks = [asyncio.create_task(_stream(stub, i, delivered)) for i in range(streams)]
        started = now()
        stop_at = started + seconds
        sampler = asyncio.create_task(
            _sample(psutil.Process(pid), stop_at, max(1.0, min(5.0, seconds / 12)))
        )
        await asyncio.gather(
            *(_client(stub, stop_at, latencies, errors, random.Random(i)) for i in range(clients))
        )
        samples = await sampler
        for task in stream_tasks:
            task.cancel()
        await asyncio.gather(*stream_tasks, return_exceptions=True)
        for index in range(SERVICES):
            await stub.StopDeployment(
                pb.StopDeploymentRequest(service_id=f"svc-{index}", namespace="load")
            )
    window = 60.0 if seconds >= 150 else seconds / 3
    first = [s for s in samples if s["t"] - started <= window]
    last = [s for s in samples if s["t"] >= stop_at - window]

    def mean(rows: list[dict[str, float]], key: str) -> float:
        return sum(r[key] for r in rows) / max(1, len(rows))

    calls = sum(len(v) for v in latencies.values())
    return {
        "seconds": seconds,
        "clients": clients,
        "streams": streams,
        "calls": calls,
        "calls_per_second": calls / seconds,
        "stream_messages": delivered[0],
        "errors": errors,
        "latency_ms": {
            kind: {"p50": percentile(v, 0.5) * 1000, "p99": percentile(v, 0.99) * 1000}
            for kind, v in sorted(latencies.items())
        },
        "window_seconds": window,
        "rss_first_mib": mean(first, "rss") / 2**20,
        "rss_last_mib": mean(last, "rss") / 2**20,
        "fds_first": mean(first, "fds"),
        "fds_last": mean(last, "fds"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from tests.e2e.server_process import start_server

    with tempfile.TemporaryDirectory() as state:
        server = start_server(Path(state))
        try:
            report = asyncio.run(
                run(server.address, server.process.pid, args.seconds, args.clients, args.streams)
            )
        finally:
            code = server.terminate()
    report["server_exit_code"] = code
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0 if not report["errors"] and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
