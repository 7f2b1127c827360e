"""Config in SSM Parameter Store: generations committed last, limits, throttling, rollout.

Against moto behind the AWS front (tests/fakes/moto_server.py), which holds SSM to
its documented value limits and answers injected faults as SSM does.
"""

from __future__ import annotations

from typing import Any

import pytest

from alphaswarm_controller.providers.aws import EcsProvider
from alphaswarm_controller.providers.aws.retry import RetryPolicy
from alphaswarm_controller.providers.aws.taskdef import service_name
from alphaswarm_core.providers.models import SECRET_MASK as REDACTED
from alphaswarm_core.providers.protocol import (
    BackendConflictError,
    BackendUnavailableError,
    ConfigMapPatch,
    ConfigVersionConflict,
    DeploymentSpec,
    InvalidSpecError,
)
from alphaswarm_core.testing import instance_ids, ready, unique_name, wait_for
from tests.fakes.faults import Kind
from tests.fakes.moto_server import IMAGE, EcsTestBed

FAST_RETRIES = RetryPolicy(max_attempts=4, base_seconds=0.01, cap_seconds=0.05)


@pytest.fixture
async def service(provider: EcsProvider) -> tuple[str, str]:
    namespace, name = unique_name("ns"), unique_name()
    await provider.start(DeploymentSpec(name, namespace, image=IMAGE))
    await wait_for(provider, name, namespace, ready(1))
    return namespace, name


def parameters(
    bed: EcsTestBed, namespace: str, name: str, *, with_claims: bool = False
) -> dict[str, dict[str, Any]]:
    """Every config parameter of the service (and the claims of its changes, revisions.py,
    ``with_claims``), by name below its base path."""
    ssm = bed.aws.client("ssm")
    base = f"/alphaswarm/{namespace}/{name}"
    found: list[dict[str, Any]] = []
    token = ""
    while True:
        page = ssm.get_parameters_by_path(
            Path=base,
            Recursive=True,
            WithDecryption=True,
            **({"NextToken": token} if token else {}),
        )
        found.extend(page["Parameters"])
        token = page.get("NextToken", "")
        if not token:
            named = {p["Name"].removeprefix(f"{base}/"): p for p in found}
            return {k: v for k, v in named.items() if with_claims or not k.startswith("_claims/")}


def generation(stored: dict[str, dict[str, Any]], number: int) -> dict[str, str]:
    """The keys of committed generation ``number``, as stored."""
    prefix = stored[f"_meta/{number}"]["Value"]
    return {
        name.removeprefix(f"{prefix}/"): p["Value"]
        for name, p in stored.items()
        if name.startswith(f"{prefix}/")
    }


def ssm_requests(bed: EcsTestBed) -> int:
    return sum(n for op, n in bed.faults.seen.items() if op.startswith("ssm:"))


def task_config_path(bed: EcsTestBed, namespace: str, name: str) -> str:
    ecs = bed.aws.client("ecs")
    arn = ecs.describe_services(cluster=bed.cluster, services=[service_name(namespace, name)])[
        "services"
    ][0]["taskDefinition"]
    definition = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    env = {e["name"]: e["value"] for e in definition["containerDefinitions"][0]["environment"]}
    return str(env["ALPHASWARM_CONFIG_SSM_PATH"])


async def test_generations_versions_and_secret_keys(
    provider: EcsProvider, bed: EcsTestBed, service: tuple[str, str]
) -> None:
    namespace, name = service
    initial = await provider.get_config(name, namespace=namespace)
    assert (initial.data, initial.version) == ({}, "0")

    applied = await provider.apply_config(
        ConfigMapPatch(
            name,
            namespace,
            set={"LEVEL": "debug", "secret.DB_PASSWORD": "hunter2"},
            expected_version="0",
        )
    )
    assert applied.version == "1"
    assert applied.data == {"LEVEL": "debug", "secret.DB_PASSWORD": REDACTED}

    stored = parameters(bed, namespace, name)
    assert generation(stored, 1) == {"LEVEL": "debug", "secret.DB_PASSWORD": "hunter2"}
    prefix = stored["_meta/1"]["Value"]
    assert stored[f"{prefix}/LEVEL"]["Type"] == "String"
    described = bed.aws.client("ssm").describe_parameters(
        ParameterFilters=[
            {"Key": "Name", "Values": [f"/alphaswarm/{namespace}/{name}/{prefix}/LEVEL"]}
        ]
    )["Parameters"]
    assert [p["Tier"] for p in described] == ["Standard"]
    assert stored[f"{prefix}/secret.DB_PASSWORD"]["Type"] == "SecureString"
    base = f"/alphaswarm/{namespace}/{name}"
    assert task_config_path(bed, namespace, name) == f"{base}/{prefix}/", "tasks read gen 1"

    read = await provider.get_config(name, namespace=namespace)
    assert read.data == applied.data, "secrets are never read back in clear"
    assert read.version == "1"
    assert "hunter2" not in repr(read)

    # A change of another key copies the secret into generation 2, still masked.
    second = await provider.apply_config(ConfigMapPatch(name, namespace, set={"LEVEL": "info"}))
    assert second.version == "2"
    assert second.data == {"LEVEL": "info", "secret.DB_PASSWORD": REDACTED}
    assert generation(parameters(bed, namespace, name), 2) == {
        "LEVEL": "info",
        "secret.DB_PASSWORD": "hunter2",
    }


async def test_generations_a_revision_names_are_kept(
    provider: EcsProvider, bed: EcsTestBed, service: tuple[str, str]
) -> None:
    """Each apply is a revision naming its generation; a rollback to any revision in the
    history restores its config, so the sweep keeps every generation the history names."""
    namespace, name = service
    for value in ("1", "2", "3", "4"):
        await provider.apply_config(ConfigMapPatch(name, namespace, set={"A": value}))
    stored = parameters(bed, namespace, name)
    assert sorted(n for n in stored if n.startswith("_meta/")) == [
        f"_meta/{n}" for n in (1, 2, 3, 4)
    ]
    assert [generation(stored, n) for n in (1, 2, 3, 4)] == [{"A": v} for v in "1234"]


async def test_old_generations_are_swept_once_their_revisions_leave_the_history(
    bed: EcsTestBed,
) -> None:
    """With a history of 2 revisions, only the current and the previous generation stay."""
    provider = EcsProvider(env=bed.provider_env(ALPHASWARM_AWS_REVISION_HISTORY="2"))
    await provider.open()
    try:
        namespace, name = unique_name("ns"), unique_name()
        await provider.start(DeploymentSpec(name, namespace, image=IMAGE))
        for value in ("1", "2", "3", "4"):
            await provider.apply_config(ConfigMapPatch(name, namespace, set={"A": value}))
        stored = parameters(bed, namespace, name, with_claims=True)
        assert sorted(n for n in stored if n.startswith("_meta/")) == ["_meta/3", "_meta/4"]
        assert generation(stored, 3) == {"A": "3"}
        assert generation(stored, 4) == {"A": "4"}
        # The claims (revisions.py) of the revisions the history keeps: 4, claimed by the
        # change that made 5 (5 is claimed only by the next change).
        assert sorted(n for n in stored if n.startswith("_claims/")) == ["_claims/4/0"]
        assert len(stored) == 5, sorted(stored)
        assert [r.number for r in await provider.list_revisions(name, namespace=namespace)] == [
            5,
            4,
        ]
        await provider.delete(name, namespace=namespace)
    finally:
        await provider.close()


async def test_stale_version_writes_nothing(
    provider: EcsProvider, bed: EcsTestBed, service: tuple[str, str]
) -> None:
    namespace, name = service
    first = await provider.apply_config(ConfigMapPatch(name, namespace, set={"A": "1"}))
    await provider.apply_config(ConfigMapPatch(name, namespace, set={"A": "2"}))
    before = parameters(bed, namespace, name)
    with pytest.raises(ConfigVersionConflict) as caught:
        await provider.apply_config(
            ConfigMapPatch(
                name, namespace, set={"A": "3", "B": "new"}, expected_version=first.version
            )
        )
    assert caught.value.metadata == {"expected_version": "1", "current_version": "2"}
    after = parameters(bed, namespace, name)
    assert {k: (v["Value"], v["Version"]) for k, v in after.items()} == {
        k: (v["Value"], v["Version"]) for k, v in before.items()
    }


async def test_a_writer_that_commits_first_wins_and_the_other_aborts(
    provider: EcsProvider,
    bed: EcsTestBed,
    service: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    namespace, name = service
    base = f"/alphaswarm/{namespace}/{name}"
    current = await provider.get_config(name, namespace=namespace)
    original = provider.clients.call
    other_writer = bed.aws.client("ssm")

    def racing(service_name: str, operation: str, /, **kwargs: Any) -> Any:
        if operation == "PutParameter" and kwargs.get("Name") == f"{base}/_meta/1":
            # Another controller commits generation 1 between our data and our commit.
            theirs = "v1-0123456789ab"
            other_writer.put_parameter(Name=f"{base}/{theirs}/WINNER", Value="yes", Type="String")
            other_writer.put_parameter(Name=kwargs["Name"], Value=theirs, Type="String")
        return original(service_name, operation, **kwargs)

    monkeypatch.setattr(provider.clients, "call", racing)
    with pytest.raises(ConfigVersionConflict):
        await provider.apply_config(
            ConfigMapPatch(name, namespace, set={"LOST": "x"}, expected_version=current.version)
        )
    monkeypatch.undo()
    stored = parameters(bed, namespace, name)
    assert generation(stored, 1) == {"WINNER": "yes"}
    assert not [n for n in stored if n.endswith("/LOST")], "the loser's data is deleted"
    assert (await provider.get_config(name, namespace=namespace)).data == {"WINNER": "yes"}


async def test_a_rollback_whose_config_is_swept_while_it_is_read_restores_nothing(
    provider: EcsProvider,
    bed: EcsTestBed,
    service: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    namespace, name = service
    base = f"/alphaswarm/{namespace}/{name}"
    await provider.apply_config(ConfigMapPatch(name, namespace, set={"K": "1"}))  # revision 2
    await provider.apply_config(ConfigMapPatch(name, namespace, set={"K": "2"}))  # revision 3
    source = parameters(bed, namespace, name)["_meta/1"]["Value"]
    original = provider.clients.pages
    sweeper = bed.aws.client("ssm")

    def swept_meanwhile(service_name: str, operation: str, /, **kwargs: Any) -> Any:
        if operation == "GetParametersByPath" and kwargs.get("Path") == f"{base}/{source}":
            # Another change's sweep, in its order: the record, then the data.
            sweeper.delete_parameter(Name=f"{base}/_meta/1")
            sweeper.delete_parameter(Name=f"{base}/{source}/K")
        return original(service_name, operation, **kwargs)

    monkeypatch.setattr(provider.clients, "pages", swept_meanwhile)
    with pytest.raises(BackendConflictError, match="no longer kept"):
        await provider.rollback(name, 2, namespace=namespace)
    monkeypatch.undo()
    assert (await provider.get_config(name, namespace=namespace)).data == {"K": "2"}
    newest, *_ = await provider.list_revisions(name, namespace=namespace)
    assert newest.number == 3, "no revision made"


async def test_apply_config_rolls_the_service_onto_a_new_revision(
    provider: EcsProvider, bed: EcsTestBed, service: tuple[str, str]
) -> None:
    namespace, name = service
    before = await wait_for(provider, name, namespace, ready(1))
    ecs = bed.aws.client("ecs")
    family = service_name(namespace, name)
    revisions = ecs.list_task_definitions(familyPrefix=family)["taskDefinitionArns"]

    await provider.apply_config(ConfigMapPatch(name, namespace, set={"FLAG": "on"}))

    after = ecs.list_task_definitions(familyPrefix=family)["taskDefinitionArns"]
    assert len(after) == len(revisions) + 1, "the config path is in the task definition"

    def rolled(status: Any) -> bool:
        ids = instance_ids(status)
        return ready(1)(status) and bool(ids) and not ids & instance_ids(before)

    await wait_for(provider, name, namespace, rolled)
    # The same spec again is no change: the service already reads the current generation.
    await provider.start(DeploymentSpec(name, namespace, image=IMAGE))
    assert ecs.list_task_definitions(familyPrefix=family)["taskDefinitionArns"] == after


async def test_empty_value_is_invalid_before_any_write(
    provider: EcsProvider, bed: EcsTestBed, service: tuple[str, str]
) -> None:
    namespace, name = service
    with pytest.raises(InvalidSpecError) as caught:
        await provider.apply_config(ConfigMapPatch(name, namespace, set={"EMPTY": "", "X": "1"}))
    assert [v.field for v in caught.value.violations] == ["patch.set['EMPTY']"]
    assert parameters(bed, namespace, name) == {}


@pytest.mark.parametrize(
    "case", [("standard", 4097, True), ("standard", 4096, False), ("advanced", 8193, True)]
)
async def test_values_over_the_ssm_tier_limit_are_refused_before_any_call(
    bed: EcsTestBed, service: tuple[str, str], case: tuple[str, int, bool]
) -> None:
    namespace, name = service
    tier, size, refused = case
    provider = EcsProvider(env=bed.provider_env(ALPHASWARM_AWS_SSM_TIER=tier))
    before = ssm_requests(bed)
    patch = ConfigMapPatch(name, namespace, set={"BIG": "x" * size, "SMALL": "1"})
    if not refused:
        applied = await provider.apply_config(patch)
        assert applied.data["BIG"] == "x" * size
        return
    with pytest.raises(InvalidSpecError) as caught:
        await provider.apply_config(patch)
    [violation] = caught.value.violations
    assert violation.field == "patch.set['BIG']"
    assert f"{size} bytes" in violation.description
    assert "ALPHASWARM_AWS_SSM_TIER" in violation.description
    assert ssm_requests(bed) == before, "no SSM call for a value SSM would refuse"
    assert parameters(bed, namespace, name) == {}


async def test_parameter_references_are_refused_before_any_call(
    provider: EcsProvider, bed: EcsTestBed, service: tuple[str, str]
) -> None:
    namespace, name = service
    with pytest.raises(InvalidSpecError) as caught:
        await provider.apply_config(
            ConfigMapPatch(name, namespace, set={"REF": "{{ssm:/other/secret}}"})
        )
    assert [v.field for v in caught.value.violations] == ["patch.set['REF']"]
    assert parameters(bed, namespace, name) == {}


def test_the_emulator_refuses_values_ssm_refuses(bed: EcsTestBed) -> None:
    from botocore.exceptions import ClientError  # type: ignore[import-untyped]

    ssm = bed.aws.front_client("ssm")
    name = f"/alphaswarm/emulator/{unique_name()}"
    for value, tier in (("x" * 4097, "Standard"), ("x" * 8193, "Advanced"), ("{{ssm:a}}", None)):
        with pytest.raises(ClientError) as caught:
            ssm.put_parameter(
                Name=name, Value=value, Type="String", **({"Tier": tier} if tier else {})
            )
        assert caught.value.response["Error"]["Code"] == "ValidationException"
    ssm.put_parameter(Name=name, Value="x" * 8192, Type="String", Tier="Advanced")


async def test_throttled_writes_are_retried_within_bounds(
    provider: EcsProvider, bed: EcsTestBed, service: tuple[str, str]
) -> None:
    namespace, name = service
    provider.clients.policy = FAST_RETRIES
    puts = bed.faults.count("ssm:PutParameter")
    bed.faults.inject("ssm:PutParameter", Kind.THROTTLED, times=3, message="Rate exceeded")
    applied = await provider.apply_config(
        ConfigMapPatch(name, namespace, set={f"K{i}": str(i) for i in range(4)})
    )
    assert applied.version == "1"
    assert generation(parameters(bed, namespace, name), 1) == {f"K{i}": str(i) for i in range(4)}
    sent = bed.faults.count("ssm:PutParameter") - puts
    # Each key and the commit once, one retry per throttle, and the claim of the change
    # (revisions.py): its create and its end (done).
    assert sent == 4 + 1 + 3 + 2


async def test_a_failure_mid_apply_leaves_the_previous_config_and_a_retry_completes(
    provider: EcsProvider, bed: EcsTestBed, service: tuple[str, str]
) -> None:
    namespace, name = service
    provider.clients.policy = FAST_RETRIES
    await provider.apply_config(ConfigMapPatch(name, namespace, set={"A": "old", "B": "old"}))
    path_before = task_config_path(bed, namespace, name)

    patch = ConfigMapPatch(name, namespace, set={"A": "new", "B": "new", "C": "new"})
    # SSM keeps failing the write of B: the apply gives up after FAST_RETRIES' attempts.
    bed.faults.inject("ssm:PutParameter", Kind.UNAVAILABLE, times=0, match=r'/B"')
    puts = bed.faults.count("ssm:PutParameter")
    with pytest.raises(BackendUnavailableError):
        await provider.apply_config(patch)
    # The claim of the change, A, and B's attempts (the failed change's claim is deleted).
    assert bed.faults.count("ssm:PutParameter") - puts <= 2 + FAST_RETRIES.max_attempts
    assert not [n for n in parameters(bed, namespace, name, with_claims=True) if "_claims/2/" in n]
    bed.faults.clear()

    during = await provider.get_config(name, namespace=namespace)
    assert (during.data, during.version) == ({"A": "old", "B": "old"}, "1")
    assert task_config_path(bed, namespace, name) == path_before, "tasks still read gen 1"

    done = await provider.apply_config(patch)
    assert (done.data, done.version) == ({"A": "new", "B": "new", "C": "new"}, "2")
    read = await provider.get_config(name, namespace=namespace)
    assert (read.data, read.version) == (done.data, "2")
    assert task_config_path(bed, namespace, name) != path_before
    stored = parameters(bed, namespace, name)
    kept = ("_meta/", stored["_meta/1"]["Value"], stored["_meta/2"]["Value"])
    leftovers = [n for n in stored if not n.startswith(kept)]
    assert leftovers == [], "the failed attempt's keys are deleted"


async def test_many_keys_page_through(provider: EcsProvider, service: tuple[str, str]) -> None:
    namespace, name = service
    data = {f"KEY_{i:02d}": str(i) for i in range(25)}
    await provider.apply_config(ConfigMapPatch(name, namespace, set=data))
    read = await provider.get_config(name, namespace=namespace)
    assert read.data == data
    removed = await provider.apply_config(
        ConfigMapPatch(name, namespace, remove=tuple(sorted(data)[:12]))
    )
    assert removed.data == dict(sorted(data.items())[12:])
    assert (await provider.get_config(name, namespace=namespace)).data == removed.data


async def test_apply_under_background_throttling_sends_a_bounded_number_of_requests(
    provider: EcsProvider, bed: EcsTestBed, service: tuple[str, str]
) -> None:
    namespace, name = service
    provider.clients.policy = FAST_RETRIES
    data = {f"K{i}": str(i) for i in range(6)}
    before = ssm_requests(bed)
    quiet = await provider.apply_config(ConfigMapPatch(name, namespace, set=data))
    baseline = ssm_requests(bed) - before

    bed.faults.background(Kind.THROTTLED, every=3)  # every third request, any operation
    before = ssm_requests(bed)
    changed = {k: f"{v}!" for k, v in data.items()}
    noisy = await provider.apply_config(ConfigMapPatch(name, namespace, set=changed))
    sent = ssm_requests(bed) - before
    bed.faults.clear()
    assert (quiet.version, noisy.version) == ("1", "2")
    assert (await provider.get_config(name, namespace=namespace)).data == changed
    # A third of the requests refused: about half again as many sent, never a spin.
    assert baseline < sent <= 2 * baseline + 5, (baseline, sent)
