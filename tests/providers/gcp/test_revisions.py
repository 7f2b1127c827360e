"""Cloud Run revisions and rollouts beyond the contract: each failure reason Cloud Run's
conditions give, a rollout that outlives its progress deadline, the history bound, two
controllers on one service, what a rollback does to the config, and check-and-set on every
mutating call. Against the Cloud Run and Secret Manager emulators (tests/fakes/gcp_run.py),
under the background faults of conftest.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from google.cloud import run_v2

from alphaswarm_controller.providers.gcp import CloudRunProvider
from alphaswarm_controller.providers.gcp.cloudrun import cloud_run_name, serving_revision
from alphaswarm_controller.providers.gcp.revisions import (
    CHANGE_CAUSE_KEY,
    NUMBER_KEY,
    ROLLBACK_OF_KEY,
)
from alphaswarm_controller.providers.gcp.rollout import verdict
from alphaswarm_core.call import making_change
from alphaswarm_core.providers.models import ChangeRequest
from alphaswarm_core.providers.protocol import (
    ConfigMapPatch,
    DeploymentState,
    RevisionConflict,
    RevisionNotFound,
    RolloutState,
    SettingInvalid,
)
from alphaswarm_core.testing import SpecFactory, wait_for
from alphaswarm_core.testing.contract import rollout_done, rollout_succeeded
from tests.fakes.gcp_auth import PROJECT
from tests.fakes.gcp_run import (
    RevisionFailure,
    container_unhealthy,
    image_denied,
    image_not_found,
    quota_exceeded,
)
from tests.fakes.gcp_server import GcpEmulator

from .conftest import IMAGE, opened_cloud_run, served

BROKEN = "us-docker.pkg.dev/team/app:broken"


def _secret(namespace: str, service_id: str) -> str:
    return f"projects/{PROJECT}/secrets/alphaswarm-{cloud_run_name(namespace, service_id)}"


@pytest.fixture
async def other(gcp_env: dict[str, str]) -> AsyncIterator[CloudRunProvider]:
    """A second controller on the same project and region."""
    async with opened_cloud_run(gcp_env) as provider:
        yield provider


# -- why a rollout fails ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (image_not_found(BROKEN), "IMAGE_PULL_FAILED"),
        (image_denied(BROKEN), "IMAGE_PULL_FAILED"),
        (container_unhealthy(), "CRASH_LOOP"),
        (quota_exceeded(), "BACKEND_QUOTA_EXCEEDED"),
    ],
    ids=["not-found", "denied", "never-listens", "quota"],
)
async def test_each_revision_failure_has_its_reason(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    cloud_run_specs: SpecFactory,
    namespace: str,
    *,
    failure: RevisionFailure,
    reason: str,
) -> None:
    emulator.run.break_image(BROKEN, failure)
    await cloud_run.start(cloud_run_specs("web", namespace, replicas=2))
    await rollout_succeeded(cloud_run, "web", namespace, 1)
    await cloud_run.start(replace(cloud_run_specs("web", namespace, replicas=2), image=BROKEN))
    status = await wait_for(cloud_run, "web", namespace, rollout_done(2))
    assert status.rollout is not None and status.rollout.state is RolloutState.FAILED
    assert status.rollout.reason == reason, status.rollout
    assert failure.message in status.rollout.message
    # Traffic stays on the last ready revision: revision 1's instances keep serving.
    assert status.observed_revision == 1
    assert (status.state, status.ready_replicas) == (DeploymentState.DEGRADED, 2)
    conditions = {c.type: c for c in status.conditions}
    assert conditions["Available"].status is True
    assert (conditions["Progressing"].status, conditions["Progressing"].reason) == (False, reason)


async def test_scaling_after_a_failed_rollout_is_no_error(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    cloud_run_specs: SpecFactory,
    namespace: str,
) -> None:
    """Cloud Run reconciles towards the failed revision again (the operation fails as it
    did): the scale is made, and the status still shows that rollout FAILED."""
    emulator.run.break_image(BROKEN, image_not_found(BROKEN))
    await cloud_run.start(cloud_run_specs("web", namespace))
    await cloud_run.start(replace(cloud_run_specs("web", namespace), image=BROKEN))
    scaled = await cloud_run.scale("web", 3, namespace=namespace)
    assert (scaled.desired_replicas, scaled.revision, scaled.observed_revision) == (3, 2, 1)
    assert scaled.rollout is not None and scaled.rollout.reason == "IMAGE_PULL_FAILED"
    assert (await cloud_run.definition("web", namespace=namespace)).spec.replicas == 3


async def test_a_revision_not_ready_within_the_deadline_fails_on_it(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    cloud_run_specs: SpecFactory,
    namespace: str,
) -> None:
    """Provisioning that outlives the spec's progress deadline: the start returns once the
    deadline passed (the rollout FAILED), not when Cloud Run gives up."""
    await cloud_run.start(cloud_run_specs("slow", namespace))
    await rollout_succeeded(cloud_run, "slow", namespace, 1)
    emulator.operations.seconds = 3600.0  # the new revision never becomes ready meanwhile
    spec = replace(cloud_run_specs("slow", namespace, env={"V": "2"}), progress_deadline_seconds=2)
    began = time.monotonic()
    started = await cloud_run.start(spec)
    assert time.monotonic() - began < 30
    status = await wait_for(cloud_run, "slow", namespace, rollout_done(2))
    assert status.rollout is not None and status.rollout.state is RolloutState.FAILED
    assert status.rollout.reason == "PROGRESS_DEADLINE_EXCEEDED", status.rollout
    assert "not ready within 2s" in status.rollout.message
    assert started.revision == 2 and status.observed_revision == 1
    definition = await cloud_run.definition("slow", namespace=namespace)
    assert definition.spec.progress_deadline_seconds == 2


async def test_auto_rollback_of_a_crash_loop_is_an_automatic_revision(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    cloud_run_specs: SpecFactory,
    namespace: str,
) -> None:
    emulator.run.break_image(BROKEN, container_unhealthy())
    good = cloud_run_specs("web", namespace, env={"MODE": "good"})
    await cloud_run.start(good)
    await rollout_succeeded(cloud_run, "web", namespace, 1)
    await cloud_run.start(replace(good, image=BROKEN, auto_rollback=True))
    await rollout_succeeded(cloud_run, "web", namespace, 3)
    newest, failed, first = await cloud_run.list_revisions("web", namespace=namespace)
    assert (newest.number, newest.rollback_of, newest.automatic) == (3, 1, True)
    assert "revision 2 failed (CRASH_LOOP)" in newest.change_cause
    assert newest.spec.image == IMAGE and newest.spec.env == {"MODE": "good"}
    assert (failed.number, failed.spec.image, first.number) == (2, BROKEN, 1)


async def test_a_status_read_sends_the_auto_rollback_without_waiting_for_it(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    cloud_run_specs: SpecFactory,
    namespace: str,
) -> None:
    emulator.run.break_image(BROKEN, image_not_found(BROKEN))
    good = cloud_run_specs("web", namespace)
    await cloud_run.start(good)
    await rollout_succeeded(cloud_run, "web", namespace, 1)
    failed = await cloud_run.start(replace(good, image=BROKEN, auto_rollback=True))
    assert (failed.revision, failed.observed_revision) == (2, 1), "start itself rolls nothing"
    emulator.operations.seconds = 3600.0  # the rollback's revision takes long to be ready
    began = time.monotonic()
    status = await cloud_run.status("web", namespace=namespace)
    assert time.monotonic() - began < 10
    assert (status.revision, status.observed_revision) == (3, 1)
    assert status.rollout is not None and status.rollout.state is RolloutState.IN_PROGRESS


# -- numbering: what makes a revision, and who numbers it ------------------------------------


async def test_the_number_and_cause_ride_on_the_cloud_run_revision(
    cloud_run: CloudRunProvider, emulator: GcpEmulator, cloud_run_specs: SpecFactory, namespace: str
) -> None:
    with making_change(ChangeRequest(change_cause="first deploy: a change cause is free text")):
        await cloud_run.start(cloud_run_specs("web", namespace))
    await cloud_run.start(replace(cloud_run_specs("web", namespace), progress_deadline_seconds=60))
    await cloud_run.start(cloud_run_specs("web", namespace, replicas=3))
    assert (await cloud_run.definition("web", namespace=namespace)).revision == 1, (
        "the rollout policy and the replica count change no revision"
    )
    labelled = replace(cloud_run_specs("web", namespace, replicas=3), labels={"team": "core"})
    assert (await cloud_run.start(labelled)).revision == 2, "labels are part of what runs"
    short = cloud_run_name(namespace, "web")
    with emulator.plumbing.lock:
        names = [n for n in emulator.run.revision_resources if f"/services/{short}/" in n]
        annotations = [dict(emulator.run.revision_resources[n].annotations) for n in names]
    assert [a[NUMBER_KEY] for a in annotations] == ["1", "2"]
    assert annotations[0][CHANGE_CAUSE_KEY] == "first deploy: a change cause is free text"
    assert (await cloud_run.status("web", namespace=namespace)).spec == labelled


async def test_two_controllers_agree_and_check_and_set_lets_one_through(
    cloud_run: CloudRunProvider,
    other: CloudRunProvider,
    cloud_run_specs: SpecFactory,
    namespace: str,
) -> None:
    with making_change(ChangeRequest(change_cause="first")):
        await cloud_run.start(cloud_run_specs("web", namespace, env={"V": "1"}))
    seen = await other.list_revisions("web", namespace=namespace)
    assert [(r.number, r.change_cause) for r in seen] == [(1, "first")]

    async def change(controller: CloudRunProvider, value: str, expected: int) -> int:
        with making_change(ChangeRequest(expected_revision=expected, change_cause=f"V={value}")):
            started = await controller.start(cloud_run_specs("web", namespace, env={"V": value}))
        return started.revision

    outcomes = await asyncio.gather(
        change(cloud_run, "a", 1), change(other, "b", 1), return_exceptions=True
    )
    made = [o for o in outcomes if isinstance(o, int)]
    refused = [o for o in outcomes if isinstance(o, RevisionConflict)]
    assert (made, len(refused)) == ([2], 1), outcomes
    assert refused[0].metadata == {"expected_revision": "1", "current_revision": "2"}

    # Unconditional changes side by side: each is numbered from what Cloud Run holds, so
    # they take 3 and 4 (the loser of the etag race reads again), never one number twice.
    await asyncio.gather(change(cloud_run, "c", 0), change(other, "d", 0))
    mine = await cloud_run.list_revisions("web", namespace=namespace)
    theirs = await other.list_revisions("web", namespace=namespace)
    assert [(r.number, r.change_cause) for r in mine] == [
        (r.number, r.change_cause) for r in theirs
    ]
    assert [r.number for r in mine] == [4, 3, 2, 1]
    assert {r.change_cause for r in mine[:2]} == {"V=c", "V=d"}

    back = await other.rollback("web", 1, namespace=namespace)
    assert back.revision == 5
    assert (await cloud_run.definition("web", namespace=namespace)).spec.env == {"V": "1"}
    assert (await cloud_run.list_revisions("web", namespace=namespace))[0].rollback_of == 1


async def test_history_is_the_newest_revisions_read_page_by_page(
    gcp_env: dict[str, str], emulator: GcpEmulator, cloud_run_specs: SpecFactory, namespace: str
) -> None:
    provider = CloudRunProvider(env={**gcp_env, "ALPHASWARM_GCP_REVISION_HISTORY": "3"})
    try:
        for value in range(1, 6):
            await provider.start(cloud_run_specs("web", namespace, env={"V": str(value)}))
        lists = served(emulator, "run:ListRevisions")
        history = await provider.list_revisions("web", namespace=namespace)
        # Pages of two (conftest): the newest three numbered revisions need two pages.
        assert served(emulator, "run:ListRevisions") - lists == 2
        assert [(r.number, r.spec.env["V"]) for r in history] == [(5, "5"), (4, "4"), (3, "3")]
        with pytest.raises(RevisionNotFound):
            await provider.rollback("web", 2, namespace=namespace)
        back = await provider.rollback("web", 0, namespace=namespace)
        assert back.revision == 6
        newest = (await provider.list_revisions("web", namespace=namespace))[0]
        assert (newest.rollback_of, newest.spec.env) == (4, {"V": "4"})
    finally:
        await provider.close()


@pytest.mark.parametrize("value", ["1", "101", "ten"])
def test_a_history_setting_out_of_bounds_is_refused(gcp_env: dict[str, str], value: str) -> None:
    with pytest.raises(SettingInvalid) as caught:
        CloudRunProvider(env={**gcp_env, "ALPHASWARM_GCP_REVISION_HISTORY": value})
    assert "ALPHASWARM_GCP_REVISION_HISTORY" in str(caught.value)


# -- rollback and config ---------------------------------------------------------------------


async def test_a_rollback_restores_the_config_as_a_new_version(
    cloud_run: CloudRunProvider, emulator: GcpEmulator, cloud_run_specs: SpecFactory, namespace: str
) -> None:
    await cloud_run.start(cloud_run_specs("web", namespace))
    await cloud_run.apply_config(ConfigMapPatch("web", namespace, set={"A": "1"}))
    await cloud_run.apply_config(ConfigMapPatch("web", namespace, set={"A": "2", "B": "x"}))
    rolled = await cloud_run.rollback("web", 2, namespace=namespace)
    assert rolled.revision == 4
    config = await cloud_run.get_config("web", namespace=namespace)
    assert (config.data, config.version) == ({"A": "1"}, "3"), "versions only move forward"
    definition = await cloud_run.definition("web", namespace=namespace)
    assert (definition.config, definition.config_version) == ({"A": "1"}, "3")
    history = await cloud_run.list_revisions("web", namespace=namespace)
    assert [(r.number, r.config_version, dict(r.config)) for r in history] == [
        (4, "3", {"A": "1"}),
        (3, "2", {"A": "2", "B": "x"}),
        (2, "1", {"A": "1"}),
        (1, "0", {}),
    ]
    with emulator.plumbing.lock:
        versions = [json.loads(d) for _, d in emulator.secrets.versions[_secret(namespace, "web")]]
    assert versions == [{"A": "1"}, {"A": "2", "B": "x"}, {"A": "1"}]

    # Back to a revision that had no config: an empty config, again as a new version.
    await cloud_run.rollback("web", 1, namespace=namespace)
    assert (await cloud_run.get_config("web", namespace=namespace)).data == {}
    # The newest version already holds what revision 2 ran with: it is pinned, not copied.
    await cloud_run.apply_config(ConfigMapPatch("web", namespace, set={"A": "1"}))
    before = len(versions) + 2
    await cloud_run.rollback("web", 2, namespace=namespace)
    with emulator.plumbing.lock:
        assert len(emulator.secrets.versions[_secret(namespace, "web")]) == before


async def test_a_stale_expected_revision_changes_nothing_anywhere(
    cloud_run: CloudRunProvider, emulator: GcpEmulator, cloud_run_specs: SpecFactory, namespace: str
) -> None:
    await cloud_run.start(cloud_run_specs("web", namespace))
    await cloud_run.apply_config(ConfigMapPatch("web", namespace, set={"A": "1"}))
    secret = _secret(namespace, "web")
    updates = served(emulator, "run:UpdateService")
    stale = ChangeRequest(expected_revision=1)
    with making_change(stale), pytest.raises(RevisionConflict):
        await cloud_run.apply_config(ConfigMapPatch("web", namespace, set={"A": "2"}))
    with making_change(stale), pytest.raises(RevisionConflict):
        await cloud_run.rollback("web", 1, namespace=namespace)
    with making_change(stale), pytest.raises(RevisionConflict):
        await cloud_run.stop("web", namespace=namespace)
    with making_change(stale), pytest.raises(RevisionConflict):
        await cloud_run.delete("web", namespace=namespace)
    assert served(emulator, "run:UpdateService") == updates
    with emulator.plumbing.lock:
        assert len(emulator.secrets.versions[secret]) == 1
    status = await cloud_run.status("web", namespace=namespace)
    assert (status.revision, status.desired_replicas) == (2, 1)
    with making_change(ChangeRequest(expected_revision=2)):
        assert await cloud_run.delete("web", namespace=namespace) is True


async def test_a_rollback_beyond_the_history_or_before_the_first_is_not_found(
    cloud_run: CloudRunProvider, cloud_run_specs: SpecFactory, namespace: str
) -> None:
    await cloud_run.start(cloud_run_specs("web", namespace))
    for to_revision in (0, 2, 999):
        with pytest.raises(RevisionNotFound):
            await cloud_run.rollback("web", to_revision, namespace=namespace)
    history = await cloud_run.list_revisions("web", namespace=namespace)
    assert [r.number for r in history] == [1]
    assert history[0].spec.image == IMAGE


async def test_rollback_of_names_what_it_restored(
    cloud_run: CloudRunProvider, emulator: GcpEmulator, cloud_run_specs: SpecFactory, namespace: str
) -> None:
    await cloud_run.start(cloud_run_specs("web", namespace, env={"V": "1"}))
    await cloud_run.start(cloud_run_specs("web", namespace, env={"V": "2"}))
    with making_change(ChangeRequest(change_cause="V=2 was wrong")):
        await cloud_run.rollback("web", 0, namespace=namespace)
    status = await rollout_succeeded(cloud_run, "web", namespace, 3)
    assert status.spec is not None and status.spec.env == {"V": "1"}
    short = cloud_run_name(namespace, "web")
    with emulator.plumbing.lock:
        newest = emulator.run.services[
            next(n for n in emulator.run.services if n.endswith(short))
        ].template.annotations
        assert (newest[ROLLBACK_OF_KEY], newest[CHANGE_CAUSE_KEY]) == ("1", "V=2 was wrong")


# -- the reason table, for the conditions the emulator's failures do not produce --------------

_FAILED = run_v2.Condition.State.CONDITION_FAILED
_SUCCEEDED = run_v2.Condition.State.CONDITION_SUCCEEDED


@pytest.mark.parametrize(
    ("condition", "reason"),
    [
        (
            run_v2.Condition(
                type_="Ready",
                state=_FAILED,
                reason=run_v2.Condition.CommonReason.SECRETS_ACCESS_CHECK_FAILED,
            ),
            "CONFIG_UNREADABLE",
        ),
        (
            run_v2.Condition(
                type_="Ready",
                state=_FAILED,
                reason=run_v2.Condition.CommonReason.CONTAINER_IMAGE_UNAUTHORIZED,
            ),
            "IMAGE_PULL_FAILED",
        ),
        (
            run_v2.Condition(
                type_="Ready",
                state=_FAILED,
                reason=run_v2.Condition.CommonReason.PROGRESS_DEADLINE_EXCEEDED,
            ),
            "PROGRESS_DEADLINE_EXCEEDED",
        ),
        (
            run_v2.Condition(
                type_="Ready",
                state=_FAILED,
                revision_reason=run_v2.Condition.RevisionReason.ACTIVE_REVISION_LIMIT_REACHED,
            ),
            "BACKEND_QUOTA_EXCEEDED",
        ),
        (
            run_v2.Condition(type_="ResourcesAvailable", state=_FAILED, message="no capacity"),
            "UNSCHEDULABLE",
        ),
        (
            run_v2.Condition(
                type_="Ready",
                state=_FAILED,
                reason=run_v2.Condition.CommonReason.VPC_NETWORK_NOT_FOUND,
                message="VPC network not found",
            ),
            "BACKEND_REJECTED",
        ),
    ],
)
def test_cloud_run_reasons_map_onto_the_catalogue(condition: run_v2.Condition, reason: str) -> None:
    found = verdict([run_v2.Condition(type_="ContainerHealthy", state=_SUCCEEDED), condition])
    assert found is not None and found.reason.value == reason
    assert verdict([run_v2.Condition(type_="Ready", state=_SUCCEEDED)]) is None


async def test_a_recreated_service_that_reuses_a_revision_name_is_read_afresh(
    cloud_run: CloudRunProvider,
    cloud_run_specs: SpecFactory,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Revision names are the service's plus a sequence and a short random suffix: a
    deleted and re-created service can meet a name its predecessor had. What the provider
    cached of the old one is not taken for the new one's."""
    monkeypatch.setattr("tests.fakes.gcp_run.secrets.token_hex", lambda _: "abcd")
    await cloud_run.start(cloud_run_specs("web", namespace, env={"V": "old"}))
    first = await rollout_succeeded(cloud_run, "web", namespace, 1)
    await cloud_run.delete("web", namespace=namespace)
    await cloud_run.start(cloud_run_specs("web", namespace, env={"V": "new"}))
    again = await rollout_succeeded(cloud_run, "web", namespace, 1)
    assert first.rollout is not None and again.rollout is not None
    assert again.rollout.started_at > first.rollout.started_at
    assert again.created_at is not None and again.rollout.started_at >= again.created_at


def test_the_serving_revision_is_read_from_the_traffic_statuses() -> None:
    name = "projects/p/locations/europe-west4/services/web"
    latest = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
    pinned = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
    service = run_v2.Service(name=name, latest_ready_revision=f"{name}/revisions/web-00003-c")
    assert serving_revision(service) == f"{name}/revisions/web-00003-c", "no statuses yet"
    service.traffic_statuses = [
        run_v2.TrafficTargetStatus(type_=latest, revision="web-00003-c", percent=10),
        run_v2.TrafficTargetStatus(type_=pinned, revision="web-00001-a", percent=90),
    ]
    assert serving_revision(service) == f"{name}/revisions/web-00001-a", "a split set elsewhere"
    assert serving_revision(run_v2.Service(name=name)) == "", "nothing serves"
