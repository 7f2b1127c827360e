"""docs/errors.md's catalogue, row by row, as a caller over the wire sees it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grpc
import pytest

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_controller.server import start_server
from alphaswarm_core.providers.errors import (
    BackendPermissionDenied,
    BackendUnavailableError,
    InfrastructureProviderUnavailable,
)
from tests.fakes.memory_provider import MemoryProvider
from tests.service.conftest import Harness, make_registry, settings
from tests.service.rich_status import Details, details

DOMAIN = "alphaswarm.dev"


async def rpc_error(call: object) -> Details:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return details(caught.value)


def spec(service_id: str = "web", **kwargs: object) -> types.DeploymentSpec:
    return types.DeploymentSpec(service_id=service_id, command=["sleep", "1"], replicas=1, **kwargs)  # type: ignore[arg-type]


async def test_invalid_fields_are_invalid_argument_with_every_violation(harness: Harness) -> None:
    bad = types.DeploymentSpec(
        service_id="Not_A_Label",
        namespace="-bad-",
        replicas=-1,
        env={"1BAD": "x"},
        labels={"ok": "x" * 64},
        resources=types.Resources(cpu="lots"),
    )
    found = await rpc_error(harness.stub.StartDeployment(pb.StartDeploymentRequest(spec=bad)))
    assert found.code is grpc.StatusCode.INVALID_ARGUMENT
    assert found.error_info is not None and found.error_info.domain == DOMAIN
    assert set(found.fields) >= {
        "spec.service_id",
        "spec.namespace",
        "spec.replicas",
        "spec.image",
        "spec.env['1BAD']",
        "spec.labels['ok']",
        "spec.resources.cpu",
    }
    memory = await harness.provider()
    assert "start" not in memory.calls, "validation happens before any backend call"


@pytest.mark.parametrize("replicas", [-1, 501, 2**31 - 1])
async def test_absurd_replicas_are_rejected_before_the_backend(
    harness: Harness, replicas: int
) -> None:
    request = pb.ScaleDeploymentRequest(service_id="web", replicas=replicas)
    found = await rpc_error(harness.stub.ScaleDeployment(request))
    assert found.code is grpc.StatusCode.INVALID_ARGUMENT
    assert found.fields == ["replicas"]
    assert "scale" not in (await harness.provider()).calls


async def test_oversized_env_is_rejected(harness: Harness) -> None:
    huge = spec(env={f"K{i}": "v" * 2000 for i in range(200)})
    found = await rpc_error(harness.stub.StartDeployment(pb.StartDeploymentRequest(spec=huge)))
    assert found.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.env" in found.fields


async def test_unknown_provider_lists_known_aliases(harness: Harness) -> None:
    request = pb.GetDeploymentStatusRequest(provider="nomad", service_id="web")
    found = await rpc_error(harness.stub.GetDeploymentStatus(request))
    assert found.code is grpc.StatusCode.NOT_FOUND
    assert found.error_info is not None
    assert found.error_info.reason == "PROVIDER_NOT_FOUND"
    assert found.error_info.metadata["known_aliases"] == "configless,ghost,memory,plain"
    assert found.error_info.metadata["provider"] == "nomad"


async def test_unknown_service_has_resource_info(harness: Harness) -> None:
    request = pb.GetDeploymentStatusRequest(service_id="nothing", namespace="team-a")
    found = await rpc_error(harness.stub.GetDeploymentStatus(request))
    assert found.code is grpc.StatusCode.NOT_FOUND
    assert found.error_info is not None and found.error_info.reason == "DEPLOYMENT_NOT_FOUND"
    assert found.error_info.metadata["provider"] == "memory"
    assert found.resource_info is not None
    assert found.resource_info.resource_name == "team-a/nothing"


async def test_stale_config_version_is_aborted_and_changes_nothing(harness: Harness) -> None:
    await harness.stub.StartDeployment(pb.StartDeploymentRequest(spec=spec()))
    first = await harness.stub.ApplyConfig(
        pb.ApplyConfigRequest(patch=types.ConfigMapPatch(service_id="web", set={"A": "1"}))
    )
    stale = types.ConfigMapPatch(service_id="web", set={"A": "2"}, expected_version="1")
    found = await rpc_error(harness.stub.ApplyConfig(pb.ApplyConfigRequest(patch=stale)))
    assert found.code is grpc.StatusCode.ABORTED
    assert found.error_info is not None
    assert found.error_info.reason == "CONFIG_VERSION_CONFLICT"
    now = await harness.stub.GetServiceConfig(pb.GetServiceConfigRequest(service_id="web"))
    assert dict(now.config.data) == {"A": "1"}
    assert now.config.version == first.config.version


async def test_missing_capability_is_unimplemented(harness: Harness) -> None:
    await harness.stub.StartDeployment(
        pb.StartDeploymentRequest(provider="configless", spec=spec())
    )
    request = pb.GetServiceConfigRequest(provider="configless", service_id="web")
    found = await rpc_error(harness.stub.GetServiceConfig(request))
    assert found.code is grpc.StatusCode.UNIMPLEMENTED
    assert found.error_info is not None
    assert found.error_info.reason == "CAPABILITY_UNSUPPORTED"
    assert found.error_info.metadata["capability"] == "config"


async def test_missing_sdk_is_failed_precondition_with_install_hint(harness: Harness) -> None:
    found = await rpc_error(harness.stub.CheckHealth(pb.CheckHealthRequest(provider="ghost")))
    assert found.code is grpc.StatusCode.FAILED_PRECONDITION
    assert found.error_info is not None and found.error_info.reason == "SDK_MISSING"
    assert found.error_info.metadata["install"] == "pip install 'alphaswarm-controller[ghost]'"


async def test_missing_credentials_is_failed_precondition(harness: Harness) -> None:
    unprobed = await harness.provider("configless")  # not probed by the health loop
    unprobed.failures["health"] = InfrastructureProviderUnavailable(
        "no credentials: set EXAMPLE_TOKEN",
        reason="CREDENTIALS_MISSING",
        metadata={"env": "EXAMPLE_TOKEN"},
    )
    request = pb.CheckHealthRequest(provider="configless")
    found = await rpc_error(harness.stub.CheckHealth(request))
    assert found.code is grpc.StatusCode.FAILED_PRECONDITION
    assert found.error_info is not None
    assert found.error_info.reason == "CREDENTIALS_MISSING"
    assert found.error_info.metadata["env"] == "EXAMPLE_TOKEN"


async def test_transient_backend_failure_is_unavailable_with_retry_info(harness: Harness) -> None:
    memory = await harness.provider()
    memory.failures["list_deployments"] = BackendUnavailableError(
        "backend busy", retry_after_seconds=2.5
    )
    found = await rpc_error(harness.stub.ListDeployments(pb.ListDeploymentsRequest()))
    assert found.code is grpc.StatusCode.UNAVAILABLE
    assert found.retry_info is not None
    assert found.retry_info.retry_delay.ToMilliseconds() == 2500


async def test_backend_permission_denied(harness: Harness) -> None:
    memory = await harness.provider()
    memory.failures["list_deployments"] = BackendPermissionDenied("missing ecs:UpdateService")
    found = await rpc_error(harness.stub.ListDeployments(pb.ListDeploymentsRequest()))
    assert found.code is grpc.StatusCode.PERMISSION_DENIED
    assert found.error_info is not None
    assert found.error_info.reason == "BACKEND_PERMISSION_DENIED"


async def test_unexpected_error_is_generic_internal_without_leaking(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    memory = await harness.provider()
    memory.failures["list_deployments"] = RuntimeError("password=hunter2 leaked from a driver")
    found = await rpc_error(harness.stub.ListDeployments(pb.ListDeploymentsRequest()))
    assert found.code is grpc.StatusCode.INTERNAL
    assert "hunter2" not in found.message
    assert found.error_info is not None and "incident" in found.error_info.metadata
    assert found.error_info.metadata["incident"] in caplog.text, "traceback is in the log"


async def test_a_caller_deadline_shorter_than_the_backend_is_deadline_exceeded(
    harness: Harness,
) -> None:
    memory = await harness.provider()
    memory.hang_seconds = 30.0
    request = pb.ListDeploymentsRequest()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.ListDeployments(request, timeout=0.5)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_the_server_budget_ends_a_hanging_backend_as_backend_timeout(
    tmp_path: Path,
) -> None:
    """The server's own budget (ALPHASWARM_CP_CALL_TIMEOUT_SECONDS) with a caller deadline
    far longer: the status must come from the server, as BACKEND_TIMEOUT with details."""
    running = await start_server(
        settings(tmp_path, call_timeout_seconds=0.5), env={}, registry=make_registry()
    )
    try:
        memory = await running.pool.get("memory")
        assert isinstance(memory, MemoryProvider)
        memory.hang_seconds = 30.0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.ProviderServiceStub(channel)
            for call in (
                stub.ListDeployments(pb.ListDeploymentsRequest(), timeout=60),
                stub.ScaleDeployment(  # a mutating call: its budget is the server's alone
                    pb.ScaleDeploymentRequest(service_id="web", replicas=1), timeout=60
                ),
            ):
                found = await rpc_error(call)
                assert found.code is grpc.StatusCode.DEADLINE_EXCEEDED
                assert found.error_info is not None, "the server answered, not the deadline"
                assert found.error_info.reason == "BACKEND_TIMEOUT"
    finally:
        await running.stop()


async def test_stream_errors_are_mapped_too(harness: Harness) -> None:
    request = pb.StreamMetricsRequest(service_id="ghost-service")
    call = harness.stub.StreamMetrics(request)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    found = details(caught.value)
    assert found.code is grpc.StatusCode.NOT_FOUND
    assert found.error_info is not None and found.error_info.reason == "DEPLOYMENT_NOT_FOUND"


async def test_bad_interval_and_page_token(harness: Harness) -> None:
    request = pb.StreamMetricsRequest(service_id="web")
    request.interval.FromMilliseconds(1)
    call = harness.stub.StreamMetrics(request)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    assert details(caught.value).fields == ["interval"]
    found = await rpc_error(
        harness.stub.ListDeployments(pb.ListDeploymentsRequest(page_token="garbage!"))
    )
    assert found.fields == ["page_token"]
    found = await rpc_error(harness.stub.ListDeployments(pb.ListDeploymentsRequest(page_size=-3)))
    assert found.fields == ["page_size"]


async def test_undecodable_request_bytes_are_invalid_argument(harness: Harness) -> None:
    raw = harness.channel.unary_unary(
        "/alphaswarm.provider.v1.ProviderService/StartDeployment",
        request_serializer=None,
        response_deserializer=None,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw(b"\xff\xff\xff\x0f not a protobuf")
    found = details(caught.value)
    assert found.code is grpc.StatusCode.INVALID_ARGUMENT
    assert found.fields == ["request"]


async def test_each_refusal_is_logged_once_with_its_provider_code_and_message(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alphaswarm_controller.errors")
    missing = await rpc_error(
        harness.stub.GetDeploymentStatus(
            pb.GetDeploymentStatusRequest(service_id="nothing", namespace="team-a")
        )
    )
    malformed = await rpc_error(
        harness.stub.GetDeploymentStatus(
            pb.GetDeploymentStatusRequest(provider="Bad!", service_id="web")
        )
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "alphaswarm_controller.errors"]
    assert lines == [
        f"provider=memory -> NOT_FOUND: {missing.message}",
        f"provider=- -> INVALID_ARGUMENT: {malformed.message}",
    ]


@pytest.mark.parametrize(
    ("method", "stream"),
    [("GetDeploymentStatus", False), ("WatchDeployment", True), ("StreamMetrics", True)],
)
async def test_bytes_that_are_no_request_message_are_invalid_argument(
    harness: Harness, method: str, stream: bool
) -> None:
    path = f"/alphaswarm.provider.v1.ProviderService/{method}"
    garbage = b"\xff\xff\xff\xff"  # a field tag with no end: no message parses from it
    if stream:
        call: Any = harness.channel.unary_stream(path, None, None)(garbage)
        waiting = anext(aiter(call))
    else:
        waiting = harness.channel.unary_unary(path, None, None)(garbage)
    found = await rpc_error(waiting)
    assert found.code is grpc.StatusCode.INVALID_ARGUMENT
    assert found.bad_request is not None
    assert [(v.field, v.description) for v in found.bad_request.field_violations] == [
        ("request", f"not a valid {method} request message")
    ]
