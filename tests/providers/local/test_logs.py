"""StreamLogs of the local provider beyond the contract, against real processes and files.

Long lines, a replica that writes as fast as it can (every line arrives once and in
order, and the server's memory stays flat while a slow reader catches up),
rotation under a follower, a follower left behind by rotation, replaced replicas,
and namespaces that never see each other's lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tracemalloc
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

from alphaswarm_controller.providers.local import LocalProvider
from alphaswarm_core.providers.models import MAX_LOG_LINE_BYTES
from alphaswarm_core.providers.protocol import (
    ConfigMapPatch,
    DeploymentNotFoundError,
    DeploymentStatus,
    LogEntry,
    LogQuery,
    LogStreamKind,
)
from alphaswarm_core.testing import collect_logs, ready, unique_name, wait_for
from alphaswarm_core.testing.contract import rollout_done, wait_for_logs

from .support import command_spec, local_env, opened, pids, read_log_until, replica_python

TIMEOUT = 120.0


def burst(count: int, width: int = 1) -> tuple[str, ...]:
    """A replica that prints ``ready``, waits for SIGUSR1, then writes the numbers below
    ``count`` one per line (zero-padded to ``width``) as fast as it can, prints ``done``
    and stays."""
    script = (
        "import signal, sys, time\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})\n"
        "print('ready', flush=True)\n"
        "signal.sigwait({signal.SIGUSR1})\n"
        f"for start in range(0, {count}, 1000):\n"
        f"    end = min(start + 1000, {count})\n"
        f"    sys.stdout.write(''.join(f'{{i:0{width}d}}\\n' for i in range(start, end)))\n"
        "sys.stdout.flush()\n"
        "print('done', flush=True)\n"
        "time.sleep(300)\n"
    )
    return (replica_python(), "-c", script)


async def released(
    provider: LocalProvider, service: str, namespace: str
) -> AsyncGenerator[LogEntry, None]:
    """A follower of ``service`` (one replica running ``burst``) that has seen ``ready``
    and then let the replica go; the caller closes it."""
    (pid,) = pids(await wait_for(provider, service, namespace, ready(1)))
    stream = provider.stream_logs(service, LogQuery(follow=True, tail_lines=1), namespace=namespace)
    async with asyncio.timeout(TIMEOUT):
        async for entry in stream:
            if entry.text == "ready":
                break
    os.kill(pid, signal.SIGUSR1)
    return stream


def pid_of(status: DeploymentStatus, slot: str) -> int:
    """The pid of replica ``slot`` (``<service>-<n>``) in a status."""
    (pid,) = (
        int(instance.instance_id.split("@")[1])
        for instance in status.instances
        if instance.instance_id.startswith(f"{slot}@")
    )
    return pid


def numbers_then_done(texts: list[str]) -> list[int]:
    assert texts and texts[-1] == "done", texts[-3:]
    return [int(text) for text in texts[:-1]]


async def test_a_long_line_is_cut_and_marked_and_streams_are_told_apart(
    provider: LocalProvider, namespace: str, local_marker: str
) -> None:
    script = (
        "head -c 20480 /dev/zero | tr '\\0' x; echo; echo after; echo oops >&2; "
        "printf 'half-'; sleep 0.3; echo whole; exec sleep 300"
    )
    await provider.start(command_spec("long", namespace, local_marker, ("sh", "-c", script)))
    entries = await wait_for_logs(
        provider, "long", namespace, lambda found: any(e.text == "half-whole" for e in found)
    )
    by_text = {entry.text[:5]: entry for entry in entries}
    cut = by_text["xxxxx"]
    assert cut.truncated and len(cut.text) == MAX_LOG_LINE_BYTES == 16 * 1024
    assert set(cut.text) == {"x"}
    assert not by_text["after"].truncated, "the line after it is whole"
    assert by_text["after"].stream is LogStreamKind.STDOUT
    assert by_text["oops"].stream is LogStreamKind.STDERR
    assert [e.text for e in entries if e.stream is LogStreamKind.STDOUT] == [
        cut.text,
        "after",
        "half-whole",
    ], "a line written in two pieces is one line"
    times = [entry.time for entry in entries]
    assert times == sorted(times)
    (pid,) = pids(await provider.status("long", namespace=namespace))
    assert {entry.instance_id for entry in entries} == {f"long-0@{pid}"}


async def test_a_fast_writer_loses_nothing_and_a_slow_reader_keeps_memory_flat(
    tmp_path: Path, local_marker: str
) -> None:
    count, width = 60_000, 100  # about 8.5 MB of records on disk
    env = local_env(
        tmp_path / "state",
        ALPHASWARM_LOCAL_LOG_FILE_BYTES="4MiB",
        ALPHASWARM_LOCAL_LOG_ROTATED_FILES="5",  # 24 MiB kept: nothing is rotated away
    )
    provider = await opened(env)
    namespace = unique_name("ns")
    tracemalloc.start()
    try:
        await provider.start(command_spec("fast", namespace, local_marker, burst(count, width)))
        stream = await released(provider, "fast", namespace)
        tracemalloc.reset_peak()
        received = 0
        try:
            async with asyncio.timeout(TIMEOUT):
                async for entry in stream:
                    if entry.text == "done":
                        break
                    assert entry.text == f"{received:0{width}d}", "every line, once, in order"
                    received += 1
                    if received % 5_000 == 0:  # a slow reader: the writer is far ahead
                        await asyncio.sleep(0.1)
        finally:
            await stream.aclose()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await provider.close()
    assert received == count
    # At its peak the server held a third of what went through it at most (about a
    # tenth is expected): keeping the backlog, as bytes, let alone as entries, takes it all.
    assert peak < count * (width + 40) // 3, f"peak {peak} bytes"


async def test_rotation_while_following_loses_and_repeats_nothing(
    tmp_path: Path, local_marker: str
) -> None:
    count = 30_000  # about 1.3 MB of records: some twenty rotations of 64 KiB
    env = local_env(
        tmp_path / "state",
        ALPHASWARM_LOCAL_LOG_FILE_BYTES="64KiB",
        ALPHASWARM_LOCAL_LOG_ROTATED_FILES="20",
    )
    provider = await opened(env)
    namespace = unique_name("ns")
    try:
        await provider.start(command_spec("rolling", namespace, local_marker, burst(count)))
        stream = await released(provider, "rolling", namespace)
        texts: list[str] = []
        try:
            async with asyncio.timeout(TIMEOUT):
                async for entry in stream:
                    texts.append(entry.text)
                    if entry.text == "done":
                        break
        finally:
            await stream.aclose()
        assert numbers_then_done(texts) == list(range(count))
        logs = tmp_path / "state" / "local" / "logs" / namespace / "rolling"
        rotated = sorted(logs.glob("0.log.*"))
        assert len(rotated) >= 15, f"the files were rotated while followed: {rotated}"
        assert all(path.stat().st_size <= 64 * 1024 for path in rotated), "whole records fit"
        # Read back without following: the tail spans the rotated files, in order.
        last = await collect_logs(provider, "rolling", namespace, LogQuery(tail_lines=10_000))
        assert numbers_then_done([e.text for e in last]) == list(range(count - 9_999, count))
    finally:
        await provider.close()


async def test_a_follower_left_behind_by_rotation_gets_a_marker_and_goes_on(
    tmp_path: Path, local_marker: str
) -> None:
    count = 20_000  # about 860 KB: thirteen files of 64 KiB, only two kept
    env = local_env(
        tmp_path / "state",
        ALPHASWARM_LOCAL_LOG_FILE_BYTES="64KiB",
        ALPHASWARM_LOCAL_LOG_ROTATED_FILES="1",
    )
    provider = await opened(env)
    namespace = unique_name("ns")
    try:
        await provider.start(command_spec("behind", namespace, local_marker, burst(count)))
        stream = await released(provider, "behind", namespace)
        try:
            log = tmp_path / "state" / "local" / "logs" / namespace / "behind" / "0.log"
            await read_log_until(log, "done", within=TIMEOUT)  # not reading meanwhile
            entries: list[LogEntry] = []
            async with asyncio.timeout(TIMEOUT):
                async for entry in stream:
                    entries.append(entry)
                    if entry.text == "done":
                        break
        finally:
            await stream.aclose()
    finally:
        await provider.close()
    markers = [e for e in entries if e.stream is LogStreamKind.UNSPECIFIED]
    assert len(markers) == 1, [e.text for e in entries[:3]]
    assert "rotated away" in markers[0].text and markers[0].instance_id == "behind-0"
    numbers = numbers_then_done([e.text for e in entries if e.stream is LogStreamKind.STDOUT])
    assert numbers == sorted(set(numbers)), "in order, nothing twice"
    assert numbers[-1] == count - 1 and len(numbers) < count, "the skipped lines only"


async def test_lines_of_replaced_replicas_stay_readable_until_deleted(
    tmp_path: Path, local_marker: str
) -> None:
    env = local_env(tmp_path / "state")
    provider = await opened(env)
    namespace = unique_name("ns")
    talk = ("sh", "-c", 'echo "I am $$ v${VERSION:-0}"; exec sleep 300')
    try:
        await provider.start(command_spec("web", namespace, local_marker, talk, replicas=2))
        first = pid_of(await wait_for(provider, "web", namespace, ready(2)), "web-0")
        await provider.apply_config(ConfigMapPatch("web", namespace, set={"VERSION": "1"}))
        await wait_for(provider, "web", namespace, rollout_done(2))  # both replicas replaced
        second = pid_of(await wait_for(provider, "web", namespace, ready(2)), "web-0")
        assert second != first
        await provider.scale("web", 1, namespace=namespace)  # replica 1's slot is kept too
    finally:
        await provider.close()
    provider = await opened(env)  # and across a restart of the server
    try:
        await wait_for(provider, "web", namespace, ready(1))

        def five(found: list[LogEntry]) -> bool:
            return sum(e.text.startswith("I am") for e in found) >= 5  # 2, 2 rolled, 1 restart

        entries = await wait_for_logs(provider, "web", namespace, five)
        assert f"I am {first} v0" in {e.text for e in entries if e.instance_id == f"web-0@{first}"}
        assert {e.instance_id.split("@")[0] for e in entries} == {"web-0", "web-1"}
        slot = await collect_logs(provider, "web", namespace, LogQuery(instance_id="web-0"))
        assert len({e.instance_id for e in slot}) == 3, "every process of slot 0"
        one = await collect_logs(
            provider, "web", namespace, LogQuery(instance_id=f"web-0@{second}")
        )
        assert [e.text for e in one] == [f"I am {second} v1"]
        assert await provider.delete("web", namespace=namespace)
        with pytest.raises(DeploymentNotFoundError):
            await collect_logs(provider, "web", namespace, LogQuery())
        assert not (tmp_path / "state" / "local" / "logs" / namespace).exists()
    finally:
        await provider.close()


async def test_one_namespace_never_reads_another_namespaces_lines(
    provider: LocalProvider, local_marker: str
) -> None:
    ours, theirs = unique_name("ns"), unique_name("ns")
    for namespace in (ours, theirs):
        say = ("sh", "-c", f"echo secret-of-{namespace}; exec sleep 300")
        await provider.start(command_spec("web", namespace, local_marker, say))
    (their_pid,) = pids(await wait_for(provider, "web", theirs, ready(1)))
    for namespace in (ours, theirs):
        entries = await wait_for_logs(provider, "web", namespace, bool)
        assert {e.text for e in entries} == {f"secret-of-{namespace}"}
    # Their replica named through our service, the slot alone, a service we do not have.
    for instance in (f"web-0@{their_pid}", "other-0", "web-0@1", "web-"):
        found = await collect_logs(provider, "web", ours, LogQuery(instance_id=instance))
        assert not [e for e in found if e.text == f"secret-of-{theirs}"], instance
    with pytest.raises(DeploymentNotFoundError):
        await collect_logs(provider, "web", unique_name("ns"), LogQuery())


async def test_a_follower_ends_when_the_service_is_deleted(
    provider: LocalProvider, namespace: str, local_marker: str
) -> None:
    talk = ("sh", "-c", "while :; do echo tick; sleep 0.2; done")
    await provider.start(command_spec("ticker", namespace, local_marker, talk))
    stream = provider.stream_logs("ticker", LogQuery(follow=True), namespace=namespace)
    try:
        async with asyncio.timeout(TIMEOUT):
            assert (await anext(stream)).text == "tick"
            await provider.delete("ticker", namespace=namespace)
            async for entry in stream:  # what was written before (sh may say "Terminated")
                assert entry.text == "tick" or entry.stream is LogStreamKind.STDERR
    finally:
        with contextlib.suppress(RuntimeError):
            await stream.aclose()


@pytest.mark.skipif(os.geteuid() != 0, reason="one uid per namespace needs a root server")
async def test_a_replica_cannot_write_into_another_namespaces_output(
    provider: LocalProvider, local_marker: str
) -> None:
    """Through /proc/<pid>/fd/1 a process may open another's pipe: not across uids."""
    victim_ns, evil_ns = unique_name("ns"), unique_name("ns")
    quiet = ("sh", "-c", "echo victim up; exec sleep 300")
    await provider.start(command_spec("victim", victim_ns, local_marker, quiet))
    (victim,) = pids(await wait_for(provider, "victim", victim_ns, ready(1)))
    attack = (
        f"for fd in 1 2; do echo forged-line >/proc/{victim}/fd/$fd "
        f'&& echo "wrote $fd" || echo "denied $fd"; done; echo attack-done; exec sleep 300'
    )
    await provider.start(command_spec("mallory", evil_ns, local_marker, ("sh", "-c", attack)))

    def finished(found: list[LogEntry]) -> bool:
        return any(e.text == "attack-done" for e in found)

    attempts = await wait_for_logs(provider, "mallory", evil_ns, finished)
    said = [e.text for e in attempts if e.stream is LogStreamKind.STDOUT]
    assert said == ["denied 1", "denied 2", "attack-done"], attempts
    lines = await collect_logs(provider, "victim", victim_ns, LogQuery())
    assert [e.text for e in lines] == ["victim up"]
