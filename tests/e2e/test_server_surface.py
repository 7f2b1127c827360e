"""What the real server process answers beside ProviderService: grpc.health.v1 List,
``--version``, and the build label of its metrics."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.server_process import start_server

PROVIDER_SERVICE = "alphaswarm.provider.v1.ProviderService"


def test_health_list_answers_every_name_without_an_error_log(tmp_path: Path) -> None:
    server = start_server(tmp_path / "state", {"ALPHASWARM_CP_METRICS_LISTEN": "127.0.0.1:0"})
    try:
        with grpc.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            # Providers report NOT_SERVING until their first probe passes: wait for it, for
            # a time, not a count of polls (100 quick polls ran out before it on an idle run).
            give_up = time.monotonic() + 60
            while True:
                listed = health.List(health_pb2.HealthListRequest(), timeout=10)
                local = listed.statuses["local"].status
                if local == health_pb2.HealthCheckResponse.SERVING or time.monotonic() > give_up:
                    break
                health.Check(health_pb2.HealthCheckRequest(service="local"), timeout=10)
                time.sleep(0.05)
            statuses = {name: s.status for name, s in listed.statuses.items()}
        serving = health_pb2.HealthCheckResponse.SERVING
        assert statuses == {"": serving, PROVIDER_SERVICE: serving, "local": serving}
        metrics_port = next(
            line.rsplit(":", 1)[1].split("/")[0]
            for line in server.log_lines
            if "serving Prometheus metrics" in line
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as got:
            text = got.read().decode()
        assert "alphaswarm_build_info{" in text
        assert 'grpc_code="OK"' in text and "grpc_server_msg_received_total" in text
    finally:
        assert server.terminate() == 0, server.log
    assert "ERROR" not in server.log and "Traceback" not in server.log, server.log


def test_version_of_the_server_and_the_cli() -> None:
    for module, name in (
        ("alphaswarm_controller", "alphaswarm-server"),
        ("alphaswarm_client.cli", "alphaswarm"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", module, "--version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"{name} ") and done.stdout.strip().split()[1][0].isdigit()
