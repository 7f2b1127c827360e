"""One process of metric subscribers (``python -m benchmarks.subscribers``).

The fan-out benchmark spreads its subscribers over several of these, so that what
it measures is the server, not one client process reading thousands of messages
a second. Messages are counted as raw bytes, unparsed; one subscriber per service
(its probe) parses its samples for their poll numbers and times. All processes
count within the same wall-clock window, given by the parent. Prints one JSON
object: ``delivered`` (messages that arrived in the window) and ``polls`` (poll
number -> time the provider made it, from the probes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time

import grpc

from alphaswarm.provider.v1 import provider_service_pb2 as pb

METHOD = "/alphaswarm.provider.v1.ProviderService/StreamMetrics"
# Channels to one address share a connection unless told otherwise, and one
# connection carries at most ALPHASWARM_CP_MAX_STREAMS_PER_CONNECTION streams.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
STREAMS_PER_CONNECTION = 500


class Tally:
    def __init__(self, window_start: float, window_end: float) -> None:
        self.window = (window_start, window_end)
        self.delivered = 0
        self.polls: dict[int, float] = {}

    def arrived(self) -> None:
        if self.window[0] <= time.time() < self.window[1]:
            self.delivered += 1


async def subscribe(
    channel: grpc.aio.Channel, request: bytes, tally: Tally, *, probe: bool
) -> None:
    """One subscriber. gRPC's client cancels a few streams of a burst of thousands
    before they start (seen with a bare grpc.aio server too): those re-subscribe."""
    call = channel.unary_stream(METHOD, None, None)  # no serializers: bytes in, bytes out
    received = False
    while not received:
        try:
            async for raw in call(request):
                received = True
                tally.arrived()
                if probe:
                    sample = pb.StreamMetricsResponse.FromString(raw).sample
                    made = sample.timestamp
                    tally.polls[int(sample.extra["poll"])] = made.seconds + made.nanos / 1e9
            return
        except grpc.aio.AioRpcError as error:
            if error.code() is not grpc.StatusCode.CANCELLED:
                raise
            await asyncio.sleep(0.1)


def request(service_id: str, interval_seconds: int) -> bytes:
    message = pb.StreamMetricsRequest(service_id=service_id)
    message.interval.FromSeconds(interval_seconds)
    return message.SerializeToString()


def channels_for(address: str, streams: int) -> list[grpc.aio.Channel]:
    count = max(1, -(-streams // STREAMS_PER_CONNECTION))
    return [grpc.aio.insecure_channel(address, options=OWN_CONNECTION) for _ in range(count)]


async def stop(tasks: list[asyncio.Task[None]], channels: list[grpc.aio.Channel]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for channel in channels:
        await channel.close(None)


async def run(
    address: str, services: list[str], per_service: int, window: tuple[float, float], until: float
) -> Tally:
    tally = Tally(*window)
    subscribers = [(s, n == 0) for n in range(per_service) for s in services]
    channels = channels_for(address, len(subscribers))
    requests = {service: request(service, 1) for service in services}
    tasks = [
        asyncio.create_task(
            subscribe(channels[i % len(channels)], requests[service], tally, probe=probe)
        )
        for i, (service, probe) in enumerate(subscribers)
    ]
    await asyncio.sleep(max(0.0, until - time.time()))
    await stop(tasks, channels)
    return tally


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("--services", required=True, help="comma-separated service ids")
    parser.add_argument("--per-service", type=int, required=True)
    parser.add_argument("--window-start", type=float, required=True, help="wall clock, s")
    parser.add_argument("--window-end", type=float, required=True)
    parser.add_argument("--until", type=float, required=True, help="wall clock: stop then")
    args = parser.parse_args()
    tally = asyncio.run(
        run(
            args.address,
            args.services.split(","),
            args.per_service,
            (args.window_start, args.window_end),
            args.until,
        )
    )
    print(json.dumps({"delivered": tally.delivered, "polls": tally.polls}), flush=True)


if __name__ == "__main__":
    main()
