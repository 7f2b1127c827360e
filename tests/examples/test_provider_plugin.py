"""examples/provider-plugin: a third-party provider outside the project's packages.

It is installed beside the server the way an operator would add a plugin (its own
distribution, found only through its `alphaswarm.providers` entry point), then
(1) its own tests run the contract suite shipped in alphaswarm_core.testing with
plain pytest, and (2) a real server lists it and serves it over gRPC.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm.provider.v1 import types_pb2 as types
from tests.e2e.server_process import ServerProcess, start_server
from tests.waiting import until_sync

PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "provider-plugin"
DISTRIBUTION = "alphaswarm-procs-example"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The plugin installed (no dependencies: the server's are there) into a directory of
    its own, to be put on PYTHONPATH: its dist-info carries the entry point."""
    target = tmp_path_factory.mktemp("plugin")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(PLUGIN)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return str(target)


def test_the_shipped_contract_suite_passes_with_plain_pytest(plugin_path: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=PLUGIN,
        env={**os.environ, "PYTHONPATH": plugin_path},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "skipped" not in summary


@pytest.fixture
def server(plugin_path: str, tmp_path: Path) -> Iterator[ServerProcess]:
    running = start_server(
        tmp_path / "state",
        {"PYTHONPATH": plugin_path, "ALPHASWARM_PROCS_ALLOW_ROOT": "true"},
    )
    try:
        yield running
    finally:
        assert running.terminate() == 0, running.log


def test_a_real_server_lists_and_serves_the_plugin(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.ProviderServiceStub(channel)
        listed = {p.alias: p for p in stub.ListProviders(pb.ListProvidersRequest()).providers}
        procs = listed["procs"]
        assert (procs.kind, procs.origin, procs.installed) == ("procs", DISTRIBUTION, True)
        assert list(procs.capabilities) == ["start", "stop", "scale", "status", "list"]

        # The duration doubles as a tag no other test or concurrent run uses.
        tag = str(10**9 + secrets.randbelow(10**9))
        spec = types.DeploymentSpec(service_id="plugin-demo", command=["sleep", tag], replicas=2)
        started = stub.StartDeployment(pb.StartDeploymentRequest(provider="procs", spec=spec))
        assert started.status.provider == "procs"
        assert started.status.ready_replicas == 2
        # Polled, not read once: Popen returns when exec closes the child's close-on-exec
        # pipe, before the kernel has set up its new argument area; until then
        # /proc/<pid>/cmdline is empty (seen 5 times in 300 starts beside a CPU hog).
        until_sync(lambda: len(sleepers(tag)) == 2, "both replicas to show as `sleep`")

        with pytest.raises(grpc.RpcError) as unsupported:
            stub.GetServiceConfig(
                pb.GetServiceConfigRequest(provider="procs", service_id="plugin-demo")
            )
        assert unsupported.value.code() is grpc.StatusCode.UNIMPLEMENTED

        stub.StopDeployment(pb.StopDeploymentRequest(provider="procs", service_id="plugin-demo"))
        until_sync(lambda: not sleepers(tag), "the plugin's replicas to end")


def sleepers(seconds: str) -> list[int]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if process.info["cmdline"] == ["sleep", seconds]:
            found.append(process.pid)
    return found
