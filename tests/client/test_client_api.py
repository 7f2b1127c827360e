"""The async client over real gRPC against the real servicer and error mapping (in process)."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import pytest

from alphaswarm.provider.v1 import types_pb2
from alphaswarm_client import (
    NO_RETRY,
    AlphaswarmClient,
    ConfigVersionConflict,
    DeadlineExceeded,
    DeploymentNotFound,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    PermissionDenied,
    ProviderNotFound,
    Unavailable,
    Unimplemented,
)
from alphaswarm_core.providers.errors import (
    BackendPermissionDenied,
    BackendUnavailableError,
    InfrastructureProviderUnavailable,
)
from tests.client.conftest import InProcess


async def test_lifecycle_through_every_unary_rpc(inproc: InProcess) -> None:
    client = inproc.client
    providers = await client.list_providers()
    assert providers.default_provider == "memory"
    assert "memory" in [p.alias for p in providers.providers]
    assert (await client.check_health()).healthy

    status = await client.start_deployment(
        service_id="web",
        command=["sleep", "300"],
        replicas=2,
        env={"A": "1"},
        ports=[types_pb2.PortSpec(container_port=8080)],
    )
    assert (status.service_id, status.namespace, status.desired_replicas) == ("web", "default", 2)
    assert status.state == types_pb2.DEPLOYMENT_STATE_RUNNING

    assert (await client.scale_deployment("web", 3)).desired_replicas == 3
    got = await client.get_status("web")
    assert (got.ready_replicas, len(got.instances)) == (3, 3)

    config = await client.get_config("web")
    updated = await client.apply_config(
        "web", set={"MODE": "fast"}, expected_version=config.version
    )
    assert dict(updated.data) == {"MODE": "fast"}
    assert updated.version != config.version
    removed = await client.apply_config("web", remove=["MODE"])
    assert dict(removed.data) == {}

    stopped = await client.stop_deployment("web")
    assert stopped.state == types_pb2.DEPLOYMENT_STATE_STOPPED


async def test_spec_and_keyword_fields_merge(inproc: InProcess) -> None:
    base = types_pb2.DeploymentSpec(
        service_id="api", command=["sleep", "1"], replicas=1, labels={"tier": "x"}
    )
    status = await inproc.client.start_deployment(base, replicas=2, namespace="team")
    assert (status.namespace, status.desired_replicas, dict(status.labels)) == (
        "team",
        2,
        {"tier": "x"},
    )
    with pytest.raises(TypeError, match="replica"):
        await inproc.client.start_deployment(base, replica=2)


async def test_paging_iterates_every_page(inproc: InProcess) -> None:
    client = inproc.client
    names = [f"svc-{i:02d}" for i in range(7)]
    for name in names:
        await client.start_deployment(service_id=name, command=["sleep", "1"], replicas=0)
    first = await client.list_deployments(page_size=3)
    assert [d.service_id for d in first.deployments] == names[:3]
    assert first.next_page_token
    seen = [d.service_id async for d in client.iter_deployments(page_size=3)]
    assert seen == names


async def test_streams_yield_and_release_on_early_exit(inproc: InProcess) -> None:
    client = inproc.client
    await client.start_deployment(service_id="web", command=["sleep", "300"], replicas=2)
    memory = await inproc.memory()

    samples = client.stream_metrics("web", interval=0.1)
    received: list[types_pb2.MetricSample] = []
    async with contextlib.aclosing(samples):
        async for sample in samples:
            received.append(sample)
            if len(received) == 3:
                break
    assert [s.replicas for s in received] == [2, 2, 2]
    assert received[0].extra["interval_seconds"] == pytest.approx(0.1)

    watch = inproc.client.watch("web")
    async with contextlib.aclosing(watch):
        first = await anext(watch)
    assert first.desired_replicas == 2
    # Leaving the loop cancels the call; the server then closes the provider's stream.
    for _ in range(100):
        if memory.open_streams == 0:
            break
        await asyncio.sleep(0.05)
    assert memory.open_streams == 0


async def test_stream_errors_are_typed(inproc: InProcess) -> None:
    with pytest.raises(DeploymentNotFound) as caught:
        async for _ in inproc.client.stream_metrics("ghost", interval=0.1):
            pass
    assert caught.value.resource is not None
    assert caught.value.resource.resource_name == "default/ghost"


async def test_error_table_round_trip(inproc: InProcess) -> None:
    """Each row of docs/errors.md, raised by the server, arrives typed with details."""
    client = inproc.client
    client.retry = NO_RETRY  # each error once, as the server sent it

    with pytest.raises(InvalidArgument) as invalid:
        await client.start_deployment(service_id="Bad_Name", command=["sleep", "1"])
    assert [v.field for v in invalid.value.field_violations] == ["spec.service_id"]

    with pytest.raises(ProviderNotFound) as unknown:
        await client.get_status("web", provider="nope")
    assert "memory" in unknown.value.metadata["known_aliases"]
    assert unknown.value.domain == "alphaswarm.dev"

    with pytest.raises(DeploymentNotFound):
        await client.stop_deployment("ghost")

    await client.start_deployment(service_id="web", command=["sleep", "1"])
    with pytest.raises(ConfigVersionConflict) as conflict:
        await client.apply_config("web", set={"A": "1"}, expected_version="999")
    assert conflict.value.reason == "CONFIG_VERSION_CONFLICT"
    assert conflict.value.metadata["provider"] == "memory"

    with pytest.raises(Unimplemented) as unsupported:
        await client.get_config("web", provider="configless")
    assert unsupported.value.reason == "CAPABILITY_UNSUPPORTED"

    memory = await inproc.memory()
    memory.failures["status"] = InfrastructureProviderUnavailable(
        "credentials missing: set FOO", reason="CREDENTIALS_MISSING"
    )
    with pytest.raises(FailedPrecondition) as precondition:
        await client.get_status("web")
    assert precondition.value.reason == "CREDENTIALS_MISSING"

    memory.failures["status"] = BackendUnavailableError("flaky", retry_after_seconds=2.5)
    with pytest.raises(Unavailable) as unavailable:
        await client.get_status("web")
    assert unavailable.value.retry_delay == 2.5

    memory.failures["status"] = BackendPermissionDenied("no rights")
    with pytest.raises(PermissionDenied):
        await client.get_status("web")

    memory.failures["status"] = RuntimeError("secret-token-123 leaked?")
    with pytest.raises(Internal) as internal:
        await client.get_status("web")
    assert "secret-token-123" not in internal.value.message
    assert internal.value.metadata["incident"]


async def test_per_call_timeout_overrides_the_default(inproc: InProcess) -> None:
    memory = await inproc.memory()
    memory.hang_seconds = 30.0  # the client's default deadline would wait this out
    with pytest.raises(DeadlineExceeded) as caught:
        await inproc.client.check_health(timeout=0.2)
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED


async def test_client_is_reusable_after_close(inproc: InProcess) -> None:
    client = AlphaswarmClient(inproc.target, timeout=5.0)
    assert (await client.list_providers()).default_provider == "memory"
    await client.close()
    assert (await client.list_providers()).default_provider == "memory"
    await client.close()
