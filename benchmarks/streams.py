"""Metric fan-out and memory per open stream, against the full server.

Every sample of the in-memory provider carries a provider-wide poll number (the count
of polls it made, across services) and the time of its poll, so the client side can
count how many backend polls served all subscribers: the difference of the last poll
numbers made before each end of the window. Counting the distinct polls whose samples
arrived in the window, as this did before, also counted polls made before it, for
subscribers that far behind (the client falls behind unevenly with thousands of
streams): 1.13-1.25 per service and second arrived where 0.87-1.00 were made, in the
same runs. Samples made in the window are collected for a while after it.

The subscribers are spread over client processes (benchmarks/subscribers.py): one
Python process reads 2,000-4,800 messages a second on a shared core, so a single
one measured itself, not the server.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable

from benchmarks import subscribers
from benchmarks.harness import ROOT, server

#: How long after the window samples made in it are still collected.
DRAIN_SECONDS = 3.0


def _last_poll_before(polls: dict[int, float], moment: float) -> int:
    return max((poll for poll, at in polls.items() if at < moment), default=0)


def fanout(
    services: int, per_service: int, seconds: float, *, processes: int = 1
) -> dict[str, float]:
    """``services`` x ``per_service`` subscribers at a 1 s interval, spread over
    ``processes`` client processes (benchmarks/subscribers.py), each with whole
    services, counted over a ``seconds`` window that begins once all are served."""
    names = [f"svc-{i}" for i in range(services)]
    shares = [names[i::processes] for i in range(processes) if names[i::processes]]
    # Opening thousands of streams takes a few seconds on a loaded machine.
    settle = 3.0 + services * per_service / 1000
    with server("full", services=services) as target:
        window_start = time.time() + settle
        window_end = window_start + seconds
        until = window_end + DRAIN_SECONDS
        clients = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.subscribers",
                    target.address,
                    "--services",
                    ",".join(share),
                    "--per-service",
                    str(per_service),
                    "--window-start",
                    repr(window_start),
                    "--window-end",
                    repr(window_end),
                    "--until",
                    repr(until),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            for share in shares
        ]
        try:
            time.sleep(max(0.0, window_start - time.time()))
            cpu_before, rss_before = target.cpu_seconds(), target.rss()
            time.sleep(max(0.0, window_end - time.time()))
            cpu = target.cpu_seconds() - cpu_before
            rss_after = target.rss()
            outputs = [
                client.communicate(timeout=until - time.time() + 60)[0] for client in clients
            ]
        finally:
            for client in clients:
                if client.poll() is None:
                    client.kill()
                    client.wait()
    if any(client.returncode for client in clients):
        raise RuntimeError(f"a subscriber process failed: {[c.returncode for c in clients]}")
    reports = [json.loads(output) for output in outputs]
    polls = {int(n): at for report in reports for n, at in report["polls"].items()}
    # Poll numbers count every poll the provider made, delivered or not (a subscriber
    # far behind drops the oldest samples): the last number before each end of the
    # window tells how many were made within it.
    made = _last_poll_before(polls, window_end) - _last_poll_before(polls, window_start)
    return {
        "subscribers": services * per_service,
        "client_processes": len(shares),
        "polls_per_interval": made / seconds,
        "messages_per_second": sum(r["delivered"] for r in reports) / seconds,
        "server_cpu_cores": cpu / seconds,
        "server_rss_per_stream_kib": (rss_after - rss_before) / 1024 / (services * per_service),
    }


async def _idle(address: str, streams: int, measure: Callable[[], None]) -> None:
    channels = subscribers.channels_for(address, streams)
    request = subscribers.request("svc-0", 3600)  # after the latest sample, an hour of quiet
    arrived = subscribers.Tally(0.0, math.inf)
    tasks = [
        asyncio.create_task(
            subscribers.subscribe(channels[i % len(channels)], request, arrived, probe=False)
        )
        for i in range(streams)
    ]
    # Each stream got its first (latest) sample: all are open.
    while arrived.delivered < streams:  # noqa: ASYNC110 - counting arrivals from many tasks
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    measure()
    await subscribers.stop(tasks, channels)


def idle_stream_memory(streams: int, kind: str = "full") -> dict[str, float]:
    """RSS per idle stream of the ``full`` server, or of the ``bare`` grpc.aio one."""
    with server(kind) as target:
        before = target.rss()
        after: list[int] = []
        asyncio.run(_idle(target.address, streams, lambda: after.append(target.rss())))
    return {"streams": streams, "rss_per_stream_kib": (after[0] - before) / 1024 / streams}
