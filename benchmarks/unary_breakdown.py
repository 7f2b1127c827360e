"""Where a unary call's server CPU goes: the bare server plus one step of the full
server's per-call work at a time, beside the bare server and the full server.

``python -m benchmarks.unary_breakdown`` runs every variant at once and loads them in
turns (alternating bursts, as benchmarks/unary.py does), then prints, per variant, its
throughput and server CPU per call beside the bare server's, and the part of that CPU
spent on the event loop's thread (the rest is grpc's event-engine threads). Each variant
is benchmarks/servers.py's bare server (health, reflection, the same response bytes)
whose GetDeploymentStatus first does one step:

- ``call-setup``: the full server's ``CallSetup.begin`` (reads the metadata for an
  x-request-id, the peer and the deadline, sets the x-request-id trailer);
- ``status``: fetches the status from the in-memory provider;
- ``convert``: converts a status fetched once to its message, and answers with it;
- ``status+convert``: both, what the servicer does for the call without the layers.

Last it compares what ``status+convert`` costs in a tight loop in this process with what
it costs inside the serving handler (the loop thread's CPU clock around it). The
README's "Unary overhead" paragraph quotes this output. Not part of ``python -m
benchmarks``: it explains a figure of the table rather than measuring one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, ExitStack
from typing import Any

import grpc

from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from benchmarks import unary
from benchmarks.harness import ServerUnderTest, server, server_process
from benchmarks.servers import _seed, serve_bare

STEPS = ("call-setup", "status", "convert", "status+convert")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


async def _serve(step: str) -> None:
    """The bare server with ``step`` before each answer; on SIGTERM, prints the handler
    CPU the step took per call (``status+convert`` only) and stops."""
    from alphaswarm.provider.v1 import provider_service_pb2 as pb
    from alphaswarm_controller.convert import status_to_proto
    from alphaswarm_controller.layers import CallSetup
    from alphaswarm_controller.methods import method_table
    from alphaswarm_core.call import ANONYMOUS
    from tests.fakes.memory_provider import MemoryProvider

    provider = MemoryProvider(env={})
    await provider.open()
    await _seed(provider, 1)
    status = await provider.status("svc-0")
    answer = pb.GetDeploymentStatusResponse(status=status_to_proto(status, ANONYMOUS))
    method = method_table()["/alphaswarm.provider.v1.ProviderService/GetDeploymentStatus"]
    setup = CallSetup(120.0)
    spent = [0.0, 0]

    async def status_and_convert() -> Any:
        started = time.thread_time()
        fetched = await provider.status("svc-0")
        message = status_to_proto(fetched, ANONYMOUS)
        spent[0] += time.thread_time() - started
        spent[1] += 1
        return pb.GetDeploymentStatusResponse(status=message)

    async def fetch() -> Any:
        await provider.status("svc-0")
        return answer

    async def convert() -> Any:
        return pb.GetDeploymentStatusResponse(status=status_to_proto(status, ANONYMOUS))

    async def nothing() -> Any:
        return answer

    do: Callable[[], Awaitable[Any]] = {
        "status": fetch,
        "convert": convert,
        "status+convert": status_and_convert,
    }.get(step, nothing)

    class Variant(pb_grpc.ProviderServiceServicer):
        async def GetDeploymentStatus(self, request: Any, context: Any) -> Any:
            if step == "call-setup":
                setup.begin(method, context)
            return await do()

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await serve_bare(Variant(), until=stop)  # type: ignore[abstract]
    print(json.dumps({"handler_us": spent[0] / max(1, spent[1]) * 1e6}), flush=True)


def _variant(step: str) -> AbstractContextManager[ServerUnderTest]:
    return server_process(["benchmarks.unary_breakdown", "--serve", step], step)


def _handler_us(target: ServerUnderTest) -> float:
    """What the variant printed when it stopped (call after its block ended)."""
    assert target.process.stdout is not None
    for line in target.process.stdout:
        return float(json.loads(line)["handler_us"])
    return float("nan")


def _loop_thread_seconds(pid: int) -> float:
    """CPU of the process's main thread (its event loop), from /proc."""
    with open(f"/proc/{pid}/task/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def _load(
    targets: dict[str, ServerUnderTest], concurrency: int, seconds: float, rounds: int
) -> dict[str, tuple[dict[str, float], float]]:
    channels = {name: grpc.aio.insecure_channel(t.address) for name, t in targets.items()}
    try:
        stubs = {name: pb_grpc.ProviderServiceStub(c) for name, c in channels.items()}
        for stub in stubs.values():
            for _ in range(200):  # warm up connection and caches
                await stub.GetDeploymentStatus(unary.REQUEST)
        tallies = {name: unary._Tally() for name in targets}
        loop_seconds = dict.fromkeys(targets, 0.0)
        order = list(targets)
        for _ in range(rounds):
            for name in order:
                pid = targets[name].process.pid
                before = _loop_thread_seconds(pid)
                await unary._burst(
                    targets[name], stubs[name], concurrency, seconds / rounds, tallies[name]
                )
                loop_seconds[name] += _loop_thread_seconds(pid) - before
            order.reverse()
    finally:
        for channel in channels.values():
            await channel.close(None)
    return {
        name: (tally.summary(), loop_seconds[name] / max(1, len(tally.latencies)) * 1e6)
        for name, tally in tallies.items()
    }


async def _tight_loop_us(calls: int = 20_000) -> float:
    """``status+convert`` called back to back in this process: CPU per call."""
    from alphaswarm_controller.convert import status_to_proto
    from alphaswarm_core.call import ANONYMOUS
    from tests.fakes.memory_provider import MemoryProvider

    provider = MemoryProvider(env={})
    await provider.open()
    await _seed(provider, 1)
    started = time.thread_time()
    for _ in range(calls):
        status_to_proto(await provider.status("svc-0"), ANONYMOUS)
    return (time.thread_time() - started) / calls * 1e6


def run(seconds: float, concurrency: int, rounds: int) -> None:
    with ExitStack() as stack:
        targets = {"bare": stack.enter_context(_variant("bare"))}
        for step in STEPS:
            targets[step] = stack.enter_context(_variant(step))
        targets["full"] = stack.enter_context(server("full"))
        results = asyncio.run(_load(targets, concurrency, seconds, rounds))
    bare, _ = results["bare"]
    header = ("server", "calls/s", "ratio", "CPU/call", "ratio", "loop thread")
    print("{:16} {:>8} {:>6} {:>9} {:>6} {:>12}".format(*header))
    for name, (summary, loop_us) in results.items():
        cpu = summary["server_cpu_per_call_us"]
        print(
            f"{name:16} {summary['calls_per_second']:8.0f} "
            f"{summary['calls_per_second'] / bare['calls_per_second']:6.2f} "
            f"{cpu:7.0f}us {cpu / bare['server_cpu_per_call_us']:6.2f} {loop_us:10.0f}us"
        )
    in_handler = _handler_us(targets["status+convert"])
    tight = asyncio.run(_tight_loop_us())
    print(
        f"status+convert: {tight:.1f} us of CPU per call in a tight loop, "
        f"{in_handler:.1f} us inside the serving handler ({in_handler / tight:.1f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", choices=("bare", *STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=16.0, help="load per server")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve))
    else:
        run(args.seconds, args.concurrency, args.rounds)


if __name__ == "__main__":
    main()
