"""ProviderService behaviour over the wire, on in-memory providers."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_core.providers.errors import BackendUnavailableError
from tests.service.conftest import Harness
from tests.service.rich_status import details
from tests.waiting import until


def spec(service_id: str, namespace: str = "", replicas: int = 1) -> types.DeploymentSpec:
    return types.DeploymentSpec(
        service_id=service_id, namespace=namespace, command=["sleep", "300"], replicas=replicas
    )


async def test_list_providers_reports_default_capabilities_and_install_state(
    harness: Harness,
) -> None:
    response = await harness.stub.ListProviders(pb.ListProvidersRequest())
    assert response.default_provider == "memory"
    by_alias = {p.alias: p for p in response.providers}
    assert list(by_alias) == ["configless", "ghost", "memory", "plain"]
    memory = by_alias["memory"]
    assert memory.is_default and memory.installed and memory.kind == "memory"
    assert {"start", "stop", "scale", "status", "list", "config", "metrics"} <= set(
        memory.capabilities
    )
    assert "config" not in by_alias["configless"].capabilities
    assert "revisions" in memory.capabilities and "revisions" not in by_alias["plain"].capabilities
    ghost = by_alias["ghost"]
    assert not ghost.installed
    assert ghost.install_hint == "pip install 'alphaswarm-controller[ghost]'"


async def test_start_scale_status_stop_round_trip(harness: Harness) -> None:
    started = await harness.stub.StartDeployment(
        pb.StartDeploymentRequest(spec=spec("api", replicas=2))
    )
    assert started.status.state == types.DEPLOYMENT_STATE_RUNNING
    assert (started.status.namespace, started.status.provider) == ("default", "memory")
    assert started.status.HasField("updated_at")
    scaled = await harness.stub.ScaleDeployment(
        pb.ScaleDeploymentRequest(service_id="api", replicas=3)
    )
    assert scaled.status.desired_replicas == 3
    status = await harness.stub.GetDeploymentStatus(pb.GetDeploymentStatusRequest(service_id="api"))
    assert status.status.ready_replicas == 3 and len(status.status.instances) == 3
    stopped = await harness.stub.StopDeployment(pb.StopDeploymentRequest(service_id="api"))
    assert stopped.status.state == types.DEPLOYMENT_STATE_STOPPED


async def test_list_deployments_pages_in_stable_order(harness: Harness) -> None:
    memory = await harness.provider()
    for i in range(250):
        request = pb.StartDeploymentRequest(spec=spec(f"s{i:03d}", "ns-a"))
        await harness.stub.StartDeployment(request)
    await harness.stub.StartDeployment(pb.StartDeploymentRequest(spec=spec("other", "ns-b")))
    memory.calls.clear()
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        response = await harness.stub.ListDeployments(
            pb.ListDeploymentsRequest(namespace="ns-a", page_size=100, page_token=token)
        )
        pages += 1
        seen += [d.service_id for d in response.deployments]
        token = response.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == [f"s{i:03d}" for i in range(250)]
    assert memory.calls == ["list_deployments"] * 3
    everything = await harness.stub.ListDeployments(pb.ListDeploymentsRequest(page_size=1000))
    assert len(everything.deployments) == 251 and not everything.next_page_token

    token_for_a = (
        await harness.stub.ListDeployments(
            pb.ListDeploymentsRequest(namespace="ns-a", page_size=10)
        )
    ).next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.ListDeployments(
            pb.ListDeploymentsRequest(namespace="ns-b", page_token=token_for_a)
        )
    assert details(caught.value).fields == ["page_token"]


async def test_config_get_and_apply(harness: Harness) -> None:
    await harness.stub.StartDeployment(pb.StartDeploymentRequest(spec=spec("cfg")))
    initial = await harness.stub.GetServiceConfig(pb.GetServiceConfigRequest(service_id="cfg"))
    applied = await harness.stub.ApplyConfig(
        pb.ApplyConfigRequest(
            patch=types.ConfigMapPatch(
                service_id="cfg", set={"MODE": "fast"}, expected_version=initial.config.version
            )
        )
    )
    assert dict(applied.config.data) == {"MODE": "fast"}
    assert applied.config.version != initial.config.version


async def test_stream_metrics_delivers_at_interval_and_releases_backend(
    harness: Harness,
) -> None:
    await harness.stub.StartDeployment(pb.StartDeploymentRequest(spec=spec("m", replicas=2)))
    memory = await harness.provider()
    request = pb.StreamMetricsRequest(service_id="m")
    request.interval.FromMilliseconds(100)
    call = harness.stub.StreamMetrics(request)
    samples = []
    async for response in call:
        samples.append(response.sample)
        if len(samples) == 3:
            break
    assert all(s.replicas == 2 and s.ok for s in samples)
    assert samples[0].extra["interval_seconds"] == pytest.approx(0.1)
    assert memory.open_streams == 1
    call.cancel()
    # The server closes the provider's stream in a task of its own: wait, bounded.
    await until(
        lambda: memory.open_streams,
        "the provider's stream closed by the cancel",
        holds=lambda open_streams: not open_streams,
        within=10,
        every=0.05,
    )


async def test_watch_sends_current_status_then_changes(harness: Harness) -> None:
    await harness.stub.StartDeployment(pb.StartDeploymentRequest(spec=spec("w")))
    memory = await harness.provider()
    call = harness.stub.WatchDeployment(pb.WatchDeploymentRequest(service_id="w"))
    first = await call.read()
    assert isinstance(first, pb.WatchDeploymentResponse)
    assert first.status.desired_replicas == 1
    await memory.scale("w", 4, namespace="default")
    async with asyncio.timeout(10):
        while True:
            update = await call.read()
            assert isinstance(update, pb.WatchDeploymentResponse)
            if update.status.desired_replicas == 4:
                break
    call.cancel()


async def test_health_service_follows_provider_health(tmp_path: object) -> None:
    from alphaswarm_controller.server import start_server
    from tests.service.conftest import make_registry, settings

    running = await start_server(
        settings(tmp_path, health_interval_seconds=0.1),  # type: ignore[arg-type]
        env={},
        registry=make_registry(),
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    health = health_pb2_grpc.HealthStub(channel)

    async def state(name: str) -> int:
        response = await health.Check(health_pb2.HealthCheckRequest(service=name))
        return int(response.status)

    async def eventually(name: str, wanted: int) -> None:
        async with asyncio.timeout(10):
            while await state(name) != wanted:  # noqa: ASYNC110 - polling a remote state
                await asyncio.sleep(0.05)

    try:
        serving, not_serving = (
            health_pb2.HealthCheckResponse.SERVING,
            (health_pb2.HealthCheckResponse.NOT_SERVING),
        )
        assert await state("") == serving
        assert await state("alphaswarm.provider.v1.ProviderService") == serving
        await eventually("memory", serving)
        memory = await running.pool.get("memory")
        # Down until told otherwise: a single failed probe is NOT_SERVING for one 0.1 s
        # interval only, which a poller on a loaded machine can miss altogether.
        memory.sticky_failures["health"] = BackendUnavailableError("down")  # type: ignore[attr-defined]
        await eventually("memory", not_serving)
        del memory.sticky_failures["health"]  # type: ignore[attr-defined]
        await eventually("memory", serving)
    finally:
        await channel.close(None)
        await running.stop()


async def test_secret_config_keys_are_write_only(harness: Harness) -> None:
    await harness.stub.StartDeployment(pb.StartDeploymentRequest(spec=spec("vault")))
    applied = await harness.stub.ApplyConfig(
        pb.ApplyConfigRequest(
            patch=types.ConfigMapPatch(
                service_id="vault", set={"secret.DB_PASSWORD": "hunter2", "MODE": "x"}
            )
        )
    )
    assert dict(applied.config.data) == {"secret.DB_PASSWORD": "<secret>", "MODE": "x"}
    read = await harness.stub.GetServiceConfig(pb.GetServiceConfigRequest(service_id="vault"))
    assert read.config.data["secret.DB_PASSWORD"] == "<secret>"
    memory = await harness.provider()
    stored = await memory.get_config("vault", namespace="default")
    assert stored.data["secret.DB_PASSWORD"] == "hunter2", "the backend keeps the real value"


def test_secret_keys_reach_replicas_under_their_plain_name() -> None:
    from alphaswarm_core.providers.models import config_environment

    assert config_environment({"secret.TOKEN": "t", "LEVEL": "1"}) == {"TOKEN": "t", "LEVEL": "1"}
