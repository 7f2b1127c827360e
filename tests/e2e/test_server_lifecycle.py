"""The real server process: graceful SIGTERM, kill -9, and recovery of `local` deployments."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm.provider.v1 import types_pb2 as types
from tests.e2e.processes import marked
from tests.e2e.server_process import ServerProcess, start_server
from tests.waiting import until_sync

MARKER = "ALPHASWARM_E2E_MARKER"


def start_sleepers(server: ServerProcess, tag: str, replicas: int = 2) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ProviderServiceStub(channel)
        stub.StartDeployment(
            pb.StartDeploymentRequest(
                spec=types.DeploymentSpec(
                    service_id="sleeper",
                    namespace="demo",
                    command=["sleep", "300"],
                    replicas=replicas,
                    env={MARKER: tag},
                )
            ),
            timeout=30,
        )


def listed(server: ServerProcess) -> list[str]:
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ProviderServiceStub(channel)
        response = stub.ListDeployments(pb.ListDeploymentsRequest(namespace="demo"), timeout=30)
        return [d.service_id for d in response.deployments]


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_restart_recovers_deployments_without_orphans(tmp_path: Path, how: str) -> None:
    tag = uuid.uuid4().hex
    state = tmp_path / "state"
    first = start_server(state)
    try:
        start_sleepers(first, tag)
        until_sync(lambda: len(marked(MARKER, tag)) == 2, "2 replicas")
        old_pids = {p.pid for p in marked(MARKER, tag)}
        if how == "sigterm":
            assert first.terminate() == 0, first.log
            assert "stopped" in first.log
        else:
            first.kill()
        until_sync(lambda: not marked(MARKER, tag), "replicas of the old run gone")
    finally:
        first.kill()

    second = start_server(state)
    try:
        assert listed(second) == ["sleeper"]
        until_sync(lambda: len(marked(MARKER, tag)) == 2, "2 replicas again")
        assert not old_pids & {p.pid for p in marked(MARKER, tag)}
    finally:
        assert second.terminate() == 0, second.log
    until_sync(lambda: not marked(MARKER, tag), "no replica left after shutdown")
