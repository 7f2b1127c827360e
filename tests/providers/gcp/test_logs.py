"""CloudRunProvider.stream_logs against the Cloud Logging emulator, under background faults."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import pytest

from alphaswarm_controller.providers.gcp import CloudRunProvider, logs
from alphaswarm_controller.providers.gcp.cloudrun import cloud_run_name
from alphaswarm_core.providers.protocol import (
    BackendPermissionDenied,
    BackendUnavailableError,
    LogEntry,
    LogQuery,
    LogStreamKind,
)
from alphaswarm_core.providers.reasons import ErrorReason
from alphaswarm_core.testing import SpecFactory, by_instance, collect_logs, ready, wait_for
from tests.fakes.faults import Kind
from tests.fakes.gcp_run import Instance
from tests.fakes.gcp_server import GcpEmulator

from .conftest import served

_LINE = re.compile(r".* line (\d+)")


async def _running(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    specs: SpecFactory,
    namespace: str,
    *,
    service: str = "web",
    replicas: int = 1,
) -> list[Instance]:
    emulator.run.log_interval = 0.1
    await cloud_run.start(specs(service, namespace, replicas=replicas))
    await wait_for(cloud_run, service, namespace, ready(replicas))
    short = cloud_run_name(namespace, service)
    with emulator.plumbing.lock:
        return [i for i in emulator.run.instances if i.service_name == short and not i.stopped]


def _numbers(entries: list[LogEntry]) -> list[int]:
    found = []
    for entry in entries:
        match = _LINE.fullmatch(entry.text)
        assert match is not None, entry.text
        found.append(int(match.group(1)))
    return found


async def test_retained_lines_are_stdout_and_stderr_of_this_service_only(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    cloud_run_specs: SpecFactory,
    namespace: str,
) -> None:
    (instance,) = await _running(cloud_run, emulator, cloud_run_specs, namespace)
    await _running(cloud_run, emulator, cloud_run_specs, namespace, service="other")
    await asyncio.sleep(1.0)
    entries = await collect_logs(cloud_run, "web", namespace, LogQuery())
    assert {e.instance_id for e in entries} == {instance.instance_id}
    numbers = _numbers(entries)  # the system log's "Starting new instance" is not a line
    assert numbers == list(range(len(numbers))) and len(numbers) >= 8, "every line, in order"
    streams = {n: e.stream for n, e in zip(numbers, entries, strict=True)}
    assert streams[3] is LogStreamKind.STDERR and streams[4] is LogStreamKind.STDOUT
    assert entries[0].text.startswith(f"{instance.argv[0]} line 0")

    tail = await collect_logs(cloud_run, "web", namespace, LogQuery(tail_lines=3))
    last = _numbers(tail)  # the newest three (more may have been written meanwhile)
    assert len(last) == 3 and last == list(range(last[0], last[0] + 3)) and last[0] >= numbers[-3]
    since = entries[5].time
    later = await collect_logs(cloud_run, "web", namespace, LogQuery(since=since))
    assert later and min(e.time for e in later) >= since


async def test_a_recreated_service_does_not_show_its_predecessors_lines(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    cloud_run_specs: SpecFactory,
    namespace: str,
) -> None:
    (old,) = await _running(cloud_run, emulator, cloud_run_specs, namespace)
    await asyncio.sleep(0.3)
    assert await cloud_run.delete("web", namespace=namespace)
    (new,) = await _running(cloud_run, emulator, cloud_run_specs, namespace)
    await asyncio.sleep(0.3)
    entries = await collect_logs(cloud_run, "web", namespace, LogQuery())
    assert entries and {e.instance_id for e in entries} == {new.instance_id}
    assert old.instance_id != new.instance_id


async def test_structured_and_oversized_lines(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    cloud_run_specs: SpecFactory,
    namespace: str,
) -> None:
    (instance,) = await _running(cloud_run, emulator, cloud_run_specs, namespace)
    with emulator.plumbing.lock:
        emulator.logging.write(instance, json_payload={"message": "structured", "severity": "INFO"})
        emulator.logging.write(instance, json_payload={"detail": "x"})
        emulator.logging.write(instance, "x" * 20_000, stream="stderr")
    everything = await collect_logs(cloud_run, "web", namespace, LogQuery())
    entries = [e for e in everything if not _LINE.fullmatch(e.text)]
    assert [e.text[:15] for e in entries] == ["structured", '{"detail": "x"}', "x" * 15]
    assert entries[2].truncated and entries[2].stream is LogStreamKind.STDERR
    assert len(entries[2].text.encode()) == 16 * 1024


async def test_retained_read_is_bounded_in_pages_and_follows_empty_pages(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    cloud_run_specs: SpecFactory,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await _running(cloud_run, emulator, cloud_run_specs, namespace, replicas=2)
    await asyncio.sleep(1.5)  # about 15 lines each
    monkeypatch.setattr(logs, "PAGE_SIZE", 4)
    monkeypatch.setattr(logs, "MAX_PAGES", 3)
    emulator.faults.clear()
    emulator.logging.empty_pages = 1
    before = served(emulator, "logging:ListLogEntries")
    entries = await collect_logs(cloud_run, "web", namespace, LogQuery())
    assert served(emulator, "logging:ListLogEntries") - before == 3
    assert len(entries) == 8, "an empty page with a token is followed; pages stop at the bound"
    assert [e.time for e in entries] == sorted(e.time for e in entries)


async def test_an_instance_filter_is_a_literal(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    cloud_run_specs: SpecFactory,
    namespace: str,
) -> None:
    (instance,) = await _running(cloud_run, emulator, cloud_run_specs, namespace)
    await asyncio.sleep(0.3)
    injected = LogQuery(instance_id=f'{instance.instance_id}" OR labels.instanceId != "')
    assert await collect_logs(cloud_run, "web", namespace, injected) == []
    query = LogQuery(instance_id=instance.instance_id)
    own = await collect_logs(cloud_run, "web", namespace, query)
    assert own and {e.instance_id for e in own} == {instance.instance_id}


async def _follow(
    cloud_run: CloudRunProvider, query: LogQuery, until: int, namespace: str
) -> list[LogEntry]:
    stream = cloud_run.stream_logs("web", query, namespace=namespace)
    seen: list[LogEntry] = []
    try:
        async with asyncio.timeout(60):
            async for entry in stream:
                seen.append(entry)
                if len(seen) >= until:
                    break
    finally:
        await stream.aclose()
    return seen


async def test_follow_resumes_ended_sessions_without_gaps_or_repeats(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    cloud_run_specs: SpecFactory,
    namespace: str,
) -> None:
    await _running(cloud_run, emulator, cloud_run_specs, namespace, replicas=2)
    emulator.logging.tail_session_seconds = 2.5  # Cloud Logging ends sessions; we resume
    opened = emulator.logging.tail_opened
    reads = served(emulator, "logging:ListLogEntries")
    attempts = emulator.faults.count("logging:TailLogEntries")
    started = asyncio.get_running_loop().time()
    seen = await _follow(cloud_run, LogQuery(follow=True, tail_lines=1), 120, namespace)
    elapsed = asyncio.get_running_loop().time() - started
    grouped = by_instance(seen)
    assert len(grouped) == 2
    for lines in grouped.values():
        numbers = _numbers(lines)
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    sessions = emulator.logging.tail_opened - opened
    assert 2 <= sessions <= elapsed / 2.5 + 3, (sessions, elapsed)
    # One catch-up read per session attempt (the first is the retained tail), never a poll.
    attempts = emulator.faults.count("logging:TailLogEntries") - attempts
    assert served(emulator, "logging:ListLogEntries") - reads <= attempts <= sessions + 3


async def test_follow_survives_transient_tail_failures_and_reports_denial(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    cloud_run_specs: SpecFactory,
    namespace: str,
) -> None:
    await _running(cloud_run, emulator, cloud_run_specs, namespace)
    emulator.faults.inject("logging:TailLogEntries", Kind.UNAVAILABLE, times=2)
    seen = await _follow(cloud_run, LogQuery(follow=True, tail_lines=1), 25, namespace)
    assert len(seen) == 25
    emulator.faults.inject("logging:TailLogEntries", Kind.DENIED)
    stream = cloud_run.stream_logs("web", LogQuery(follow=True), namespace=namespace)
    try:
        with pytest.raises(BackendPermissionDenied, match=r"roles/logging\.viewer"):
            async with asyncio.timeout(30):
                async for _ in stream:
                    pass
    finally:
        await stream.aclose()


async def test_the_read_quota_is_reported_as_throttling(
    cloud_run: CloudRunProvider,
    emulator: GcpEmulator,
    cloud_run_specs: SpecFactory,
    namespace: str,
) -> None:
    await _running(cloud_run, emulator, cloud_run_specs, namespace)
    emulator.faults.clear()
    emulator.logging.quota.limit = 1
    await collect_logs(cloud_run, "web", namespace, LogQuery())
    before = emulator.faults.count("logging:ListLogEntries")
    with pytest.raises(BackendUnavailableError) as caught:
        await collect_logs(cloud_run, "web", namespace, LogQuery())
    assert caught.value.reason == ErrorReason.BACKEND_THROTTLED
    assert emulator.faults.count("logging:ListLogEntries") - before <= 5  # bounded retries


def test_filter_names_the_service_its_logs_and_the_floor() -> None:
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    reader = logs.CloudRunLogs(None, "p-test-1", "europe-west4", "ns-web-abc123", created)  # type: ignore[arg-type]
    text = reader.filter(LogQuery(since=datetime(2025, 1, 1, tzinfo=UTC), instance_id='a"b'))
    assert 'resource.labels.service_name = "ns-web-abc123"' in text
    assert 'timestamp >= "2026-01-02T03:04:05.000000Z"' in text
    assert 'labels.instanceId = "a\\"b"' in text
    assert "run.googleapis.com%2Fstdout" in text and "run.googleapis.com%2Fstderr" in text
