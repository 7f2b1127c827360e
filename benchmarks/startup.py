"""Start-up: process start to SERVING on grpc.health.v1, alphaswarm-server vs a bare server.

Both start as installed: with their modules' bytecode cached (pip compiles it when it
installs a package). A development environment may set PYTHONDONTWRITEBYTECODE (this
machine's does) and run the server from the source tree: each start would then compile
every module of the server from source while the bare server's packages come compiled
from site-packages, a difference of ~100 ms that says nothing of the server. So both run
with a bytecode cache of their own (PYTHONPYCACHEPREFIX, a temporary directory), filled
by one untimed start of each.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.harness import ROOT, median


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _time_to_serving(command: list[str], port: int, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds from process start to the first SERVING answer, and the CPU seconds
    the process had used by then (less disturbed by other work on the machine)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        # Short reconnect backoff: the default (1 s) would dominate what is measured.
        options = [
            ("grpc.initial_reconnect_backoff_ms", 5),
            ("grpc.min_reconnect_backoff_ms", 5),
            ("grpc.max_reconnect_backoff_ms", 10),
        ]
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        wall = time.perf_counter() - started
                        cpu = psutil.Process(process.pid).cpu_times()
                        return wall, cpu.user + cpu.system
                except grpc.RpcError:
                    time.sleep(0.005)
                if time.perf_counter() - started > 30:
                    raise RuntimeError(f"{command} never served")
    finally:
        process.terminate()
        process.wait(15)


def run(rounds: int = 5) -> dict[str, float]:
    full: list[tuple[float, float]] = []
    bare: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as cache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = cache
        _full_time(env), _bare_time(env)  # fills the bytecode cache
        for _ in range(rounds):
            full.append(_full_time(env))
            bare.append(_bare_time(env))
    return {
        "full_seconds": median([wall for wall, _ in full]),
        "bare_seconds": median([wall for wall, _ in bare]),
        "full_cpu_seconds": median([cpu for _, cpu in full]),
        "bare_cpu_seconds": median([cpu for _, cpu in bare]),
    }


def _full_time(base_env: dict[str, str]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as state:
        port = _free_port()
        env = {
            **base_env,
            "PYTHONPATH": str(ROOT),
            "ALPHASWARM_CP_STATE_DIR": state,
            "ALPHASWARM_CP_LISTEN": f"127.0.0.1:{port}",
        }
        return _time_to_serving([sys.executable, "-m", "alphaswarm_controller"], port, env)


def _bare_time(env: dict[str, str]) -> tuple[float, float]:
    port = _free_port()
    code = (
        "import asyncio, grpc\n"
        "from grpc_health.v1 import health_pb2, health_pb2_grpc\n"
        "from grpc_health.v1._async import HealthServicer\n"
        "from grpc_reflection.v1alpha import reflection\n"
        "async def main():\n"
        "    server = grpc.aio.server()\n"
        "    health = HealthServicer()\n"
        "    health_pb2_grpc.add_HealthServicer_to_server(health, server)\n"
        "    reflection.enable_server_reflection(('grpc.health.v1.Health',"
        " reflection.SERVICE_NAME), server)\n"
        f"    server.add_insecure_port('127.0.0.1:{port}')\n"
        "    await server.start()\n"
        "    await health.set('', health_pb2.HealthCheckResponse.SERVING)\n"
        "    await server.wait_for_termination()\n"
        "asyncio.run(main())\n"
    )
    return _time_to_serving([sys.executable, "-c", code], port, env)
