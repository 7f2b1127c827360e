"""The wire translation, field by field: specs and revisions read back, patches, change
requests and rollback targets.

Every field a caller reads back (a revision's spec in ListRevisions, a status's spec) must
come out as it went in, and every refusal must name its field and say what is allowed:
these tests check each exactly, in process, so that a dropped field or a loosened bound
fails here rather than in a provider's suite.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_controller import paging
from alphaswarm_controller.convert import (
    change_from_proto,
    patch_from_proto,
    revision_to_proto,
    rollback_target,
    spec_from_proto,
    spec_to_proto,
    status_to_proto,
)
from alphaswarm_core.call import CallContext, Caller
from alphaswarm_core.providers.errors import FieldViolation, InvalidSpecError, RevisionNotFound
from alphaswarm_core.providers.models import (
    DEFAULT_PROGRESS_DEADLINE_SECONDS,
    MAX_CHANGE_CAUSE_LENGTH,
    SECRET_MASK,
    ChangeRequest,
    Condition,
    ConfigMapPatch,
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    InstanceStatus,
    PortSpec,
    Resources,
    Revision,
    check_alias,
)

#: A spec with every field away from its default, so that a field lost on the way out
#: cannot come back equal by accident.
FULL = DeploymentSpec(
    service_id="web",
    namespace="team-a",
    image="registry.example/web:2",
    command=("serve", "--port", "8080"),
    env={"MODE": "b", "LEVEL": "3"},
    replicas=4,
    labels={"tier": "front"},
    ports=(PortSpec(8080, 18080, "tcp"), PortSpec(5353, 0, "udp")),
    resources=Resources(cpu="500m", memory="256Mi"),
    provider_options={"docker_compose.restart": "always"},
    progress_deadline_seconds=42.5,
    auto_rollback=True,
)


@pytest.mark.parametrize(
    "spec",
    [FULL, DeploymentSpec("web", "default", image="app:1")],
    ids=["every-field", "defaults"],
)
def test_a_spec_read_back_is_the_spec_sent(spec: DeploymentSpec) -> None:
    message = spec_to_proto(spec)
    assert message.HasField("progress_deadline")
    assert spec_from_proto(message, spec.namespace) == spec
    assert message.namespace == spec.namespace, "the spec names its own namespace"


def test_a_spec_read_back_without_a_deadline_gets_the_default() -> None:
    message = spec_to_proto(FULL)
    message.ClearField("progress_deadline")
    assert spec_from_proto(message, "team-a").progress_deadline_seconds == (
        DEFAULT_PROGRESS_DEADLINE_SECONDS
    )


def test_a_revision_on_the_wire_carries_every_field_but_the_replica_count() -> None:
    created = datetime(2026, 5, 4, 3, 2, 1, 500_000, tzinfo=UTC)
    revision = Revision(
        number=7,
        spec=FULL,
        config={"LEVEL": "3"},
        config_version="12",
        created_at=created,
        change_cause="roll back the bad image",
        rollback_of=5,
        automatic=True,
    )
    message = revision_to_proto(revision)
    assert (message.number, message.config_version, message.change_cause) == (
        7,
        "12",
        "roll back the bad image",
    )
    assert (message.rollback_of, message.automatic) == (5, True)
    assert message.created_at.ToDatetime(tzinfo=UTC) == created
    assert message.spec.replicas == 0, "a revision is what runs, not how many"
    assert spec_from_proto(message.spec, "team-a") == replace(FULL, replicas=0)


@pytest.mark.parametrize("expected", [-1, 0, 1, 2**31 - 1])
def test_expected_revision_takes_absent_any_or_a_number(expected: int) -> None:
    assert change_from_proto(expected, "why") == ChangeRequest(expected, "why")


def test_expected_revision_below_minus_one_is_refused_by_name() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        change_from_proto(-2, "")
    assert caught.value.violations == (
        FieldViolation("expected_revision", "0 (any), -1 (absent) or a revision number"),
    )


def test_a_change_cause_is_bounded_and_printable() -> None:
    longest = "x" * MAX_CHANGE_CAUSE_LENGTH
    assert change_from_proto(0, longest).change_cause == longest
    refusal = FieldViolation(
        "change_cause", f"at most {MAX_CHANGE_CAUSE_LENGTH} printable characters"
    )
    for cause in (longest + "x", "line\nbreak", "tab\there"):
        with pytest.raises(InvalidSpecError) as caught:
            change_from_proto(0, cause)
        assert caught.value.violations == (refusal,), repr(cause)
    with pytest.raises(InvalidSpecError) as both:
        change_from_proto(-5, "\x00")
    assert [v.field for v in both.value.violations] == ["expected_revision", "change_cause"]


def _revision(number: int) -> Revision:
    return Revision(
        number=number,
        spec=FULL,
        config={},
        config_version="",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


CALL = CallContext(
    method="RollbackDeployment", request_id="r", peer="p", namespace="team-a", service_id="web"
)


def test_the_previous_revision_is_the_second_newest_whatever_the_order() -> None:
    history = [_revision(n) for n in (3, 1, 4, 2)]
    assert rollback_target(history, 0, CALL).number == 3
    assert rollback_target(history, 1, CALL).number == 1
    assert rollback_target(history, 4, CALL).number == 4


@pytest.mark.parametrize(
    ("history", "to_revision"),
    [([4], 0), ([], 0), ([4, 3], 9), ([4, 3], 2)],
    ids=["no-previous", "no-history", "never-was", "left-the-history"],
)
def test_a_revision_outside_the_history_is_not_found_by_number(
    history: list[int], to_revision: int
) -> None:
    with pytest.raises(RevisionNotFound) as caught:
        rollback_target([_revision(n) for n in history], to_revision, CALL)
    assert caught.value.message == f"team-a/web has no revision {to_revision} in its history"
    assert caught.value.metadata == {"revision": str(to_revision)}


def test_a_negative_target_is_refused_by_name() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        rollback_target([_revision(2), _revision(1)], -1, CALL)
    assert caught.value.violations == (
        FieldViolation("to_revision", "0 (the previous one) or a revision number"),
    )


def test_revision_pages_resume_below_the_last_number_and_end_exactly() -> None:
    history = [_revision(n) for n in (2, 5, 3, 4, 1)]
    first, resume = paging.page_revisions(history, 2, None)
    assert [r.number for r in first] == [5, 4] and resume == ("revision", "4")
    rest, end = paging.page_revisions(history, 3, resume)
    assert [r.number for r in rest] == [3, 2, 1] and end is None, "a full last page ends"
    whole, none = paging.page_revisions(history, 5, None)
    assert len(whole) == 5 and none is None


@pytest.mark.parametrize(
    "after", [("ns", "web"), ("revision", "x"), ("revision", "-3"), ("other", "4")]
)
def test_a_resume_key_that_is_no_revisions_one_is_refused(after: tuple[str, str]) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        paging.page_revisions([_revision(1)], 1, after)
    assert caught.value.violations == (
        FieldViolation(
            "page_token", "not a token from a previous ListRevisions with the same query"
        ),
    )


@pytest.mark.parametrize("seconds", [0.999, 3600.001])
def test_a_progress_deadline_out_of_bounds_says_the_bounds(seconds: float) -> None:
    made = replace(FULL, progress_deadline_seconds=seconds)
    assert made.violations("spec") == [
        FieldViolation("spec.progress_deadline", "must be between 1 s and 3600 s")
    ]


def test_a_change_of_rollout_policy_alone_runs_the_same_thing() -> None:
    for changed in (
        replace(FULL, auto_rollback=False),
        replace(FULL, progress_deadline_seconds=600),
        replace(FULL, replicas=1),
    ):
        assert FULL.runs_as(changed) and changed.runs_as(FULL), changed
    assert not FULL.runs_as(replace(FULL, env={"MODE": "c"}))


def test_an_empty_provider_alias_is_required_by_name() -> None:
    found: list[FieldViolation] = []
    check_alias(found, "provider", "")
    assert found == [FieldViolation("provider", "is required")]


def test_a_status_read_by_a_caller_carries_the_spec_masked_below_operator() -> None:
    status = DeploymentStatus(
        "web", "team-a", "memory", DeploymentState.RUNNING, 4, 4, spec=FULL, revision=3
    )
    assert not status_to_proto(status).HasField("spec"), "lists and watches stay lean"
    operator = status_to_proto(status, Caller("ops", 2))
    assert spec_from_proto(operator.spec, "team-a") == FULL
    viewer = status_to_proto(status, Caller("eyes", 1))
    assert dict(viewer.spec.env) == {"MODE": SECRET_MASK, "LEVEL": SECRET_MASK}
    assert viewer.spec.image == FULL.image and viewer.revision == 3


def test_a_patch_names_its_bad_service_id() -> None:
    message = types.ConfigMapPatch(service_id="Web_1", set={"K": "v"})
    with pytest.raises(InvalidSpecError) as caught:
        patch_from_proto(message, "team-a")
    assert [v.field for v in caught.value.violations] == ["patch.service_id"]


def test_a_patch_is_read_into_the_calls_namespace() -> None:
    message = types.ConfigMapPatch(
        service_id="web", namespace="ignored", set={"K": "v"}, remove=["OLD"], expected_version="4"
    )
    patch = patch_from_proto(message, "team-a")
    assert patch == ConfigMapPatch("web", "team-a", {"K": "v"}, ("OLD",), "4")


def test_every_time_and_condition_of_a_status_reaches_the_wire() -> None:
    def at(second: int) -> datetime:
        return datetime(2026, 3, 1, 12, 0, second, 250_000, tzinfo=UTC)

    status = DeploymentStatus(
        "web",
        "team-a",
        "memory",
        DeploymentState.DEGRADED,
        2,
        1,
        instances=(
            InstanceStatus("web-0", "running", True, started_at=at(1)),
            InstanceStatus("web-1", "waiting", False, restarts=3, message="crashed"),
        ),
        created_at=at(2),
        changed_at=at(3),
        conditions=(
            Condition("Available", False, at(4), "MinimumReplicasUnavailable", "1 of 2"),
            Condition("Progressing", None, at(5)),
        ),
    )
    message = status_to_proto(status)
    started = [i.started_at.ToDatetime(tzinfo=UTC) for i in message.instances if i.ready]
    assert started == [at(1)]
    assert not message.instances[1].HasField("started_at"), "unknown stays unset"
    assert message.created_at.ToDatetime(tzinfo=UTC) == at(2)
    assert message.changed_at.ToDatetime(tzinfo=UTC) == at(3)
    assert [
        (c.type, c.status, c.reason, c.message, c.last_transition_time.ToDatetime(tzinfo=UTC))
        for c in message.conditions
    ] == [
        ("Available", types.CONDITION_STATUS_FALSE, "MinimumReplicasUnavailable", "1 of 2", at(4)),
        ("Progressing", types.CONDITION_STATUS_UNKNOWN, "", "", at(5)),
    ]
