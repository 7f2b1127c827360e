"""StreamLogs against ``tail -F``: one replica writing as fast as it can, one follower.

The real server runs the ``local`` provider; its replica prints the numbers 1..N
(``seq``) after a pause in which both readers attach: a StreamLogs follower, and
``tail -F`` on the replica's log file (the file the server writes and StreamLogs
reads). Each reader's rate is its lines over the time from its first line to its
last. The writer is slowed, never dropped, by the server's capture (its per-replica
rate limit and the pipe); ``tail -F`` keeps up with the file, so its rate is the rate
the lines were written, and the ratio says how far the follower keeps up with it.
The follower's lines must be exactly 1..N in order: none lost, none reordered. N
keeps the file under its rotation size, so ``tail -F`` too sees every line. Beside
them, a bare grpc.aio server streams N prebuilt lines, one message each, read the
same way: the most a follower can get through grpc.aio at one line per message.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm.provider.v1 import types_pb2 as types
from benchmarks.harness import ROOT, server

SERVICE = "logbench"
#: Seconds the replica waits before it writes, while both readers attach.
PAUSE_SECONDS = 3
TIMEOUT_SECONDS = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def local_server(state: str) -> Iterator[str]:
    """alphaswarm-server on the ``local`` provider until the block ends; its address."""
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "ALPHASWARM_CP_STATE_DIR": state,
        "ALPHASWARM_CP_LISTEN": f"127.0.0.1:{port}",
        "ALPHASWARM_CP_PROVIDER": "local",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "alphaswarm_controller"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            ends = time.monotonic() + 60
            while True:
                with contextlib.suppress(grpc.RpcError):
                    reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                if time.monotonic() > ends:
                    raise RuntimeError("the local server never served")
                time.sleep(0.05)
        yield address
    finally:
        process.terminate()  # stops the replica too
        process.wait(30)


class Reader:
    """Counts numbered lines from a thread; remembers when the first and last came and
    whether every number followed the one before it."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.in_order = True
        self.first = 0.0
        self.last = 0.0
        self.done = threading.Event()

    def line(self, number: int) -> None:
        now = time.perf_counter()
        if self.count == 0:
            self.first = now
        self.count += 1
        self.in_order = self.in_order and number == self.count
        self.last = now
        if self.count >= self.total:
            self.done.set()

    @property
    def lines_per_second(self) -> float:
        span = self.last - self.first
        return (self.count - 1) / span if span > 0 else 0.0


def _follow(stub: pb_grpc.ProviderServiceStub, reader: Reader, attached: threading.Event) -> None:
    request = pb.StreamLogsRequest(service_id=SERVICE, follow=True, tail_lines=1)
    stream = stub.StreamLogs(request, timeout=TIMEOUT_SECONDS)
    attached.set()
    with contextlib.suppress(grpc.RpcError):  # cancelled once every line arrived
        for response in stream:
            if response.entry.text.isdigit():
                reader.line(int(response.entry.text))
                if reader.done.is_set():
                    stream.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs: untyped


def _tail(reader: Reader, process: subprocess.Popen[bytes]) -> None:
    assert process.stdout is not None
    for raw in process.stdout:
        # A record: time, pid, stream and flags, then the text (logfiles.py).
        text = raw.rstrip(b"\n").split(b" ", 3)[-1]
        if text.isdigit():
            reader.line(int(text))
            if reader.done.is_set():
                return


def bare(lines: int) -> float:
    """Lines a second from a bare grpc.aio server streaming ``lines`` prebuilt ones, read
    the same way: what one message per line costs grpc itself."""
    with server("bare") as target, grpc.insecure_channel(target.address) as channel:
        reader = Reader(lines)
        stub = pb_grpc.ProviderServiceStub(channel)
        for response in stub.StreamLogs(pb.StreamLogsRequest(tail_lines=lines), timeout=120):
            reader.line(int(response.entry.text))
    return reader.lines_per_second


def run(lines: int) -> dict[str, float]:
    with (
        tempfile.TemporaryDirectory() as state,
        local_server(state) as address,
        grpc.insecure_channel(address) as channel,
    ):
        stub = pb_grpc.ProviderServiceStub(channel)
        spec = types.DeploymentSpec(
            service_id=SERVICE,
            command=["/bin/sh", "-c", f"sleep {PAUSE_SECONDS}; exec seq 1 {lines}"],
            replicas=1,
        )
        stub.StartDeployment(pb.StartDeploymentRequest(spec=spec), timeout=60)
        # Made at the replica's first line: tail -F waits for it (--retry).
        log_file = Path(state, "local", "logs", "default", SERVICE, "0.log")
        follower, tailer = Reader(lines), Reader(lines)
        attached = threading.Event()
        tail = subprocess.Popen(
            ["tail", "-F", "-n", "+1", str(log_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        threads = [
            threading.Thread(target=_follow, args=(stub, follower, attached), daemon=True),
            threading.Thread(target=_tail, args=(tailer, tail), daemon=True),
        ]
        try:
            for thread in threads:
                thread.start()
            attached.wait(10)
            for reader in (follower, tailer):
                if not reader.done.wait(TIMEOUT_SECONDS):
                    raise RuntimeError(f"{reader.count} of {lines} lines arrived")
        finally:
            tail.kill()
            tail.wait()
        for thread in threads:
            thread.join(10)
        stub.StopDeployment(pb.StopDeploymentRequest(service_id=SERVICE), timeout=60)
    return {
        "lines": lines,
        "follower_lines_per_second": follower.lines_per_second,
        "tail_lines_per_second": tailer.lines_per_second,
        "follower_in_order": float(follower.in_order and follower.count == lines),
        "tail_in_order": float(tailer.in_order and tailer.count == lines),
        "bare_grpc_lines_per_second": bare(lines),
    }


if __name__ == "__main__":
    print(run(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000))
