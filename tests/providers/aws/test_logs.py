"""ECS logs: what the emulated awslogs driver wrote to moto's CloudWatch Logs, read back
through stream_logs; the requests it costs; the group the provider creates."""

from __future__ import annotations

import asyncio
import re
import shlex
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import boto3  # type: ignore[import-untyped]
import pytest
from botocore.config import Config  # type: ignore[import-untyped]

from alphaswarm_controller.providers.aws import EcsProvider
from alphaswarm_controller.providers.aws.logread import LOOKBACK_MS, Cursor, Follower, to_ms
from alphaswarm_controller.providers.aws.logs import stream_of
from alphaswarm_controller.providers.aws.taskdef import log_group, service_name
from alphaswarm_core.providers.models import MAX_LOG_LINE_BYTES
from alphaswarm_core.providers.protocol import (
    DeploymentSpec,
    DeploymentState,
    InvalidSpecError,
    LogEntry,
    LogQuery,
    LogStreamKind,
    SettingInvalid,
)
from alphaswarm_core.testing import collect_logs, instance_ids, ready, unique_name, wait_for
from tests.fakes.faults import Kind
from tests.fakes.moto_server import IMAGE, EcsTestBed
from tests.waiting import until

from .support import LOG_COMMAND, log_spec_factory

LINE = re.compile(rf"{re.escape(shlex.join(LOG_COMMAND))} #(?P<n>\d+)")
POLL = 1.0


@pytest.fixture
async def fast(bed: EcsTestBed) -> AsyncIterator[EcsProvider]:
    """A provider polling CloudWatch once a second while it follows."""
    instance = EcsProvider(env=bed.provider_env(ALPHASWARM_AWS_LOGS_POLL_INTERVAL=str(POLL)))
    await instance.open()
    try:
        yield instance
    finally:
        await instance.close()
        bed.faults.clear()


async def running(provider: EcsProvider, namespace: str, replicas: int = 1) -> tuple[str, set[str]]:
    service = unique_name()
    await provider.start(log_spec_factory()(service, namespace, replicas=replicas))
    status = await wait_for(provider, service, namespace, ready(replicas))
    return service, instance_ids(status)


def numbers(entries: list[LogEntry]) -> list[int]:
    found = []
    for entry in entries:
        match = LINE.fullmatch(entry.text)
        assert match, entry.text
        found.append(int(match["n"]))
    return found


async def lines_until(
    provider: EcsProvider,
    service: str,
    namespace: str,
    predicate: Callable[[list[LogEntry]], bool],
    query: LogQuery,
) -> list[LogEntry]:
    return await until(
        lambda: collect_logs(provider, service, namespace, query),
        "the lines awaited",
        holds=predicate,
        within=60,
        every=0.5,
    )


async def follow(
    provider: EcsProvider, service: str, namespace: str, query: LogQuery, count: int
) -> list[LogEntry]:
    stream = provider.stream_logs(service, query, namespace=namespace)
    seen: list[LogEntry] = []
    try:
        async with asyncio.timeout(90):
            async for entry in stream:
                seen.append(entry)
                if len(seen) == count:
                    break
    finally:
        await stream.aclose()
    return seen


async def test_each_task_reads_back_what_its_driver_wrote(
    fast: EcsProvider, bed: EcsTestBed, namespace: str
) -> None:
    service, tasks = await running(fast, namespace, replicas=2)

    def three_each(entries: list[LogEntry]) -> bool:
        return all(sum(e.instance_id == t for e in entries) >= 3 for t in tasks)

    entries = await lines_until(fast, service, namespace, three_each, LogQuery())
    assert {e.instance_id for e in entries} == tasks, "instance ids are the task ids"
    for task in tasks:
        own = [e for e in entries if e.instance_id == task]
        assert numbers(own) == list(range(1, len(own) + 1)), "every line, once, in order"
        assert [e.time for e in own] == sorted(e.time for e in own)
        assert all(e.stream is LogStreamKind.UNSPECIFIED for e in own), "awslogs mixes both"
    assert [e.time for e in entries] == sorted(e.time for e in entries), "merged by time"
    streams = bed.aws.client("logs").describe_log_streams(
        logGroupName=log_group(namespace, service)
    )["logStreams"]
    assert {s["logStreamName"] for s in streams} == {stream_of(t) for t in tasks}


async def test_tail_costs_one_get_log_events_per_task(
    fast: EcsProvider, bed: EcsTestBed, namespace: str
) -> None:
    service, tasks = await running(fast, namespace, replicas=3)
    await lines_until(
        fast, service, namespace, lambda e: len({x.instance_id for x in e}) == 3, LogQuery()
    )
    before = bed.faults.seen.copy()
    last = await collect_logs(fast, service, namespace, LogQuery(tail_lines=2))
    sent = bed.faults.seen - before
    assert sent["logs:GetLogEvents"] == len(tasks)
    assert sent["logs:FilterLogEvents"] == 0, "no follow, no poll"
    assert sorted(e.instance_id for e in last) == sorted([*tasks, *tasks])


async def test_follow_polls_once_an_interval_whatever_the_replicas(
    fast: EcsProvider, bed: EcsTestBed, namespace: str
) -> None:
    service, tasks = await running(fast, namespace, replicas=3)
    before = bed.faults.count("logs:FilterLogEvents")
    began = time.monotonic()
    seen = await follow(fast, service, namespace, LogQuery(follow=True, tail_lines=1), 3 + 3 * 8)
    elapsed = time.monotonic() - began
    polls = bed.faults.count("logs:FilterLogEvents") - before
    assert {e.instance_id for e in seen} == tasks
    # One request per poll (no page needed at this rate), polls POLL seconds apart.
    assert 1 <= polls <= elapsed / POLL + 1, (polls, elapsed)


async def test_follow_sends_every_line_once_across_late_batches(
    fast: EcsProvider, namespace: str
) -> None:
    """The driver sends every 5 s, so lines reach CloudWatch up to 5 s after their
    timestamp, and each poll reads the lookback window again: nothing lost, nothing twice."""
    service, (task,) = await running(fast, namespace)
    seen = await follow(fast, service, namespace, LogQuery(follow=True, tail_lines=2), 14)
    assert {e.instance_id for e in seen} == {task}
    got = numbers(seen)
    assert got == list(range(got[0], got[0] + len(got))), got


async def test_follow_survives_failing_polls(
    fast: EcsProvider, bed: EcsTestBed, namespace: str
) -> None:
    service, _ = await running(fast, namespace)
    # More throttled answers in a row than one call retries: the poll fails, the stream
    # backs off and polls the same window again.
    bed.faults.inject("logs:FilterLogEvents", Kind.THROTTLED, times=8)
    seen = await follow(fast, service, namespace, LogQuery(follow=True, tail_lines=1), 12)
    got = numbers(seen)
    assert got == list(range(got[0], got[0] + len(got))), got
    assert bed.faults.failed["logs:FilterLogEvents"] >= 8


async def test_instance_and_since_filters(fast: EcsProvider, namespace: str) -> None:
    service, tasks = await running(fast, namespace, replicas=2)

    def three_each(entries: list[LogEntry]) -> bool:
        return all(sum(e.instance_id == t for e in entries) >= 3 for t in tasks)

    entries = await lines_until(fast, service, namespace, three_each, LogQuery())
    one = sorted(tasks)[0]
    only = await collect_logs(fast, service, namespace, LogQuery(instance_id=one))
    assert only and {e.instance_id for e in only} == {one}
    middle = sorted(e.time for e in entries)[len(entries) // 2]
    later = await collect_logs(fast, service, namespace, LogQuery(since=middle))
    assert later and all(e.time >= middle for e in later)
    followed = await follow(
        fast, service, namespace, LogQuery(follow=True, tail_lines=1, instance_id=one), 4
    )
    assert {e.instance_id for e in followed} == {one}


async def test_an_instance_id_that_is_no_task_id_is_refused_before_any_call(
    fast: EcsProvider, bed: EcsTestBed, namespace: str
) -> None:
    before = bed.faults.count()
    stream = fast.stream_logs("web", LogQuery(instance_id="../other"), namespace=namespace)
    with pytest.raises(InvalidSpecError) as caught:
        await anext(stream)
    await stream.aclose()
    assert [v.field for v in caught.value.violations] == ["instance_id"]
    assert bed.faults.count() == before


async def test_long_lines_are_cut_and_marked(
    fast: EcsProvider, bed: EcsTestBed, namespace: str
) -> None:
    service, (task,) = await running(fast, namespace)
    bed.aws.client("logs").put_log_events(
        logGroupName=log_group(namespace, service),
        logStreamName=stream_of(task),
        logEvents=[{"timestamp": int(time.time() * 1000), "message": "x" * 100_000}],
    )

    def has_long(entries: list[LogEntry]) -> bool:
        return any(e.truncated for e in entries)

    entries = await lines_until(fast, service, namespace, has_long, LogQuery())
    [long] = [e for e in entries if e.truncated]
    assert len(long.text.encode()) == MAX_LOG_LINE_BYTES


async def test_a_follow_ends_when_the_service_is_deleted(fast: EcsProvider, namespace: str) -> None:
    service, _ = await running(fast, namespace)
    stream = fast.stream_logs(service, LogQuery(follow=True, tail_lines=1), namespace=namespace)
    try:
        async with asyncio.timeout(60):
            await anext(stream)
            await fast.delete(service, namespace=namespace)
            rest = [entry async for entry in stream]  # ends by itself
    finally:
        await stream.aclose()
    assert all(e.time <= datetime.now(UTC) for e in rest)


async def test_the_group_gets_the_retention_setting(bed: EcsTestBed, namespace: str) -> None:
    logs = bed.aws.client("logs")
    for setting, expected in (("", 30), ("7", 7), ("0", None)):
        env = {"ALPHASWARM_AWS_LOG_RETENTION_DAYS": setting} if setting else {}
        provider = EcsProvider(env=bed.provider_env(**env))
        service = unique_name()
        await provider.start(DeploymentSpec(service, namespace, image=IMAGE))
        [group] = logs.describe_log_groups(logGroupNamePrefix=log_group(namespace, service))[
            "logGroups"
        ]
        assert group.get("retentionInDays") == expected, setting


async def test_an_existing_group_keeps_its_retention(bed: EcsTestBed, namespace: str) -> None:
    service = unique_name()
    logs = bed.aws.client("logs")
    logs.create_log_group(logGroupName=log_group(namespace, service))
    logs.put_retention_policy(logGroupName=log_group(namespace, service), retentionInDays=365)
    await EcsProvider(env=bed.provider_env()).start(DeploymentSpec(service, namespace, image=IMAGE))
    [group] = logs.describe_log_groups(logGroupNamePrefix=log_group(namespace, service))[
        "logGroups"
    ]
    assert group["retentionInDays"] == 365


async def test_a_retention_cloudwatch_does_not_offer_is_a_setting_error(
    bed: EcsTestBed, namespace: str
) -> None:
    provider = EcsProvider(env=bed.provider_env(ALPHASWARM_AWS_LOG_RETENTION_DAYS="10"))
    with pytest.raises(SettingInvalid) as caught:
        await provider.start(DeploymentSpec(unique_name(), namespace, image=IMAGE))
    assert "ALPHASWARM_AWS_LOG_RETENTION_DAYS" in caught.value.message


async def test_a_task_cannot_start_without_its_log_group_and_start_restores_it(
    provider: EcsProvider, bed: EcsTestBed, namespace: str
) -> None:
    """The emulated driver, like Docker's: no group, no container."""
    service, _ = await running(provider, namespace)
    bed.aws.client("logs").delete_log_group(logGroupName=log_group(namespace, service))
    await provider.scale(service, 2, namespace=namespace)
    status = await wait_for(provider, service, namespace, lambda s: s.restarts > 0)
    assert status.state is DeploymentState.DEGRADED
    ecs = bed.aws.client("ecs")
    arns = ecs.list_tasks(cluster=bed.cluster, desiredStatus="STOPPED")["taskArns"]
    reasons = [
        task.get("stoppedReason", "")
        for task in ecs.describe_tasks(cluster=bed.cluster, tasks=arns[-100:])["tasks"]
        if task.get("group") == f"service:{service_name(namespace, service)}"
    ]
    assert any("The specified log group does not exist" in r for r in reasons), reasons
    await provider.start(log_spec_factory()(service, namespace, replicas=2))
    await wait_for(provider, service, namespace, ready(2))


def test_the_front_refuses_what_cloudwatch_logs_refuses(bed: EcsTestBed) -> None:
    # botocore checks some of these before sending; the service checks them all.
    logs = boto3.client(
        "logs",
        region_name=bed.aws.region,
        endpoint_url=bed.aws.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(parameter_validation=False, retries={"total_max_attempts": 1}),
    )
    group = f"/alphaswarm/rules/{unique_name()}"
    bed.aws.client("logs").create_log_group(logGroupName=group)
    refused: dict[str, Callable[[], object]] = {
        "limit 0": lambda: logs.filter_log_events(logGroupName=group, limit=0),
        "negative start": lambda: logs.filter_log_events(logGroupName=group, startTime=-1),
        "names and prefix": lambda: logs.filter_log_events(
            logGroupName=group, logStreamNames=["a"], logStreamNamePrefix="a"
        ),
        "101 streams": lambda: logs.filter_log_events(
            logGroupName=group, logStreamNames=[f"s{i}" for i in range(101)]
        ),
        "get limit 10001": lambda: logs.get_log_events(
            logGroupName=group, logStreamName="s", limit=10_001
        ),
        "10-day retention": lambda: logs.put_retention_policy(
            logGroupName=group, retentionInDays=10
        ),
    }
    for case, call in refused.items():
        with pytest.raises(Exception) as caught:
            call()
        error = getattr(caught.value, "response", {}).get("Error", {})
        assert error.get("Code") == "InvalidParameterException", (case, caught.value)


def test_filter_log_events_is_sorted_across_streams(bed: EcsTestBed) -> None:
    """AWS ignores ``interleaved`` and sorts by time across streams; moto did not."""
    direct = bed.aws.client("logs")
    group = f"/alphaswarm/rules/{unique_name()}"
    direct.create_log_group(logGroupName=group)
    base = int(time.time() * 1000)
    for stream, offsets in (("a", (0, 2, 4)), ("b", (1, 3, 5))):
        direct.create_log_stream(logGroupName=group, logStreamName=stream)
        direct.put_log_events(
            logGroupName=group,
            logStreamName=stream,
            logEvents=[{"timestamp": base + o, "message": f"{stream}{o}"} for o in offsets],
        )
    events = bed.aws.front_client("logs").filter_log_events(logGroupName=group)["events"]
    assert [e["message"] for e in events] == ["a0", "b1", "a2", "b3", "a4", "b5"]


def test_the_follow_cursor_sends_each_event_once() -> None:
    """Events of one stream come in order; each poll sees its window again, with lines
    that arrived since (same millisecond as the cursor, later, or of a new stream)."""
    follower = Follower(since=0, last_end=18_000, cursors={"a": Cursor(5_000, 1)})
    start, end = follower.window()
    assert start == 18_000 - LOOKBACK_MS
    # The tail sent a@5000 once; a second line of that millisecond arrived meanwhile.
    first = [("a", 5_000), ("a", 5_000), ("b", 5_500), ("a", 6_000)]
    assert [follower.accept(s, t) for s, t in first] == [False, True, True, True]
    follower.done(start, end)
    follower.window()
    # The next poll reads the same events again, plus a late one of b and a new one of a.
    again = [("a", 5_000), ("a", 5_000), ("b", 5_500), ("b", 5_600), ("a", 6_000), ("a", 6_000)]
    assert [follower.accept(s, t) for s, t in again] == [False, False, False, True, False, True]


def test_the_follow_window_honours_since_and_forgets_old_cursors() -> None:
    follower = Follower(since=20_000, last_end=10_000)
    start, end = follower.window()
    assert start == 20_000 and end >= start
    assert not follower.accept("a", 19_999)
    assert follower.accept("a", 20_000)
    follower.cursors["old"] = Cursor(1, 1)
    follower.done(start, end)
    assert "old" not in follower.cursors and "a" in follower.cursors


def test_times_map_to_whole_milliseconds_exactly() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 123_000, tzinfo=UTC)
    assert to_ms(moment) == int(moment.timestamp()) * 1000 + 123
    assert to_ms(moment + timedelta(microseconds=1)) == to_ms(moment) + 1  # the next one
    assert to_ms(datetime(1960, 1, 1, tzinfo=UTC)) == 0
