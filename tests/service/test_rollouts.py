"""Revisions, plans, check-and-set, history, rollback and rollout waits over the wire."""

from __future__ import annotations

import grpc
import pytest

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import types_pb2 as types
from tests.service.conftest import Harness
from tests.service.rich_status import details


def spec(env: dict[str, str] | None = None, image: str = "memory/app:1") -> types.DeploymentSpec:
    return types.DeploymentSpec(service_id="web", image=image, replicas=2, env=env or {})


async def start(harness: Harness, **fields: object) -> pb.StartDeploymentResponse:
    request = pb.StartDeploymentRequest(**fields)  # type: ignore[arg-type]
    response: pb.StartDeploymentResponse = await harness.stub.StartDeployment(request)
    return response


def changes(plan: types.Plan) -> dict[str, tuple[str, str]]:
    return {c.path: (c.old_value, c.new_value) for c in plan.changes}


async def test_a_plan_of_a_new_service_creates_nothing(harness: Harness) -> None:
    memory = await harness.provider()
    response = await start(harness, spec=spec({"MODE": "a"}), validate_only=True)
    assert response.plan.action == types.PLAN_ACTION_CREATE
    assert response.plan.revision == 0
    assert changes(response.plan)["spec.env['MODE']"] == ("", "a")
    assert not response.HasField("status")
    assert memory.services == {}, "validate_only changes nothing"


async def test_a_plan_shows_the_change_and_changes_nothing(harness: Harness) -> None:
    first = await start(harness, spec=spec({"MODE": "a"}), change_cause="first deploy")
    assert first.status.revision == 1 and first.plan.action == types.PLAN_ACTION_CREATE
    planned = await start(harness, spec=spec({"MODE": "b"}), validate_only=True)
    assert planned.plan.action == types.PLAN_ACTION_REPLACE
    assert planned.plan.revision == 1
    assert changes(planned.plan) == {"spec.env['MODE']": ("a", "b")}
    assert planned.status.revision == 1
    memory = await harness.provider()
    assert memory.services[("default", "web")].spec.env["MODE"] == "a"

    scaled = await harness.stub.ScaleDeployment(
        pb.ScaleDeploymentRequest(service_id="web", replicas=5, validate_only=True)
    )
    assert scaled.plan.action == types.PLAN_ACTION_IN_PLACE
    assert memory.services[("default", "web")].replicas == 2

    patch = types.ConfigMapPatch(service_id="web", set={"secret.TOKEN": "s3cr3t", "LEVEL": "1"})
    configured = await harness.stub.ApplyConfig(
        pb.ApplyConfigRequest(patch=patch, validate_only=True)
    )
    assert configured.plan.action == types.PLAN_ACTION_ROLLING_RESTART
    assert changes(configured.plan) == {
        "config['LEVEL']": ("", "1"),
        "config['secret.TOKEN']": ("", "<secret>"),
    }
    assert "s3cr3t" not in str(configured)
    assert memory.services[("default", "web")].config == {}


async def test_a_stale_expected_revision_is_aborted_and_changes_nothing(harness: Harness) -> None:
    await start(harness, spec=spec({"MODE": "a"}), expected_revision=-1)
    for fields in (
        {"spec": spec({"MODE": "b"}), "expected_revision": 7},
        {"spec": spec({"MODE": "b"}), "expected_revision": 7, "validate_only": True},
        {"spec": spec({"MODE": "b"}), "expected_revision": -1},
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await start(harness, **fields)
        found = details(caught.value)
        assert found.code is grpc.StatusCode.ABORTED
        assert found.error_info is not None
        assert found.error_info.reason == "REVISION_CONFLICT"
        assert found.error_info.metadata["current_revision"] == "1"
    memory = await harness.provider()
    assert memory.services[("default", "web")].spec.env["MODE"] == "a"
    applied = await start(harness, spec=spec({"MODE": "b"}), expected_revision=1)
    assert applied.status.revision == 2


async def test_history_is_paged_newest_first(harness: Harness) -> None:
    for mode in "abcde":
        await start(harness, spec=spec({"MODE": mode}), change_cause=f"mode {mode}")
    seen: list[int] = []
    token = ""
    while True:
        page = await harness.stub.ListRevisions(
            pb.ListRevisionsRequest(service_id="web", page_size=2, page_token=token)
        )
        seen += [r.number for r in page.revisions]
        token = page.next_page_token
        if not token:
            break
    assert seen == [5, 4, 3, 2, 1]
    newest = (
        await harness.stub.ListRevisions(pb.ListRevisionsRequest(service_id="web", page_size=1))
    ).revisions[0]
    assert (newest.change_cause, newest.spec.env["MODE"], newest.spec.replicas) == (
        "mode e",
        "e",
        0,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.ListRevisions(
            pb.ListRevisionsRequest(service_id="other", page_token=page.next_page_token or "x")
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_rollback_plans_then_restores_the_previous_revision(harness: Harness) -> None:
    await start(harness, spec=spec({"MODE": "a"}))
    await start(harness, spec=spec({"MODE": "b"}))
    planned = await harness.stub.RollbackDeployment(
        pb.RollbackDeploymentRequest(service_id="web", validate_only=True)
    )
    assert planned.plan.action == types.PLAN_ACTION_REPLACE
    assert changes(planned.plan) == {"spec.env['MODE']": ("b", "a")}
    assert planned.status.revision == 2
    rolled = await harness.stub.RollbackDeployment(
        pb.RollbackDeploymentRequest(service_id="web", change_cause="b broke")
    )
    assert rolled.status.revision == 3
    history = await harness.stub.ListRevisions(pb.ListRevisionsRequest(service_id="web"))
    newest = history.revisions[0]
    assert (newest.rollback_of, newest.change_cause, newest.spec.env["MODE"]) == (
        1,
        "b broke",
        "a",
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await harness.stub.RollbackDeployment(
            pb.RollbackDeploymentRequest(service_id="web", to_revision=999)
        )
    found = details(caught.value)
    assert found.code is grpc.StatusCode.NOT_FOUND
    assert found.error_info is not None and found.error_info.reason == "REVISION_NOT_FOUND"


async def test_a_watch_can_end_with_the_rollout(harness: Harness) -> None:
    await start(harness, spec=spec({"MODE": "a"}))
    await start(harness, spec=spec({"MODE": "b"}, image="memory/crash:2"))
    statuses = [
        response.status
        async for response in harness.stub.WatchDeployment(
            pb.WatchDeploymentRequest(service_id="web", until_rollout_done=True), timeout=30
        )
    ]
    final = statuses[-1]
    assert final.revision == 2
    assert final.rollout.state == types.ROLLOUT_STATE_FAILED
    assert final.rollout.reason == "CRASH_LOOP"
    assert final.observed_revision == 1


async def test_revision_fields_need_a_provider_that_keeps_revisions(harness: Harness) -> None:
    for call in (
        harness.stub.StartDeployment(
            pb.StartDeploymentRequest(provider="plain", spec=spec(), validate_only=True)
        ),
        harness.stub.StartDeployment(
            pb.StartDeploymentRequest(provider="plain", spec=spec(), change_cause="why")
        ),
        harness.stub.ListRevisions(pb.ListRevisionsRequest(provider="plain", service_id="web")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        found = details(caught.value)
        assert found.code is grpc.StatusCode.UNIMPLEMENTED
        assert found.error_info is not None
        assert found.error_info.metadata["capability"] == "revisions"
