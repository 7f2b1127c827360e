"""The provider contract against the Cloud Run / Secret Manager / Monitoring gRPC emulators."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from google.cloud import monitoring_v3, run_v2
from google.cloud.monitoring_v3.services.metric_service.transports import (
    MetricServiceGrpcAsyncIOTransport,
)
from google.protobuf import timestamp_pb2

from alphaswarm_controller.providers.gcp import GcpProvider
from alphaswarm_controller.providers.gcp.cloudrun import cloud_run_name
from alphaswarm_controller.providers.gcp.metrics import (
    CPU_UTILIZATIONS,
    INSTANCE_COUNT,
    MEMORY_UTILIZATIONS,
    RECEIVED_BYTES,
    REQUEST_COUNT,
)
from alphaswarm_core.call import CallContext, current_call
from alphaswarm_core.providers.protocol import (
    BackendPermissionDenied,
    BackendRejectedError,
    BackendTimeoutError,
    ConfigMapPatch,
    ConfigVersionConflict,
    DeploymentNotFoundError,
    DeploymentSpec,
    DeploymentState,
    InfrastructureProviderUnavailable,
    InvalidSpecError,
    PortSpec,
    Resources,
    SettingInvalid,
)
from alphaswarm_core.testing import ProviderContract, SpecFactory, unique_name
from tests.fakes.gcp_auth import PROJECT, write_service_account
from tests.fakes.gcp_server import GcpEmulator

IMAGE = "us-docker.pkg.dev/cloudrun/container/hello:latest"


@pytest.fixture(scope="session")
def service_account_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_service_account(tmp_path_factory.mktemp("gcp") / "key.json")


@pytest.fixture
async def emulator() -> AsyncIterator[GcpEmulator]:
    # A page of two services, so every list below follows page tokens.
    emulator = GcpEmulator(operation_polls=1, max_page_size=2)
    await emulator.start()
    yield emulator
    await emulator.stop()


@pytest.fixture
def gcp_env(emulator: GcpEmulator, service_account_key: Path) -> dict[str, str]:
    return {
        "GOOGLE_APPLICATION_CREDENTIALS": str(service_account_key),
        "ALPHASWARM_GCP_REGION": "europe-west4",
        "ALPHASWARM_GCP_API_ENDPOINT": emulator.address,
        "ALPHASWARM_GCP_POLL_INTERVAL": "0.02",
    }


@pytest.fixture
async def provider(gcp_env: dict[str, str]) -> AsyncIterator[GcpProvider]:
    provider = GcpProvider(env=gcp_env)
    await provider.open()
    yield provider
    await provider.close()


@pytest.fixture
def namespace() -> str:
    return unique_name("ns")


@pytest.fixture
def spec_factory() -> SpecFactory:
    def make(
        service_id: str,
        namespace: str,
        replicas: int = 1,
        env: Mapping[str, str] | None = None,
    ) -> DeploymentSpec:
        return DeploymentSpec(
            service_id=service_id,
            namespace=namespace,
            image=IMAGE,
            env=dict(env or {}),
            replicas=replicas,
            ports=(PortSpec(8080),),
            resources=Resources(cpu="1", memory="512Mi"),
        )

    return make


class TestGcpContract(ProviderContract):
    expected_capabilities = frozenset(
        {"start", "stop", "scale", "status", "list", "config", "metrics"}
    )


# -- Cloud Run specifics ---------------------------------------------------------------------


def _cloud_run(emulator: GcpEmulator, namespace: str, service_id: str) -> run_v2.Service:
    short = cloud_run_name(namespace, service_id)
    (service,) = [s for n, s in emulator.run.services.items() if n.endswith(f"/{short}")]
    return service


async def test_spec_maps_onto_the_service_template(
    provider: GcpProvider, emulator: GcpEmulator, namespace: str
) -> None:
    spec = DeploymentSpec(
        service_id="web",
        namespace=namespace,
        image=IMAGE,
        command=("/server", "--port", "9000"),
        env={"MODE": "prod", "LEVEL": "3"},
        replicas=3,
        labels={"team": "core"},
        ports=(PortSpec(9000),),
        resources=Resources(cpu="2", memory="6Gi"),
    )
    status = await provider.start(spec)
    assert (status.state, status.desired_replicas, status.ready_replicas) == (
        DeploymentState.RUNNING,
        3,
        3,
    )
    assert status.labels == {"team": "core"} and status.image == IMAGE

    service = _cloud_run(emulator, namespace, "web")
    assert service.name == (
        f"projects/{PROJECT}/locations/europe-west4/services/{cloud_run_name(namespace, 'web')}"
    )
    (container,) = service.template.containers
    assert container.image == IMAGE
    assert (list(container.command), list(container.args)) == (["/server"], ["--port", "9000"])
    assert {e.name: e.value for e in container.env} == {"MODE": "prod", "LEVEL": "3"}
    assert [p.container_port for p in container.ports] == [9000]
    assert dict(container.resources.limits) == {"cpu": "2", "memory": "6144Mi"}
    assert service.scaling.scaling_mode == run_v2.ServiceScaling.ScalingMode.MANUAL
    assert service.scaling.manual_instance_count == 3
    assert dict(service.labels) == {
        "team": "core",
        "managed-by": "alphaswarm",
        "alphaswarm-namespace": namespace,
        "alphaswarm-service": "web",
    }


async def test_revisions_only_when_the_template_changes(
    provider: GcpProvider,
    emulator: GcpEmulator,
    namespace: str,
    spec_factory: SpecFactory,
) -> None:
    spec = spec_factory("api", namespace, replicas=1, env={"A": "1"})
    await provider.start(spec)
    name = _cloud_run(emulator, namespace, "api").name
    assert len(emulator.run.revisions[name]) == 1

    updates = emulator.log.count("UpdateService")
    await provider.start(spec)
    assert emulator.log.count("UpdateService") == updates, "an unchanged spec sends no update"

    await provider.scale("api", 4, namespace=namespace)
    assert len(emulator.run.revisions[name]) == 1, "scaling creates no revision"

    changed = await provider.start(spec_factory("api", namespace, replicas=4, env={"A": "2"}))
    assert len(emulator.run.revisions[name]) == 2
    revision = _cloud_run(emulator, namespace, "api").latest_ready_revision.rsplit("/", 1)[1]
    assert {i.instance_id for i in changed.instances} == {f"{revision}-{n}" for n in range(4)}


async def test_stop_scales_to_zero_and_keeps_the_service(
    provider: GcpProvider, emulator: GcpEmulator, namespace: str, spec_factory: SpecFactory
) -> None:
    await provider.start(spec_factory("job", namespace, replicas=2))
    stopped = await provider.stop("job", namespace=namespace)
    assert (stopped.state, stopped.desired_replicas, stopped.ready_replicas) == (
        DeploymentState.STOPPED,
        0,
        0,
    )
    service = _cloud_run(emulator, namespace, "job")
    assert service.scaling.manual_instance_count == 0
    assert emulator.log.count("DeleteService") == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"resources": Resources(cpu="3")}, "spec.resources.cpu"),
        ({"resources": Resources(cpu="50m")}, "spec.resources.cpu"),
        ({"resources": Resources(cpu="12")}, "spec.resources.cpu"),
        ({"resources": Resources(memory="64Mi")}, "spec.resources.memory"),
        ({"resources": Resources(memory="40Gi")}, "spec.resources.memory"),
        ({"resources": Resources(cpu="1", memory="8Gi")}, "spec.resources.memory"),
        ({"ports": (PortSpec(80), PortSpec(81))}, "spec.ports"),
        ({"ports": (PortSpec(53, protocol="udp"),)}, "spec.ports[0].protocol"),
        ({"ports": (PortSpec(80, host_port=80),)}, "spec.ports[0].host_port"),
        ({"env": {"PORT": "1"}}, "spec.env['PORT']"),
        ({"env": {"ALPHASWARM_CONFIG": "x"}}, "spec.env['ALPHASWARM_CONFIG']"),
        ({"labels": {"Team": "a"}}, "spec.labels['Team']"),
        ({"labels": {"example.com/team": "a"}}, "spec.labels['example.com/team']"),
        ({"labels": {"team": "Core"}}, "spec.labels['team']"),
        ({"labels": {"managed-by": "me"}}, "spec.labels['managed-by']"),
        ({"image": "", "command": ("/bin/true",)}, "spec.image"),
    ],
)
async def test_what_cloud_run_rejects_is_invalid_before_any_call(
    provider: GcpProvider,
    emulator: GcpEmulator,
    namespace: str,
    change: dict[str, object],
    field: str,
) -> None:
    spec = replace(DeploymentSpec("bad", namespace, image=IMAGE), **change)  # type: ignore[arg-type]
    with pytest.raises(InvalidSpecError) as caught:
        await provider.start(spec)
    assert field in [v.field for v in caught.value.violations]
    assert emulator.log.calls == []


async def test_invalid_region_is_the_operators_error_before_any_call(
    gcp_env: dict[str, str], emulator: GcpEmulator, spec_factory: SpecFactory
) -> None:
    provider = GcpProvider(env={**gcp_env, "ALPHASWARM_GCP_REGION": "moon-base"})
    try:
        # A bad server setting is FAILED_PRECONDITION naming the variable, never the
        # caller's INVALID_ARGUMENT.
        with pytest.raises(SettingInvalid) as caught:
            await provider.start(spec_factory("svc", "default"))
        assert caught.value.code == "FAILED_PRECONDITION"
        assert caught.value.metadata == {"setting": "ALPHASWARM_GCP_REGION"}
        with pytest.raises(SettingInvalid):
            await provider.health()
    finally:
        await provider.close()
    assert emulator.log.calls == []


async def test_failed_create_leaves_no_service(
    provider: GcpProvider, emulator: GcpEmulator, namespace: str, spec_factory: SpecFactory
) -> None:
    emulator.run.fail_next_operation(
        grpc.StatusCode.FAILED_PRECONDITION, "Image 'hello' not found in the registry"
    )
    with pytest.raises(BackendRejectedError, match="not found in the registry"):
        await provider.start(spec_factory("broken", namespace))
    assert emulator.log.count("DeleteService") == 1
    assert emulator.run.services == {}
    with pytest.raises(DeploymentNotFoundError):
        await provider.status("broken", namespace=namespace)


async def test_failed_update_keeps_the_previous_revision_serving(
    provider: GcpProvider, emulator: GcpEmulator, namespace: str, spec_factory: SpecFactory
) -> None:
    await provider.start(spec_factory("roll", namespace, replicas=2, env={"V": "1"}))
    emulator.run.fail_next_operation(grpc.StatusCode.FAILED_PRECONDITION, "container crashed")
    with pytest.raises(BackendRejectedError):
        await provider.start(spec_factory("roll", namespace, replicas=2, env={"V": "2"}))
    status = await provider.status("roll", namespace=namespace)
    assert status.state is DeploymentState.DEGRADED
    assert status.ready_replicas == 2 and "container crashed" in status.message


async def test_operations_are_bounded_by_the_callers_deadline(
    gcp_env: dict[str, str], emulator: GcpEmulator, spec_factory: SpecFactory
) -> None:
    emulator.operations.polls = 10**6  # never completes
    provider = GcpProvider(env=gcp_env)
    token = current_call.set(CallContext("StartDeployment", "r-1", "", time.monotonic() + 0.5))
    try:
        # The operation never completes: only the call's deadline can end the wait.
        with pytest.raises(BackendTimeoutError):
            await provider.start(spec_factory("slow", "default"))
    finally:
        current_call.reset(token)
        await provider.close()


async def test_list_follows_page_tokens(
    provider: GcpProvider, emulator: GcpEmulator, namespace: str, spec_factory: SpecFactory
) -> None:
    names = {f"svc-{n}" for n in range(5)}
    for name in names:
        await provider.start(spec_factory(name, namespace))
    calls = emulator.log.count("ListServices")
    listed = await provider.list_deployments(namespace=namespace)
    assert {s.service_id for s in listed} == names
    assert emulator.log.count("ListServices") - calls == 3, "five services in pages of two"


async def test_project_setting_overrides_the_credentials_project(
    gcp_env: dict[str, str], emulator: GcpEmulator, spec_factory: SpecFactory
) -> None:
    provider = GcpProvider(env={**gcp_env, "ALPHASWARM_GCP_PROJECT": "other-project"})
    try:
        await provider.start(spec_factory("svc", "default"))
        health = await provider.health()
    finally:
        await provider.close()
    assert health.details["project"] == "other-project"
    assert all(n.startswith("projects/other-project/") for n in emulator.run.services)


# -- health and credentials ------------------------------------------------------------------


async def test_permission_denied_names_the_role(
    provider: GcpProvider, emulator: GcpEmulator
) -> None:
    emulator.log.inject("ListServices", grpc.StatusCode.PERMISSION_DENIED, "run.services.list")
    with pytest.raises(BackendPermissionDenied, match=r"roles/run\.developer") as caught:
        await provider.health()
    assert caught.value.metadata["role"] == "roles/run.developer"


async def test_missing_credentials_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from google.auth.compute_engine import _metadata

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud login
    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)  # not on GCE: no metadata server
    provider = GcpProvider(env={"ALPHASWARM_GCP_REGION": "us-central1"})
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        await provider.health()
    assert caught.value.reason == "CREDENTIALS_MISSING"
    assert "GOOGLE_APPLICATION_CREDENTIALS" in caught.value.message
    assert "Workload Identity" in caught.value.message

    absent = GcpProvider(env={"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "nope.json")})
    with pytest.raises(InfrastructureProviderUnavailable, match="GOOGLE_APPLICATION_CREDENTIALS"):
        await absent.health()


async def test_health_reports_project_and_region(provider: GcpProvider) -> None:
    health = await provider.health()
    assert health.details["project"] == PROJECT
    assert health.details["region"] == "europe-west4"
    assert health.kind == "gcp"


# -- config in Secret Manager ----------------------------------------------------------------


async def test_config_lives_in_one_secret_referenced_by_the_service(
    provider: GcpProvider, emulator: GcpEmulator, namespace: str, spec_factory: SpecFactory
) -> None:
    spec = spec_factory("cfg", namespace, replicas=1)
    await provider.start(spec)
    name = _cloud_run(emulator, namespace, "cfg").name
    first = await provider.apply_config(ConfigMapPatch("cfg", namespace, set={"A": "1"}))
    second = await provider.apply_config(
        ConfigMapPatch("cfg", namespace, set={"B": "2"}, expected_version=first.version)
    )
    assert (first.version, second.version) == ("1", "2")

    secret = f"projects/{PROJECT}/secrets/alphaswarm-{cloud_run_name(namespace, 'cfg')}"
    assert [json.loads(data) for _, data in emulator.secrets.versions[secret]] == [
        {"A": "1"},
        {"A": "1", "B": "2"},
    ]
    (container,) = _cloud_run(emulator, namespace, "cfg").template.containers
    (ref,) = [e for e in container.env if e.name == "ALPHASWARM_CONFIG"]
    assert (ref.value_source.secret_key_ref.secret, ref.value_source.secret_key_ref.version) == (
        secret,
        "2",
    )
    assert len(emulator.run.revisions[name]) == 3, "each config version rolls a revision"

    with pytest.raises(ConfigVersionConflict):
        await provider.apply_config(
            ConfigMapPatch("cfg", namespace, set={"B": "x"}, expected_version="1")
        )
    assert len(emulator.secrets.versions[secret]) == 2, "a conflict writes nothing"

    await provider.start(spec)
    assert len(emulator.run.revisions[name]) == 3, "start keeps the config reference"
    assert (await provider.get_config("cfg", namespace=namespace)).data == {"A": "1", "B": "2"}


async def test_concurrent_writers_of_one_version_one_wins(
    provider: GcpProvider, emulator: GcpEmulator, namespace: str, spec_factory: SpecFactory
) -> None:
    await provider.start(spec_factory("race", namespace))
    base = await provider.apply_config(ConfigMapPatch("race", namespace, set={"N": "0"}))
    results = await asyncio.gather(
        *(
            provider.apply_config(
                ConfigMapPatch("race", namespace, set={"N": str(n)}, expected_version=base.version)
            )
            for n in (1, 2)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, ConfigVersionConflict) for r in results) == 1, results
    (winner,) = [r for r in results if not isinstance(r, BaseException)]
    assert (await provider.get_config("race", namespace=namespace)) == winner


# -- metrics from Cloud Monitoring -----------------------------------------------------------


async def _write_series(
    emulator: GcpEmulator, short: str, metric: str, value: monitoring_v3.TypedValue
) -> None:
    client = monitoring_v3.MetricServiceAsyncClient(
        transport=MetricServiceGrpcAsyncIOTransport(
            channel=grpc.aio.insecure_channel(emulator.address)
        )
    )
    now = time.time()
    point = monitoring_v3.Point(
        interval=monitoring_v3.TimeInterval(
            end_time=timestamp_pb2.Timestamp(seconds=int(now) - 30)
        ),
        value=value,
    )
    series = monitoring_v3.TimeSeries(
        metric={"type": metric},
        resource={
            "type": "cloud_run_revision",
            "labels": {"service_name": short, "location": "europe-west4"},
        },
        points=[point],
    )
    try:
        await client.create_time_series(name=f"projects/{PROJECT}", time_series=[series])
    finally:
        await client.transport.close()  # type: ignore[no-untyped-call]


async def test_metrics_come_from_the_written_time_series(
    provider: GcpProvider, emulator: GcpEmulator, namespace: str, spec_factory: SpecFactory
) -> None:
    spec = replace(spec_factory("met", namespace, replicas=2), resources=Resources("2", "1Gi"))
    await provider.start(spec)
    short = cloud_run_name(namespace, "met")
    typed = monitoring_v3.TypedValue
    await _write_series(emulator, short, INSTANCE_COUNT, typed(int64_value=3))
    await _write_series(
        emulator, short, CPU_UTILIZATIONS, typed(distribution_value={"count": 3, "mean": 0.5})
    )
    await _write_series(
        emulator, short, MEMORY_UTILIZATIONS, typed(distribution_value={"count": 3, "mean": 0.25})
    )
    await _write_series(emulator, short, REQUEST_COUNT, typed(int64_value=42))
    await _write_series(emulator, short, RECEIVED_BYTES, typed(int64_value=1000))

    stream = provider.stream_metrics("met", namespace=namespace, interval_seconds=0.05)
    try:
        sample = await anext(stream)
    finally:
        await stream.aclose()
    assert sample.ok, sample.error
    assert sample.replicas == 3
    assert sample.cpu_percent == pytest.approx(100.0)  # half of 2 CPUs = one core
    assert sample.memory_bytes == 3 * 2**30 // 4
    assert sample.extra["request_count"] == 42
    assert (sample.network_rx_bytes, sample.network_tx_bytes) == (1000, 0)


async def test_metrics_stream_survives_backend_errors(
    provider: GcpProvider, emulator: GcpEmulator, namespace: str, spec_factory: SpecFactory
) -> None:
    await provider.start(spec_factory("flaky", namespace, replicas=2))
    emulator.log.inject("ListTimeSeries", grpc.StatusCode.UNAVAILABLE, "backend down", times=1)
    stream = provider.stream_metrics("flaky", namespace=namespace, interval_seconds=0.05)
    try:
        first, second = await anext(stream), await anext(stream)
    finally:
        await stream.aclose()
    assert not first.ok and "unavailable" in first.error
    assert second.ok and second.replicas == 2 and second.memory_bytes > 0


async def test_metrics_of_unknown_service_are_not_found(
    provider: GcpProvider, namespace: str
) -> None:
    with pytest.raises(DeploymentNotFoundError):
        await anext(provider.stream_metrics("ghost", namespace=namespace))


async def test_concurrent_first_starts_converge_on_one_service(
    provider: GcpProvider, emulator: GcpEmulator, namespace: str, spec_factory: SpecFactory
) -> None:
    spec = spec_factory("twin", namespace, replicas=2)
    first, second = await asyncio.gather(provider.start(spec), provider.start(spec))
    assert first.desired_replicas == second.desired_replicas == 2
    assert emulator.log.count("CreateService") == 2
    assert len(emulator.run.services) == 1
