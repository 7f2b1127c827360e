"""CloudRunProvider against the Cloud Run emulator: the template, limits, failures, deadlines."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest
from google.cloud import run_v2

from alphaswarm_controller.providers.gcp import CloudRunProvider
from alphaswarm_controller.providers.gcp.cloudrun import cloud_run_name
from alphaswarm_core.call import CallContext, current_call
from alphaswarm_core.providers.protocol import (
    BackendPermissionDenied,
    BackendRejectedError,
    BackendTimeoutError,
    DeploymentNotFoundError,
    DeploymentSpec,
    DeploymentState,
    InfrastructureProviderUnavailable,
    InvalidSpecError,
    PortSpec,
    Resources,
    RolloutState,
    SettingInvalid,
)
from alphaswarm_core.testing import SpecFactory
from tests.fakes.faults import Kind
from tests.fakes.gcp_auth import PROJECT
from tests.fakes.gcp_run import container_unhealthy, image_not_found
from tests.fakes.gcp_server import GcpEmulator
from tests.waiting import until

from .conftest import IMAGE, REGION, served

GEN1 = run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN1


def _cloud_run(emulator: GcpEmulator, namespace: str, service_id: str) -> run_v2.Service:
    short = cloud_run_name(namespace, service_id)
    (service,) = [s for n, s in emulator.run.services.items() if n.endswith(f"/{short}")]
    return service


async def test_spec_maps_onto_the_service_template(
    cloud_run: CloudRunProvider, emulator: GcpEmulator, namespace: str
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
    status = await cloud_run.start(spec)
    assert (status.state, status.desired_replicas, status.ready_replicas) == (
        DeploymentState.RUNNING,
        3,
        3,
    )
    assert status.labels == {"team": "core"} and status.image == IMAGE

    service = _cloud_run(emulator, namespace, "web")
    assert service.name == (
        f"projects/{PROJECT}/locations/{REGION}/services/{cloud_run_name(namespace, 'web')}"
    )
    (container,) = service.template.containers
    assert container.image == IMAGE
    assert (list(container.command), list(container.args)) == (["/server"], ["--port", "9000"])
    assert {e.name: e.value for e in container.env} == {"MODE": "prod", "LEVEL": "3"}
    assert [p.container_port for p in container.ports] == [9000]
    assert dict(container.resources.limits) == {"cpu": "2", "memory": "6144Mi"}
    # 1 vCPU or more: instance-based billing (CPU always allocated), Cloud Run's concurrency.
    assert not container.resources.cpu_idle
    assert service.template.max_instance_request_concurrency == 80
    assert service.template.service_account == ""
    assert service.scaling.scaling_mode == run_v2.ServiceScaling.ScalingMode.MANUAL
    assert service.scaling.manual_instance_count == 3
    assert dict(service.labels) == {
        "team": "core",
        "managed-by": "alphaswarm",
        "alphaswarm-namespace": namespace,
        "alphaswarm-service": "web",
    }


async def test_below_one_cpu_gets_concurrency_one_and_request_based_billing(
    cloud_run: CloudRunProvider, emulator: GcpEmulator, namespace: str
) -> None:
    # Issue 17: `cpu: "500m"` failed with "Total cpu < 1 is not supported with concurrency > 1".
    spec = DeploymentSpec("small", namespace, image=IMAGE, resources=Resources(cpu="500m"))
    status = await cloud_run.start(spec)
    assert status.state is DeploymentState.RUNNING
    service = _cloud_run(emulator, namespace, "small")
    (container,) = service.template.containers
    assert dict(container.resources.limits) == {"cpu": "500m", "memory": "512Mi"}
    assert container.resources.cpu_idle, "below 1 vCPU Cloud Run needs request-based billing"
    assert service.template.max_instance_request_concurrency == 1
    assert service.template.execution_environment == GEN1

    updates = served(emulator, "run:UpdateService")
    await cloud_run.start(spec)
    assert served(emulator, "run:UpdateService") == updates, "what Cloud Run filled in holds"


@pytest.mark.parametrize(
    ("resources", "limits"),
    [
        # Issue 17: `cpu: "4"` with the default 512Mi failed; the default follows the CPU.
        (Resources(cpu="4"), {"cpu": "4", "memory": "2048Mi"}),
        (Resources(cpu="8"), {"cpu": "8", "memory": "4096Mi"}),
        (Resources(memory="6Gi"), {"cpu": "2", "memory": "6144Mi"}),
        (Resources(memory="256Mi"), {"cpu": "1", "memory": "256Mi"}),
    ],
)
async def test_an_unspecified_limit_fits_the_other(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    namespace: str,
    resources: Resources,
    limits: dict[str, str],
) -> None:
    await cloud_run.start(DeploymentSpec("sized", namespace, image=IMAGE, resources=resources))
    (container,) = _cloud_run(emulator, namespace, "sized").template.containers
    assert dict(container.resources.limits) == limits


async def test_revisions_only_when_the_template_changes(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    namespace: str,
    cloud_run_specs: SpecFactory,
) -> None:
    spec = cloud_run_specs("api", namespace, replicas=1, env={"A": "1"})
    await cloud_run.start(spec)
    name = _cloud_run(emulator, namespace, "api").name
    assert len(emulator.run.revisions[name]) == 1

    updates = served(emulator, "run:UpdateService")
    await cloud_run.start(spec)
    assert served(emulator, "run:UpdateService") == updates, "an unchanged spec sends no update"

    await cloud_run.scale("api", 4, namespace=namespace)
    assert len(emulator.run.revisions[name]) == 1, "scaling creates no revision"

    changed = await cloud_run.start(cloud_run_specs("api", namespace, replicas=4, env={"A": "2"}))
    assert len(emulator.run.revisions[name]) == 2
    revision = _cloud_run(emulator, namespace, "api").latest_ready_revision.rsplit("/", 1)[1]
    assert {i.instance_id for i in changed.instances} == {f"{revision}-{n}" for n in range(4)}


async def test_stop_scales_to_zero_and_keeps_the_service(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    namespace: str,
    cloud_run_specs: SpecFactory,
) -> None:
    await cloud_run.start(cloud_run_specs("job", namespace, replicas=2))
    stopped = await cloud_run.stop("job", namespace=namespace)
    assert (stopped.state, stopped.desired_replicas, stopped.ready_replicas) == (
        DeploymentState.STOPPED,
        0,
        0,
    )
    assert _cloud_run(emulator, namespace, "job").scaling.manual_instance_count == 0
    assert emulator.faults.count("run:DeleteService") == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"resources": Resources(cpu="3")}, "spec.resources.cpu"),
        ({"resources": Resources(cpu="50m")}, "spec.resources.cpu"),
        ({"resources": Resources(cpu="12")}, "spec.resources.cpu"),
        ({"resources": Resources(memory="64Mi")}, "spec.resources.memory"),
        ({"resources": Resources(memory="40Gi")}, "spec.resources.memory"),
        ({"resources": Resources(cpu="1", memory="8Gi")}, "spec.resources.memory"),
        # The memory minimums of the vCPU and memory table (issue 17).
        ({"resources": Resources(cpu="4", memory="512Mi")}, "spec.resources.memory"),
        ({"resources": Resources(cpu="6", memory="2Gi")}, "spec.resources.memory"),
        ({"resources": Resources(cpu="8", memory="3Gi")}, "spec.resources.memory"),
        # Below 1 vCPU: > 512Mi needs 0.5 vCPU, > 1Gi needs 1 vCPU.
        ({"resources": Resources(cpu="250m", memory="768Mi")}, "spec.resources.memory"),
        ({"resources": Resources(cpu="500m", memory="2Gi")}, "spec.resources.memory"),
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
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    namespace: str,
    change: dict[str, object],
    field: str,
) -> None:
    spec = replace(DeploymentSpec("bad", namespace, image=IMAGE), **change)  # type: ignore[arg-type]
    with pytest.raises(InvalidSpecError) as caught:
        await cloud_run.start(spec)
    assert field in [v.field for v in caught.value.violations]
    assert emulator.faults.count() == 0


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("ALPHASWARM_GCP_REGION", "moon-base"),
        ("ALPHASWARM_GCP_PROJECT", "Not A Project"),
        ("ALPHASWARM_GCP_SERVICE_ACCOUNT", "someone@example.com"),
    ],
)
async def test_a_bad_setting_is_the_operators_error_before_any_call(
    gcp_env: dict[str, str],
    emulator: GcpEmulator,
    cloud_run_specs: SpecFactory,
    setting: str,
    value: str,
) -> None:
    provider = CloudRunProvider(env={**gcp_env, setting: value})
    try:
        # A bad server setting is FAILED_PRECONDITION naming the variable, never the
        # caller's INVALID_ARGUMENT.
        with pytest.raises(SettingInvalid) as caught:
            await provider.start(cloud_run_specs("svc", "default"))
        assert caught.value.code == "FAILED_PRECONDITION"
        assert caught.value.metadata == {"setting": setting}
        with pytest.raises(SettingInvalid):
            await provider.health()
    finally:
        await provider.close()
    assert emulator.faults.count() == 0


async def test_the_runtime_service_account_setting_is_the_revisions_identity(
    gcp_env: dict[str, str], emulator: GcpEmulator, cloud_run_specs: SpecFactory, namespace: str
) -> None:
    account = f"runtime@{PROJECT}.iam.gserviceaccount.com"
    provider = CloudRunProvider(env={**gcp_env, "ALPHASWARM_GCP_SERVICE_ACCOUNT": account})
    try:
        await provider.start(cloud_run_specs("ident", namespace))
        assert _cloud_run(emulator, namespace, "ident").template.service_account == account
        assert (await provider.health()).details["service_account"] == account
        updates = served(emulator, "run:UpdateService")
        await provider.start(cloud_run_specs("ident", namespace))
        assert served(emulator, "run:UpdateService") == updates
    finally:
        await provider.close()


async def test_failed_create_leaves_no_service(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    namespace: str,
    cloud_run_specs: SpecFactory,
) -> None:
    emulator.run.break_image(IMAGE, image_not_found(IMAGE))
    with pytest.raises(BackendRejectedError, match="not found"):
        await cloud_run.start(cloud_run_specs("broken", namespace))
    assert served(emulator, "run:DeleteService") == 1
    assert emulator.run.services == {}
    with pytest.raises(DeploymentNotFoundError):
        await cloud_run.status("broken", namespace=namespace)


async def test_failed_update_keeps_the_previous_revision_serving(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    namespace: str,
    cloud_run_specs: SpecFactory,
) -> None:
    await cloud_run.start(cloud_run_specs("roll", namespace, replicas=2, env={"V": "1"}))
    broken = "us-docker.pkg.dev/team/app:crashes"
    emulator.run.break_image(broken, container_unhealthy())
    # The change was made: its rollout failed, which the status says (the call does not).
    started = await cloud_run.start(
        replace(cloud_run_specs("roll", namespace, replicas=2, env={"V": "2"}), image=broken)
    )
    assert started.rollout is not None and started.rollout.state is RolloutState.FAILED
    status = await cloud_run.status("roll", namespace=namespace)
    assert status.state is DeploymentState.DEGRADED
    assert status.ready_replicas == 2 and "PORT=8080" in status.message
    assert (status.revision, status.observed_revision) == (2, 1)


async def test_operations_are_bounded_by_the_callers_deadline(
    gcp_env: dict[str, str], emulator: GcpEmulator, cloud_run_specs: SpecFactory
) -> None:
    emulator.operations.seconds = 3600.0  # provisioning that outlives the call
    provider = CloudRunProvider(env=gcp_env)
    token = current_call.set(CallContext("StartDeployment", "r-1", "", time.monotonic() + 0.5))
    try:
        with pytest.raises(BackendTimeoutError):
            await provider.start(cloud_run_specs("slow", "default"))
    finally:
        current_call.reset(token)
        await provider.close()
    # The poll interval grows x1.5 from 0.02 s: half a second is about eight polls.
    assert emulator.faults.count("longrunning:GetOperation") <= 12


async def test_a_reconciling_service_is_pending_until_its_operation_completes(
    gcp_env: dict[str, str], emulator: GcpEmulator, cloud_run_specs: SpecFactory, namespace: str
) -> None:
    emulator.faults.clear()
    emulator.operations.seconds = 3600.0  # until released below, after the look
    provider = CloudRunProvider(env=gcp_env)
    await provider.health()  # connected: the deadline below is all the create's
    token = current_call.set(CallContext("StartDeployment", "r-2", "", time.monotonic() + 0.3))
    try:
        with pytest.raises(BackendTimeoutError):
            await provider.start(cloud_run_specs("later", namespace))
    finally:
        current_call.reset(token)
    try:
        assert (await provider.status("later", namespace=namespace)).state is (
            DeploymentState.PENDING
        )
        emulator.operations.release()
        status = await until(
            lambda: provider.status("later", namespace=namespace),
            "the service to leave PENDING",
            holds=lambda s: s.state is not DeploymentState.PENDING,
        )
        assert status.state is DeploymentState.RUNNING, "it settles whether or not it is polled"
    finally:
        await provider.close()


async def test_list_follows_page_tokens(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    namespace: str,
    cloud_run_specs: SpecFactory,
) -> None:
    names = {f"svc-{n}" for n in range(5)}
    for name in names:
        await cloud_run.start(cloud_run_specs(name, namespace))
    calls = served(emulator, "run:ListServices")
    listed = await cloud_run.list_deployments(namespace=namespace)
    assert {s.service_id for s in listed} == names
    assert served(emulator, "run:ListServices") - calls == 3, "five services in pages of two"


async def test_project_setting_overrides_the_credentials_project(
    gcp_env: dict[str, str], emulator: GcpEmulator, cloud_run_specs: SpecFactory
) -> None:
    provider = CloudRunProvider(env={**gcp_env, "ALPHASWARM_GCP_PROJECT": "other-project"})
    try:
        await provider.start(cloud_run_specs("svc", "default"))
        health = await provider.health()
    finally:
        await provider.close()
    assert health.details["project"] == "other-project"
    assert all(n.startswith("projects/other-project/") for n in emulator.run.services)


async def test_concurrent_first_starts_converge_on_one_service(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    namespace: str,
    cloud_run_specs: SpecFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Both starts look before either creates, so that both create and one of them meets
    # ALREADY_EXISTS: left to the event loop, the second may look after the first created
    # (then it converges without a create, and this case tests nothing).
    looked = asyncio.Barrier(2)
    find = cloud_run._find
    first_looks = 0

    async def find_then_meet(namespace: str, service_id: str) -> run_v2.Service | None:
        nonlocal first_looks
        found = await find(namespace, service_id)
        first_looks += 1
        if first_looks <= 2:
            async with asyncio.timeout(30):
                await looked.wait()
        return found

    monkeypatch.setattr(cloud_run, "_find", find_then_meet)
    spec = cloud_run_specs("twin", namespace, replicas=2)
    first, second = await asyncio.gather(cloud_run.start(spec), cloud_run.start(spec))
    assert first.desired_replicas == second.desired_replicas == 2
    assert served(emulator, "run:CreateService") == 2, "the second one was ALREADY_EXISTS"
    assert len(emulator.run.services) == 1


async def test_a_concurrent_writer_is_read_again_not_overwritten(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    namespace: str,
    cloud_run_specs: SpecFactory,
) -> None:
    await cloud_run.start(cloud_run_specs("busy", namespace, replicas=1))
    emulator.faults.clear()
    # The etag the provider read is stale by the time its update arrives (AIP-154: ABORTED).
    emulator.faults.inject("run:UpdateService", Kind.CONFLICT, times=1)
    status = await cloud_run.scale("busy", 3, namespace=namespace)
    assert status.desired_replicas == 3
    assert emulator.faults.count("run:UpdateService") == 2


# -- health and credentials ------------------------------------------------------------------


async def test_permission_denied_names_the_role(
    cloud_run: CloudRunProvider, emulator: GcpEmulator
) -> None:
    emulator.faults.clear()
    emulator.faults.inject("run:ListServices", Kind.DENIED, message="run.services.list denied")
    with pytest.raises(BackendPermissionDenied, match=r"roles/run\.developer") as caught:
        await cloud_run.health()
    assert caught.value.metadata["role"] == "roles/run.developer"


async def test_missing_credentials_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from google.auth.compute_engine import _metadata

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud login
    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)  # not on GCE: no metadata server
    provider = CloudRunProvider(env={"ALPHASWARM_GCP_REGION": "us-central1"})
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        await provider.health()
    assert caught.value.reason == "CREDENTIALS_MISSING"
    assert "GOOGLE_APPLICATION_CREDENTIALS" in caught.value.message
    assert "Workload Identity" in caught.value.message

    absent = CloudRunProvider(env={"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "nope.json")})
    with pytest.raises(InfrastructureProviderUnavailable, match="GOOGLE_APPLICATION_CREDENTIALS"):
        await absent.health()


async def test_health_reports_project_and_region(cloud_run: CloudRunProvider) -> None:
    health = await cloud_run.health()
    assert health.details["project"] == PROJECT
    assert health.details["region"] == REGION
    assert (health.alias, health.kind, health.details["mode"]) == ("gcp", "gcp", "cloudrun")
