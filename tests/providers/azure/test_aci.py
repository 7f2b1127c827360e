"""Azure Container Instances mode beyond the contract: translation, ARM traffic, faults.

Everything runs the real azure-mgmt clients against the ARM emulator over HTTP.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from alphaswarm_controller.providers.azure import AciProvider
from alphaswarm_controller.providers.azure.aci import TAG_SIZING, TAG_STOPPED
from alphaswarm_controller.providers.azure.retry import CONFLICT_ATTEMPTS, RETRY_TOTAL
from alphaswarm_core.providers.protocol import (
    BackendConflictError,
    BackendPermissionDenied,
    BackendQuotaExceeded,
    BackendRejectedError,
    BackendUnavailableError,
    ConfigMapPatch,
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    InfrastructureProviderUnavailable,
    InvalidSpecError,
    PortSpec,
    Resources,
)
from alphaswarm_core.testing import ready, wait_for
from tests.fakes.arm_emulator import ArmEmulator
from tests.fakes.arm_testing import make_provider
from tests.fakes.faults import Kind

from .conftest import IMAGE

GROUPS = r"/containerGroups"
PUT = "arm:ContainerGroups_CreateOrUpdate"
LIST = "arm:ContainerGroups_ListByResourceGroup"
STOP = "arm:ContainerGroups_Stop"


@pytest.fixture
def arm() -> Iterator[ArmEmulator]:
    with ArmEmulator(page_size=2) as emulator:
        yield emulator


def spec(service: str, replicas: int = 1, **kwargs: object) -> DeploymentSpec:
    fields: dict[str, object] = {"image": IMAGE, "replicas": replicas, "namespace": "team"}
    fields.update(kwargs)
    return DeploymentSpec(service_id=service, **fields).validate()  # type: ignore[arg-type]


def body(arm: ArmEmulator, name: str) -> dict[str, object]:
    return arm.store.groups[name].body


async def test_start_creates_tagged_container_groups(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    await provider.start(
        spec(
            "web",
            2,
            env={"MODE": "a"},
            labels={"team": "blue"},
            ports=(PortSpec(8080, 8080),),
            resources=Resources(cpu="250m", memory="512Mi"),
        )
    )
    assert arm.store.names() == ["team-web-0", "team-web-1"]
    group = body(arm, "team-web-1")
    tags = group["tags"]
    assert isinstance(tags, dict)
    assert tags["alphaswarm-service"] == "web"
    assert tags["alphaswarm-namespace"] == "team"
    assert tags["alphaswarm-ordinal"] == "1"
    assert tags["alphaswarm-config-version"] == "0"
    assert tags["team"] == "blue"
    props = group["properties"]
    assert isinstance(props, dict)
    container = props["containers"][0]["properties"]
    assert container["resources"]["requests"] == {"cpu": 0.25, "memoryInGB": 0.5}
    assert {"name": "MODE", "value": "a"} in container["environmentVariables"]
    assert props["ipAddress"]["ports"] == [{"protocol": "TCP", "port": 8080}]
    assert props["restartPolicy"] == "Always"


async def test_start_twice_sends_no_writes(arm: ArmEmulator, provider: AciProvider) -> None:
    await provider.start(spec("api", 2))
    arm.reset_counts()
    await provider.start(spec("api", 2))
    assert arm.count("PUT") == arm.count("DELETE") == arm.count("POST") == 0


async def test_changed_spec_recreates_groups(arm: ArmEmulator, provider: AciProvider) -> None:
    await provider.start(spec("api", 2, env={"V": "1"}))
    arm.reset_counts()
    await provider.start(spec("api", 2, env={"V": "2"}))
    assert arm.count("DELETE", GROUPS) == 2
    assert arm.count("PUT", GROUPS) == 2
    env = body(arm, "team-api-0")["properties"]["containers"][0]["properties"]  # type: ignore[index]
    assert {"name": "V", "value": "2"} in env["environmentVariables"]


async def test_list_deployments_is_one_paged_listing(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    for name in ("a", "b", "c"):
        await provider.start(spec(name, 2))
    arm.reset_counts()
    listed = await provider.list_deployments(namespace="team")
    assert sorted(s.service_id for s in listed) == ["a", "b", "c"]
    assert all(s.desired_replicas == 2 for s in listed)
    # 6 groups, 2 per page: three GETs of the listing (following nextLink), nothing else.
    assert arm.count("GET") == 3
    assert arm.count("GET", GROUPS + "$") == 3


async def test_stop_keeps_first_group_stopped(arm: ArmEmulator, provider: AciProvider) -> None:
    await provider.start(spec("job", 3))
    await wait_for(provider, "job", "team", ready(3), timeout=10)
    arm.reset_counts()
    stopped = await provider.stop("job", namespace="team")
    assert stopped.state is DeploymentState.STOPPED
    assert arm.count("DELETE", GROUPS) == 2
    assert arm.count("GET", r"/operations/") >= 2, "deletes are polled to completion"
    assert arm.store.names() == ["team-job-0"]
    assert arm.store.is_stopped("team-job-0")
    assert body(arm, "team-job-0")["tags"][TAG_STOPPED] == "true"  # type: ignore[index]
    listed = await provider.list_deployments(namespace="team")
    assert [(s.service_id, s.state) for s in listed] == [("job", DeploymentState.STOPPED)]
    await provider.scale("job", 2, namespace="team")
    await wait_for(provider, "job", "team", ready(2), timeout=10)
    assert not arm.store.is_stopped("team-job-0")


async def test_scale_creates_concurrently_within_the_bound(arm: ArmEmulator) -> None:
    provider = make_provider(arm, AciProvider, ALPHASWARM_AZURE_MAX_PARALLEL="3")
    await provider.start(spec("burst", 1))
    arm.gather = {"PUT": 3, "DELETE": 3}  # each request waits until 3 were in flight
    status = await provider.scale("burst", 8, namespace="team")
    assert status.desired_replicas == 8
    assert arm.store.names() == [f"team-burst-{i}" for i in range(8)]
    assert arm.max_in_flight["PUT"] == 3, "7 creates, at most 3 at once"
    await provider.scale("burst", 2, namespace="team")
    assert arm.store.names() == ["team-burst-0", "team-burst-1"]
    assert arm.max_in_flight["DELETE"] == 3
    await provider.close()


async def test_failed_scale_up_deletes_what_it_created(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    await provider.start(spec("q", 1))
    arm.faults.inject(
        PUT,
        Kind.CONFLICT,
        code="ContainerGroupQuotaReached",
        message="Resource type 'Microsoft.ContainerInstance/containerGroups' container group "
        "quota 'StandardCores' exceeded in region 'westeurope'.",
        match=r"/team-q-3$",
    )
    with pytest.raises(BackendQuotaExceeded) as caught:
        await provider.scale("q", 5, namespace="team")
    assert caught.value.code == "RESOURCE_EXHAUSTED"
    assert "quota" in caught.value.message
    assert arm.store.names() == ["team-q-0"]
    status = await provider.status("q", namespace="team")
    assert status.desired_replicas == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"resources": Resources(cpu="5")}, "spec.resources.cpu"),
        ({"resources": Resources(cpu="50m")}, "spec.resources.cpu"),
        ({"resources": Resources(memory="32Gi")}, "spec.resources.memory"),
        # 16.05 GiB rounds up to 16.1 GB, past the 16 GB of a container group.
        ({"resources": Resources(memory="16436Mi")}, "spec.resources.memory"),
        ({"service_id": "a--b"}, "spec.service_id"),
        ({"service_id": "s" * 60}, "spec.service_id"),
        ({"labels": {"app.kubernetes.io/name": "x"}}, "spec.labels['app.kubernetes.io/name']"),
        ({"ports": (PortSpec(80, 8080),)}, "spec.ports[0].host_port"),
        (
            {"provider_options": {"restart_policy": "Sometimes"}},
            "spec.provider_options['restart_policy']",
        ),
        ({"image": "", "command": ("sleep", "1")}, "spec.image"),
    ],
)
async def test_bad_specs_fail_before_any_call(
    arm: ArmEmulator, provider: AciProvider, kwargs: dict[str, object], field: str
) -> None:
    fields: dict[str, object] = {"service_id": "bad", **kwargs}
    service = str(fields.pop("service_id"))
    with pytest.raises(InvalidSpecError) as caught:
        await provider.start(spec(service, 1, **fields))
    assert field in {v.field for v in caught.value.violations}
    assert arm.requests == []


async def test_scale_beyond_name_limit_is_invalid(arm: ArmEmulator, provider: AciProvider) -> None:
    service = "s" * 56  # "team-" + 56 + "-9" is 63 characters, "-10" one too many
    await provider.start(spec(service, 1))
    arm.reset_counts()
    with pytest.raises(InvalidSpecError) as caught:
        await provider.scale(service, 11, namespace="team")
    assert caught.value.violations[0].field == "replicas"
    assert arm.requests == []


async def test_authorization_failed_names_the_role(arm: ArmEmulator, provider: AciProvider) -> None:
    arm.faults.inject(
        PUT,
        Kind.DENIED,
        message="The client 'x' does not have authorization to perform action "
        "'Microsoft.ContainerInstance/containerGroups/write'.",
    )
    with pytest.raises(BackendPermissionDenied) as caught:
        await provider.start(spec("deny", 1))
    assert "Contributor" in caught.value.message
    assert "alphaswarm-rg" in caught.value.message
    assert caught.value.code == "PERMISSION_DENIED"


async def test_a_long_retry_after_goes_back_to_the_caller_at_once(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    await provider.start(spec("busy", 1))
    arm.faults.inject(LIST, Kind.THROTTLED, retry_after=7)
    before = arm.faults.count(LIST)
    with pytest.raises(BackendUnavailableError) as caught:
        await provider.status("busy", namespace="team")
    assert caught.value.code == "UNAVAILABLE"
    assert caught.value.retry_after_seconds == 7.0
    assert arm.faults.count(LIST) == before + 1, "7 s is longer than the provider waits itself"
    assert (await provider.status("busy", namespace="team")).desired_replicas == 1


async def test_short_throttling_and_5xx_are_retried_a_bounded_number_of_times(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    await provider.start(spec("flaky", 1))
    await wait_for(provider, "flaky", "team", ready(1), timeout=10)
    arm.faults.inject(LIST, Kind.THROTTLED, times=2, retry_after=0.05)
    before = arm.faults.count(LIST)
    assert (await provider.status("flaky", namespace="team")).desired_replicas == 1
    assert arm.faults.count(LIST) == before + 3
    # POST is retried on 503 too (ARM did not act on it); a stop still happens once.
    arm.faults.inject(STOP, Kind.UNAVAILABLE, times=1)
    stopped = await provider.stop("flaky", namespace="team")
    assert stopped.state is DeploymentState.STOPPED
    assert arm.faults.count(STOP) == 2
    # A 503 that never ends stops after the policy's attempts.
    arm.faults.inject(LIST, Kind.UNAVAILABLE, times=0)
    before = arm.faults.count(LIST)
    with pytest.raises(BackendUnavailableError):
        await provider.status("flaky", namespace="team")
    assert arm.faults.count(LIST) - before == 1 + RETRY_TOTAL


async def test_operations_on_a_group_still_provisioning_are_retried_until_it_settles() -> None:
    # ACI answers 409 to stop/start/tag updates while the group is being provisioned:
    # scale to 0 right after start must wait that out, not fail. The group provisions
    # until a second attempt shows that the first was refused, then settles (the 6
    # attempts' backoff spans at least 3.9 s).
    with ArmEmulator(provision_delay=3600.0) as arm:
        provider = make_provider(arm, AciProvider)
        await provider.start(spec("young", 1))
        scaling = asyncio.create_task(provider.scale("young", 0, namespace="team"))
        async with asyncio.timeout(30):
            while arm.faults.count("arm:ContainerGroups_Update") < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        arm.store.settle("team-young-0")
        stopped = await scaling
        assert stopped.state is DeploymentState.STOPPED
        conflicts = arm.faults.count("arm:ContainerGroups_Update")
        assert 2 <= conflicts <= CONFLICT_ATTEMPTS, "refused at least once, retried, bounded"
        assert arm.store.is_stopped("team-young-0")
        await provider.close()


async def test_a_conflict_that_never_clears_is_reported_after_bounded_attempts(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    await provider.start(spec("stuck", 1))
    await wait_for(provider, "stuck", "team", ready(1), timeout=10)
    arm.faults.inject(STOP, Kind.CONFLICT, times=0)
    with pytest.raises(BackendConflictError) as caught:
        await provider.stop("stuck", namespace="team")
    assert caught.value.code == "ABORTED"
    assert "still changing" in caught.value.message
    assert arm.faults.count(STOP) == CONFLICT_ATTEMPTS


async def _lifecycle(arm: ArmEmulator) -> None:
    provider = make_provider(arm, AciProvider)
    await provider.start(spec("life", 3))
    await wait_for(provider, "life", "team", ready(3), timeout=30)
    await provider.scale("life", 5, namespace="team")
    await wait_for(provider, "life", "team", ready(5), timeout=30)
    await provider.apply_config(ConfigMapPatch("life", "team", set={"K": "v"}))
    await provider.scale("life", 1, namespace="team")
    await provider.stop("life", namespace="team")
    await provider.start(spec("life", 2))
    await wait_for(provider, "life", "team", ready(2), timeout=30)
    await provider.close()


WRITES = ("PUT", "DELETE", "POST", "PATCH")


async def test_throttling_and_5xx_throughout_cost_one_request_per_fault() -> None:
    """Under background faults the same lifecycle succeeds, and each refused write is
    sent again exactly once more: no loop spins on them."""
    with ArmEmulator() as clean:
        await _lifecycle(clean)
        clean_writes = sum(clean.counts()[m] for m in WRITES)
    with ArmEmulator() as arm:
        arm.faults.background(Kind.THROTTLED, every=5)
        arm.faults.background(Kind.UNAVAILABLE, every=7)
        await _lifecycle(arm)
        failed_writes = sum(
            count
            for operation, count in arm.faults.failed.items()
            if not operation.endswith(("_Get", "_ListByResourceGroup", "_AsyncOperation"))
        )
        assert failed_writes > 0, "the background faults hit no write"
        assert sum(arm.counts()[m] for m in WRITES) == clean_writes + failed_writes


async def test_memory_is_rounded_up_to_acis_step_and_said_so(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    started = await provider.start(spec("small", 1, resources=Resources(memory="256Mi")))
    requests = body(arm, "team-small-0")["properties"]["containers"][0]["properties"]  # type: ignore[index]
    assert requests["resources"]["requests"]["memoryInGB"] == 0.3
    note = "memory 256Mi rounded up to 0.3 GB"
    assert note in body(arm, "team-small-0")["tags"][TAG_SIZING]  # type: ignore[index]
    assert note in started.message
    assert note in (await provider.status("small", namespace="team")).message
    exact = await provider.start(spec("exact", 1, resources=Resources(memory="1536Mi")))
    assert "rounded" not in exact.message
    assert TAG_SIZING not in body(arm, "team-exact-0")["tags"]  # type: ignore[operator]


async def test_status_reads_instance_views(arm: ArmEmulator, provider: AciProvider) -> None:
    arm.store.run_delay = 3600.0  # the containers run when settled below
    await provider.start(spec("slow", 2))
    early = await provider.status("slow", namespace="team")
    assert early.state is DeploymentState.PENDING
    assert early.ready_replicas == 0
    for name in ("team-slow-0", "team-slow-1"):
        arm.store.settle(name)
    settled = await wait_for(provider, "slow", "team", ready(2), timeout=10)
    assert all(i.state == "running" for i in settled.instances)
    assert settled.image == IMAGE


async def test_concurrent_operations_on_distinct_services(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    names = [f"c{uuid.uuid4().hex[:6]}" for _ in range(4)]
    await asyncio.gather(*(provider.start(spec(n, 2)) for n in names))
    listed = await provider.list_deployments(namespace="team")
    assert sorted(s.service_id for s in listed) == sorted(names)


async def test_failed_provisioning_is_failed_with_the_reason(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    arm.store.failing_images.add("registry.example/missing:1")
    await provider.start(spec("broken", 1, image="registry.example/missing:1"))

    def failed(status: DeploymentStatus) -> bool:
        return status.state is DeploymentState.FAILED

    status = await wait_for(provider, "broken", "team", failed, timeout=10)
    assert status.ready_replicas == 0
    assert "ErrImagePull" in status.instances[0].message


async def test_invalid_settings_are_named(arm: ArmEmulator) -> None:
    provider = make_provider(arm, AciProvider, ALPHASWARM_AZURE_MAX_PARALLEL="many")
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        await provider.health()
    assert caught.value.reason == "SETTING_INVALID"
    assert "ALPHASWARM_AZURE_MAX_PARALLEL" in caught.value.message


async def test_failed_first_start_leaves_nothing(arm: ArmEmulator, provider: AciProvider) -> None:
    arm.faults.inject(
        PUT, Kind.CONFLICT, code="ContainerGroupQuotaReached", match=r"/team-fresh-2$"
    )
    with pytest.raises(BackendQuotaExceeded):
        await provider.start(spec("fresh", 3))
    assert arm.store.names() == []
    assert await provider.list_deployments(namespace="team") == []


async def test_groups_alphaswarm_did_not_create_are_left_alone(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    foreign = {
        "location": "westeurope",
        "tags": {"owner": "someone-else"},
        "properties": {
            "osType": "Linux",
            "containers": [
                {
                    "name": "x",
                    "properties": {
                        "image": IMAGE,
                        "resources": {"requests": {"cpu": 1, "memoryInGB": 1}},
                    },
                }
            ],
        },
    }
    arm.store.put_group("alphaswarm-rg", "team-legacy-0", foreign)
    assert await provider.list_deployments() == []
    with pytest.raises(BackendRejectedError) as caught:
        await provider.start(spec("legacy", 1))
    assert caught.value.reason == "NAME_TAKEN"
    assert arm.store.groups["team-legacy-0"].body["tags"] == {"owner": "someone-else"}
