"""StreamLogs on Container Instances beyond the contract: ACI's logs API, polled.

The parsing and deduplication are checked on their own; the rest runs the real
azure-mgmt clients against the ARM emulator, whose containers write ``line <n> of
<command>`` every 0.2 s, so a gap or a repeat in a follow stream shows in the numbers.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections import Counter
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta

import pytest

from alphaswarm_controller.providers.azure import AciProvider, logs
from alphaswarm_controller.providers.azure.logs import Cursor, Line, parse_content
from alphaswarm_controller.providers.azure.retry import RETRY_TOTAL
from alphaswarm_core.providers.models import MAX_LOG_LINE_BYTES
from alphaswarm_core.providers.protocol import (
    BackendPermissionDenied,
    DeploymentSpec,
    LogEntry,
    LogQuery,
    LogStreamKind,
)
from alphaswarm_core.testing import collect_logs, instance_ids, ready, wait_for
from tests.fakes.arm_emulator import ArmEmulator
from tests.fakes.arm_testing import make_provider
from tests.fakes.faults import Kind
from tests.waiting import until

from .conftest import IMAGE, LOG_COMMAND

LOGS = "arm:Containers_ListLogs"
LIST = "arm:ContainerGroups_ListByResourceGroup"
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def spec(service: str, replicas: int = 1) -> DeploymentSpec:
    return DeploymentSpec(
        service_id=service,
        namespace="team",
        image=IMAGE,
        command=LOG_COMMAND,
        replicas=replicas,
    ).validate()


def number(entry: LogEntry) -> int:
    match = re.match(r"line (\d+) of ", entry.text)
    assert match, entry.text
    return int(match[1])


def contiguous(entries: list[LogEntry]) -> dict[str, list[int]]:
    """Line numbers per replica; asserts each replica's run has no repeat and no gap."""
    runs: dict[str, list[int]] = {}
    for entry in entries:
        runs.setdefault(entry.instance_id, []).append(number(entry))
    for instance, run in runs.items():
        assert run == list(range(run[0], run[0] + len(run))), f"{instance}: {run}"
    return runs


# -- parsing and deduplication ------------------------------------------------------------------


def test_stamped_lines_are_parsed_in_every_rfc3339_form() -> None:
    content = (
        "2024-05-01T12:00:00.123456789Z first\n"
        "2024-05-01T14:00:01+02:00 second\r\n"
        "2024-05-01T12:00:02.5Z \n"
        "2024-05-01T12:00:03.000000001Z  two spaces kept\n"
        "a line without a stamp\n"
        "2024-05-01T12:00:04Z"
    )
    lines = parse_content(content, fallback=T0)
    assert lines == [
        Line(T0 + timedelta(microseconds=123456), "first"),
        Line(T0 + timedelta(seconds=1), "second"),
        Line(T0 + timedelta(seconds=2.5), ""),
        Line(T0 + timedelta(seconds=3), " two spaces kept"),
        Line(T0 + timedelta(seconds=3), "a line without a stamp"),
        Line(T0 + timedelta(seconds=4), ""),
    ]


def test_unstamped_text_takes_the_first_stamp_or_the_fallback() -> None:
    assert parse_content("loose\n2024-05-01T12:00:01Z x\n", T0 - timedelta(days=1)) == [
        Line(T0 + timedelta(seconds=1), "loose"),
        Line(T0 + timedelta(seconds=1), "x"),
    ]
    assert parse_content("no stamps at all\n", T0) == [Line(T0, "no stamps at all")]
    assert parse_content("", T0) == []
    assert parse_content(None or "", T0) == []


def test_a_cursor_sends_each_line_once_across_overlapping_reads() -> None:
    cursor = Cursor()
    at = [T0 + timedelta(seconds=i) for i in range(5)]
    first = [Line(at[0], "a"), Line(at[1], "b"), Line(at[1], "b")]
    assert cursor.fresh(first) == first
    # The next read overlaps: the two identical "b" at the same instant were sent, a
    # third one with that stamp was not.
    second = [Line(at[1], "b"), Line(at[1], "b"), Line(at[1], "b"), Line(at[2], "c")]
    assert cursor.fresh(second) == [Line(at[1], "b"), Line(at[2], "c")]
    assert cursor.fresh(second) == []
    # Another line stamped like the newest one sent still goes out once.
    assert cursor.fresh([Line(at[2], "c"), Line(at[2], "d")]) == [Line(at[2], "d")]
    assert cursor.fresh([Line(at[2], "c"), Line(at[2], "d")]) == []
    # A restarted container starts again: its lines are new because they are later.
    assert cursor.fresh([Line(at[3], "a")]) == [Line(at[3], "a")]
    assert not cursor.gap_before([Line(at[3], "a"), Line(at[4], "b")])
    assert cursor.gap_before([Line(at[4], "b")])


# -- the emulated API, as the provider reads it -------------------------------------------------


async def test_retained_lines_of_every_running_replica_merged_by_time(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    await provider.start(spec("web", 2))
    status = await wait_for(provider, "web", "team", ready(2), timeout=30)
    replicas = instance_ids(status)
    await wait_for_lines(provider, "web", replicas, 5)
    arm.reset_counts()
    entries = await collect_logs(provider, "web", "team", LogQuery())
    assert arm.count("GET", "/logs$") == 2, "one read per replica, nothing else but a listing"
    assert {e.instance_id for e in entries} == replicas
    assert [e.time for e in entries] == sorted(e.time for e in entries)
    assert all(e.stream is LogStreamKind.UNSPECIFIED for e in entries)
    assert all(" of /bin/sh -c while true" in e.text for e in entries)
    runs = contiguous(entries)
    assert all(run[0] == 0 for run in runs.values()), "everything ACI keeps, from line 0"

    last = await collect_logs(provider, "web", "team", LogQuery(tail_lines=2))
    assert Counter(e.instance_id for e in last) == Counter(dict.fromkeys(replicas, 2))
    for instance, tail in contiguous(last).items():
        assert tail[0] >= runs[instance][-1] - 1, "the newest lines, read later"
    assert all(re.search(r"[?&]tail=2(&|$)", url) for url in log_urls(arm)[-2:])
    assert all("timestamps=true" in url for url in log_urls(arm))


def log_urls(arm: ArmEmulator) -> list[str]:
    return [url for url in arm.urls if "/logs?" in url]


async def wait_for_lines(
    provider: AciProvider, service: str, replicas: set[str], count: int
) -> list[LogEntry]:
    def enough(entries: list[LogEntry]) -> bool:
        seen = Counter(e.instance_id for e in entries)
        return all(seen[i] >= count for i in replicas)

    return await until(
        lambda: collect_logs(provider, service, "team", LogQuery()),
        f"{count} lines of each of {sorted(replicas)}",
        holds=enough,
        every=0.2,
    )


async def test_a_stopped_service_has_no_running_container_to_read(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    await provider.start(spec("idle", 1))
    await wait_for(provider, "idle", "team", ready(1), timeout=30)
    await provider.stop("idle", namespace="team")
    arm.reset_counts()
    assert await collect_logs(provider, "idle", "team", LogQuery()) == []
    assert arm.count("GET", "/logs$") == 0


async def test_a_replica_not_running_yet_has_no_lines_rather_than_an_error() -> None:
    with ArmEmulator(provision_delay=30.0) as arm:
        provider = make_provider(arm, AciProvider)
        await provider.start(spec("slow", 1))
        assert await collect_logs(provider, "slow", "team", LogQuery()) == []
        assert arm.faults.count(LOGS) == 1, "asked once: ContainerLogNotAvailable"
        await provider.close()


async def test_the_instance_filter_reads_that_replica_only(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    await provider.start(spec("pair", 2))
    status = await wait_for(provider, "pair", "team", ready(2), timeout=30)
    one = sorted(instance_ids(status))[0]
    group = one.split("/")[0]
    await wait_for_lines(provider, "pair", instance_ids(status), 1)
    arm.reset_counts()
    entries = await collect_logs(provider, "pair", "team", LogQuery(instance_id=one))
    assert entries and {e.instance_id for e in entries} == {one}
    assert arm.count("GET", "/logs$") == arm.count("GET", f"/{group}/containers/pair/logs$") == 1


async def test_a_permission_error_comes_at_the_first_read(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    await provider.start(spec("locked", 1))
    await wait_for(provider, "locked", "team", ready(1), timeout=30)
    arm.faults.inject(LOGS, Kind.DENIED)
    stream = provider.stream_logs("locked", LogQuery(follow=True), namespace="team")
    with pytest.raises(BackendPermissionDenied):
        await anext(stream)
    await stream.aclose()


# -- follow -------------------------------------------------------------------------------------


async def read_for(
    stream: AsyncGenerator[LogEntry, None], seconds: float
) -> tuple[list[LogEntry], float]:
    """Entries of ``stream`` until ``seconds`` have passed (lines come every 0.2 s)."""
    started = time.monotonic()
    seen: list[LogEntry] = []
    async for entry in stream:
        seen.append(entry)
        if time.monotonic() - started >= seconds:
            break
    return seen, time.monotonic() - started


@pytest.mark.parametrize("faulted", [False, True], ids=["clean", "throttled-and-5xx"])
async def test_follow_polls_at_the_interval_and_sends_every_line_once(
    arm: ArmEmulator, provider: AciProvider, faulted: bool
) -> None:
    await provider.start(spec("tick", 2))
    status = await wait_for(provider, "tick", "team", ready(2), timeout=30)
    await wait_for_lines(provider, "tick", instance_ids(status), 3)
    interval = provider.settings.log_poll_interval
    if faulted:  # as the contract suite runs: every 7th request 429, every 11th 503
        arm.faults.background(Kind.THROTTLED, every=7)
        arm.faults.background(Kind.UNAVAILABLE, every=11)
    reads, refused = arm.faults.count(LOGS), arm.faults.failed[LOGS]
    listings, total = arm.faults.count(LIST), arm.faults.count()
    stream = provider.stream_logs("tick", LogQuery(follow=True, tail_lines=3), namespace="team")
    try:
        seen, elapsed = await read_for(stream, 3.0)
    finally:
        await stream.aclose()
    runs = contiguous(seen)
    assert set(runs) == instance_ids(status)
    assert all(len(run) >= 3 + 5 for run in runs.values()), "new lines kept coming"
    reads = arm.faults.count(LOGS) - reads
    refused = arm.faults.failed[LOGS] - refused
    answered = reads - refused
    # Each poll reads each replica once (a refused read is sent again, once per fault):
    # the first poll at once, then one per interval.
    assert answered <= 2 * (elapsed / interval + 2), (answered, elapsed)
    assert answered >= 2 * 2, "it did poll again"
    total = arm.faults.count() - total  # background faults hit every 7th/11th of these
    assert refused == 0 if not faulted else 0 < refused <= total / 7 + total / 11 + 2
    assert arm.faults.count(LIST) - listings <= 2 * (elapsed / logs.REPLICA_REFRESH + 2)


async def test_follow_picks_up_a_restarted_instance_and_new_replicas(
    arm: ArmEmulator, provider: AciProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "REPLICA_REFRESH", 0.5)
    await provider.start(spec("boot", 1))
    first = instance_ids(await wait_for(provider, "boot", "team", ready(1), timeout=30))
    await wait_for_lines(provider, "boot", first, 3)
    stream = provider.stream_logs("boot", LogQuery(follow=True, tail_lines=1), namespace="team")

    def restarted(entries: list[LogEntry]) -> bool:
        numbers = [number(e) for e in entries if e.instance_id in first]
        return any(b < a for a, b in itertools.pairwise(numbers))

    def added(entries: list[LogEntry]) -> bool:
        return {number(e) for e in entries if e.instance_id not in first} >= {0, 1}

    seen: list[LogEntry] = []
    try:
        seen.append(await anext(stream))
        # Stopped and started again: ACI keeps the new container instance's log only,
        # which begins at line 0 again, with later times; scaled to 2 on the way.
        await provider.stop("boot", namespace="team")
        await provider.start(spec("boot", 2))
        async with asyncio.timeout(60):
            async for entry in stream:
                seen.append(entry)
                if restarted(seen) and added(seen):
                    break
    finally:
        await stream.aclose()
    again = [e for e in seen if e.instance_id in first]
    assert [e.time for e in again] == sorted(e.time for e in again)
    assert len({(e.instance_id, e.time, e.text) for e in seen}) == len(seen), "no repeats"


async def test_lines_written_faster_than_a_poll_reads_are_not_skipped(
    arm: ArmEmulator, provider: AciProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each follow poll asks for 2 lines while ~5 are written per poll: the read that
    # comes back full and starts after the cursor is read again without tail.
    monkeypatch.setattr(logs, "FOLLOW_TAIL", 2)
    await provider.start(spec("fast", 1))
    status = await wait_for(provider, "fast", "team", ready(1), timeout=30)
    await wait_for_lines(provider, "fast", instance_ids(status), 2)
    stream = provider.stream_logs("fast", LogQuery(follow=True, tail_lines=1), namespace="team")
    try:
        seen, _ = await read_for(stream, 2.0)
    finally:
        await stream.aclose()
    (run,) = contiguous(seen).values()
    assert len(run) >= 6
    assert any("tail=" not in url for url in log_urls(arm)), "re-read without tail"


async def test_a_failing_backend_does_not_end_a_follow_stream(
    arm: ArmEmulator, provider: AciProvider
) -> None:
    await provider.start(spec("blip", 1))
    status = await wait_for(provider, "blip", "team", ready(1), timeout=30)
    await wait_for_lines(provider, "blip", instance_ids(status), 2)
    stream = provider.stream_logs("blip", LogQuery(follow=True, tail_lines=1), namespace="team")
    try:
        seen = [await anext(stream)]
        # More 503s than the SDK retries: one poll round fails, the stream goes on.
        arm.faults.inject(LOGS, Kind.UNAVAILABLE, times=RETRY_TOTAL + 2)
        failed_before = arm.faults.failed[LOGS]
        async for entry in stream:
            seen.append(entry)
            if arm.faults.failed[LOGS] - failed_before == RETRY_TOTAL + 2 and len(seen) > 12:
                break
    finally:
        await stream.aclose()
    contiguous(seen)


async def test_a_long_line_is_cut_and_marked() -> None:
    cursor = Cursor()
    text = "x" * (MAX_LOG_LINE_BYTES + 10)
    (line,) = cursor.fresh(parse_content(f"2024-05-01T12:00:00Z {text}\n", T0))
    entry = LogEntry.bounded("g/i", line.time, line.text)
    assert entry.truncated and len(entry.text) == MAX_LOG_LINE_BYTES
