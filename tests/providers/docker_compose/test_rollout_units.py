"""Pure helpers of revisions and rollouts: records, statuses, rollback targets."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from alphaswarm_controller.providers.docker_compose import compose, revisions, statuses
from alphaswarm_controller.providers.docker_compose.compose import ContainerRef
from alphaswarm_controller.providers.docker_compose.definitions import (
    BODY,
    GENERATION,
    PROJECT,
    SERVICE,
    Definition,
)
from alphaswarm_controller.providers.docker_compose.options import Options
from alphaswarm_controller.providers.docker_compose.rollouts import (
    CALL_RESERVE,
    ReplicaFailed,
    RolloutClock,
    RolloutRecord,
    refusal,
)
from alphaswarm_core.providers.protocol import (
    BackendRejectedError,
    BackendUnavailableError,
    DeploymentState,
    ResourceNotFoundError,
    RolloutState,
)
from alphaswarm_core.providers.reasons import ErrorReason


def ref(
    number: int, state: str = "running", status: str = "Up 3 seconds", **labels: str
) -> ContainerRef:
    entry: dict[str, Any] = {
        "Id": f"{number:064d}",
        "Names": [f"/p-web-{number}"],
        "State": state,
        "Status": status,
        "Image": "img:1",
        "Labels": {
            compose.PROJECT: "p",
            compose.SERVICE: "web",
            compose.NUMBER: str(number),
            compose.CONFIG_HASH: labels.pop("digest", "d1"),
            **labels,
        },
    }
    parsed = ContainerRef.from_list_entry(entry)
    assert parsed is not None
    return parsed


def stored(revision: int = 1, **fields: Any) -> Definition:
    return replace(
        Definition("p", "web", "img:1", generation=revision).as_next_revision("why"),
        revision=revision,
        **fields,
    )


def volume_of(definition: Definition) -> dict[str, Any]:
    return {
        "Labels": {
            PROJECT: definition.project,
            SERVICE: definition.service,
            GENERATION: str(definition.generation),
            BODY: definition.to_body(),
        },
        "CreatedAt": "2025-03-01T10:00:00Z",
    }


def test_revision_rollout_and_policy_round_trip_through_the_volume() -> None:
    record = RolloutRecord.begun(4, 30.0, "d4").failed(
        ReplicaFailed(ErrorReason.CRASH_LOOP, "exited 3 times")
    )
    definition = replace(
        stored(4, rollback_of=2, automatic=True, auto_rollback=True, progress_deadline=30.0),
        rollout=record,
        last_good=3,
    )
    read = Definition.from_volume(volume_of(definition))
    assert read == definition
    body = json.loads(definition.to_body())
    assert body["schema"] == 3 and body["revision"]["change_cause"] == "why"


def test_a_definition_before_revisions_is_revision_1_made_with_its_volume() -> None:
    body = json.loads(stored(1).to_body())
    body["schema"] = 2
    for key in ("revision", "policy", "rollout", "last_good"):
        body.pop(key)
    volume = volume_of(stored(1))
    volume["Labels"][BODY] = json.dumps(body)
    read = Definition.from_volume(volume)
    assert read is not None
    assert (read.revision, read.rollout, read.change_cause) == (1, None, "")
    assert read.created_at == datetime(2025, 3, 1, 10, tzinfo=UTC)


def test_a_successful_rollout_moves_the_last_good_revision() -> None:
    definition = stored(5, last_good=3)
    begun = RolloutRecord.begun(5, 60.0, "d5")
    assert definition.with_rollout(begun).last_good == 3
    assert definition.with_rollout(begun.succeeded()).last_good == 5
    failure = ReplicaFailed(ErrorReason.CRASH_LOOP, "x")
    assert definition.with_rollout(begun.failed(failure)).last_good == 3


def test_an_abandoned_rollout_reads_as_failed_after_its_deadline() -> None:
    record = RolloutRecord.begun(2, 30.0, "d2")
    soon = record.started_at + timedelta(seconds=10)
    assert record.seen_at(soon).state is RolloutState.IN_PROGRESS
    late = record.started_at + timedelta(seconds=30 + CALL_RESERVE + 1)
    seen = record.seen_at(late)
    assert (seen.state, seen.reason) == (RolloutState.FAILED, "PROGRESS_DEADLINE_EXCEEDED")
    assert seen.finished_at is not None and seen.finished_at < late


def test_the_clock_names_the_bound_that_ended_a_wait() -> None:
    by_progress = RolloutClock(2.0)
    assert 0 < by_progress.left() <= 2.0
    assert "progress deadline of 2s" in by_progress.expired("p-web-1").message
    by_call = RolloutClock(600.0, call_deadline=time.monotonic() + CALL_RESERVE + 3)
    assert by_call.left() <= 3
    assert "call's deadline" in by_call.expired("p-web-1").message
    assert by_call.expired("x").reason is ErrorReason.PROGRESS_DEADLINE_EXCEEDED


def test_engine_refusals_that_are_rollout_failures() -> None:
    missing = ResourceNotFoundError("no image", metadata={"cause": "IMAGE_NOT_FOUND"})
    port = BackendRejectedError("port", metadata={"cause": "PORT_IN_USE"})
    cpus = BackendRejectedError("cpus", metadata={"cause": "CPU_EXCEEDS_ENGINE"})
    assert (failure := refusal(missing)) is not None
    assert failure.reason is ErrorReason.IMAGE_PULL_FAILED
    assert (failure := refusal(port)) is not None
    assert failure.reason is ErrorReason.BACKEND_REJECTED
    assert (failure := refusal(cpus)) is not None
    assert failure.reason is ErrorReason.UNSCHEDULABLE
    assert refusal(BackendUnavailableError("engine gone")) is None, "a failure of the call"


def test_replicas_report_their_revision_and_exit_code() -> None:
    assert ref(1).revision == 1, "unlabelled: made before revisions, or by Compose"
    assert ref(1, **{compose.REVISION: "7"}).revision == 7
    assert ref(1, **{compose.REVISION: "07x"}).revision == 1
    assert ref(1, "exited", "Exited (0) 2 seconds ago").exit_code == 0
    assert ref(1, "exited", "Exited (137) 1 minute ago").exit_code == 137
    assert ref(1).exit_code is None


def test_observed_revision_is_the_oldest_any_replica_runs() -> None:
    head = stored(4, last_good=3).with_rollout(RolloutRecord.begun(4, 60.0, "d4").succeeded())
    old = ref(1, **{compose.REVISION: "3", "digest": "d3"})
    new = ref(2, **{compose.REVISION: "4", "digest": "d4"})
    assert statuses.observed_revision(head, [new, old]) == 3
    # A rollback onto what runs replaces nothing: the replica carries the rollout's hash.
    same = ref(1, **{compose.REVISION: "2", "digest": "d4"})
    assert statuses.observed_revision(head, [same, new]) == 4
    assert statuses.observed_revision(head, []) == 4
    assert statuses.observed_revision(None, [old]) == 0


def test_one_shot_replicas_that_exit_0_have_completed() -> None:
    done = [ref(1, "exited", "Exited (0) 1 second ago"), ref(2, "exited", "Exited (0) now")]
    one_shot = Options(restart="no")
    status = statuses.service_status("docker_compose", "p", "web", stored(), done, opts=one_shot)
    assert status.state is DeploymentState.STOPPED and "2/2 replicas completed" in status.message
    looping = statuses.service_status(
        "docker_compose", "p", "web", stored(), done, opts=Options(restart="always")
    )
    assert looping.state is DeploymentState.DEGRADED
    failed = ref(3, "exited", "Exited (1) now")
    assert not statuses.completed(failed, one_shot)


def test_a_failed_rollout_with_no_ready_replica_fails_the_service() -> None:
    record = RolloutRecord.begun(1, 60.0, "d1").failed(
        ReplicaFailed(ErrorReason.CRASH_LOOP, "exited 3 times")
    )
    head = replace(stored(1), rollout=record)
    crashing = [ref(1, "restarting", "Restarting (3) 1 second ago")]
    status = statuses.service_status("docker_compose", "p", "web", head, crashing, opts=Options())
    assert status.state is DeploymentState.FAILED
    assert "rollout of revision 1 failed (CRASH_LOOP)" in status.message
    kinds = {c.type: (c.status, c.reason) for c in status.conditions}
    assert kinds == {
        "Available": (False, "MinimumReplicasUnavailable"),
        "Progressing": (False, "CRASH_LOOP"),
    }


def test_rollback_targets_and_what_they_restore() -> None:
    first = replace(stored(1), env={"MODE": "a"}, config={"LEVEL": "1"}, config_version=1)
    second = replace(stored(2), env={"MODE": "b"}, config={"LEVEL": "1"}, config_version=1)
    head = replace(
        stored(3), env={"MODE": "b"}, config={"LEVEL": "2"}, config_version=2, generation=9
    )
    earlier = [second, first]
    assert revisions.find(head, earlier, 0) is second
    assert revisions.find(head, earlier, 1) is first
    assert revisions.find(head, earlier, 5) is None
    assert revisions.find(head, [], 0) is None
    back = revisions.restored(head, first, "undo")
    assert (back.revision, back.rollback_of, back.automatic, back.change_cause) == (
        4,
        1,
        False,
        "undo",
    )
    assert (back.env, back.config, back.config_version, back.generation) == (
        {"MODE": "a"},
        {"LEVEL": "1"},
        3,
        9,
    )
    same_config = revisions.restored(replace(head, config={"LEVEL": "1"}), first, "")
    assert same_config.config_version == 2, "the config did not change: same version"
