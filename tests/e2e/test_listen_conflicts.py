"""Two real server processes: a served port is never shared, a locked state dir is never
reported as opened."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from tests.e2e.server_process import SERVER_COMMAND, ServerProcess, server_env, start_server
from tests.waiting import until_sync


def list_deployments(address: str) -> pb.ListDeploymentsResponse:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.ProviderServiceStub(channel)
        response: pb.ListDeploymentsResponse = stub.ListDeployments(
            pb.ListDeploymentsRequest(), timeout=30
        )
        return response


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_second_server_on_a_served_port_exits_with_one_line(tmp_path: Path, host: str) -> None:
    first = start_server(tmp_path / "first")
    try:
        port = first.address.rsplit(":", 1)[1]
        second = subprocess.run(
            SERVER_COMMAND,
            env=server_env(tmp_path / "second", {"ALPHASWARM_CP_LISTEN": f"{host}:{port}"}),
            capture_output=True,
            text=True,
            timeout=60,  # a bound against a hang; the exit itself is immediate
            check=False,
        )
        assert second.returncode != 0
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert lines[0] == (
            f"alphaswarm-server: cannot listen on {host}:{port}: address already in use: "
            "another process serves it (a second alphaswarm-server?); set ALPHASWARM_CP_LISTEN"
        )
        assert "listening on" not in second.stderr
        for _ in range(8):  # every connection still reaches the first server alone
            assert list_deployments(first.address).deployments == []
    finally:
        assert first.terminate() == 0, first.log


def test_provider_on_a_locked_state_dir_is_not_reported_opened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = start_server(state)
    second: ServerProcess | None = None
    try:
        until_sync(lambda: "provider local opened" in first.log, "the first server's provider")
        second = start_server(state)
        running = second
        until_sync(lambda: "is in use by another controller" in running.log, "the lock refusal")
        with pytest.raises(grpc.RpcError) as caught:
            list_deployments(running.address)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # STATE_DIR_LOCKED
        assert "in use by another controller" in (caught.value.details() or "")
        assert "provider local opened" not in running.log, running.log
    finally:
        if second is not None:
            assert second.terminate() == 0, second.log
        assert first.terminate() == 0, first.log
