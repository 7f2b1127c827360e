"""StreamLogs against the real engine: streams marked, long lines cut, replicas that
appear later, backpressure, and nothing left running once a stream is closed."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

import docker
import pytest

from alphaswarm_controller.providers.docker_compose import DockerComposeProvider
from alphaswarm_controller.providers.docker_compose.logreaders import (
    BUFFER_LINES,
    ReaderLimitReached,
)
from alphaswarm_core.providers.models import MAX_LOG_LINE_BYTES
from alphaswarm_core.providers.protocol import (
    BackendRejectedError,
    ConfigMapPatch,
    LogEntry,
    LogQuery,
    LogStreamKind,
)
from alphaswarm_core.providers.reasons import ErrorReason
from alphaswarm_core.testing import (
    collect_logs,
    instance_ids,
    ready,
    unique_name,
    wait_for,
)
from alphaswarm_core.testing.contract import wait_for_logs
from tests.providers.docker_compose.support import (
    EngineProxy,
    engine_socket_path,
    log_spec_factory_for,
    remove_project,
    run_compose,
)
from tests.waiting import until

LINE = re.compile(r"line (\d+)")
SETTLE = 60.0


def _numbers(entries: list[LogEntry]) -> list[int]:
    return [int(m[1]) for e in entries if (m := LINE.fullmatch(e.text))]


def _reader_threads() -> list[str]:
    return [
        t.name
        for t in threading.enumerate()
        if t.name.startswith(("docker-logs-", "docker-events-"))
    ]


async def _read_until(
    stream: AsyncGenerator[LogEntry, None], done: Callable[[list[LogEntry]], bool]
) -> list[LogEntry]:
    seen: list[LogEntry] = []
    async with asyncio.timeout(SETTLE):
        async for entry in stream:
            seen.append(entry)
            if done(seen):
                return seen
    pytest.fail(f"the stream ended before the condition held: {seen[-5:]}")


async def test_stdout_and_stderr_are_marked_and_lines_come_in_order(
    provider: DockerComposeProvider, busybox_image: str, namespace: str
) -> None:
    await provider.start(log_spec_factory_for(busybox_image)("talk", namespace))
    entries = await wait_for_logs(
        provider, "talk", namespace, lambda seen: len(_numbers(seen)) >= 3
    )
    started = [e for e in entries if e.text.startswith("started ")]
    assert len(started) == 1 and started[0].stream is LogStreamKind.STDERR, entries
    counted = [e for e in entries if LINE.fullmatch(e.text)]
    assert {e.stream for e in counted} == {LogStreamKind.STDOUT}
    numbers = _numbers(entries)
    assert numbers == list(range(len(numbers))), "every line, once, in order"


async def test_long_lines_are_cut_at_the_limit_and_marked(
    provider: DockerComposeProvider, busybox_image: str, namespace: str
) -> None:
    # The engine stores a line longer than 16 KiB as pieces (partial messages); each
    # line here must come back as exactly one entry, whatever its number of pieces.
    def line_of(size: int, char: str) -> str:
        return f"head -c {size} /dev/zero | tr '\\0' {char}; echo; "

    script = (
        "trap 'exit 0' TERM INT; "
        + line_of(20 * 1024, "a")
        + line_of(MAX_LOG_LINE_BYTES, "b")
        + line_of(40 * 1024, "c")
        + "echo after; while :; do sleep 1 & wait $!; done"
    )
    await provider.start(log_spec_factory_for(busybox_image, script)("long", namespace))
    entries = await wait_for_logs(
        provider, "long", namespace, lambda seen: any(e.text == "after" for e in seen)
    )
    assert [("".join(sorted(set(e.text))), len(e.text), e.truncated) for e in entries] == [
        ("a", MAX_LOG_LINE_BYTES, True),
        ("b", MAX_LOG_LINE_BYTES, False),
        ("c", MAX_LOG_LINE_BYTES, True),
        ("aefrt", 5, False),
    ]


async def test_a_following_stream_sees_replicas_of_a_config_roll(
    provider: DockerComposeProvider, busybox_image: str, namespace: str
) -> None:
    await provider.start(log_spec_factory_for(busybox_image)("roll", namespace))
    before = instance_ids(await wait_for(provider, "roll", namespace, ready(1)))
    stream = provider.stream_logs("roll", LogQuery(follow=True, tail_lines=1), namespace=namespace)
    try:
        await _read_until(stream, lambda seen: len(seen) >= 2)
        await provider.apply_config(ConfigMapPatch("roll", namespace, set={"MODE": "b"}))
        after = instance_ids(await wait_for(provider, "roll", namespace, ready(1)))
        assert after != before, "a config change replaces the replica"
        (new,) = after
        seen = await _read_until(
            stream, lambda seen: len([e for e in seen if e.instance_id == new]) >= 3
        )
    finally:
        await stream.aclose()
    fresh = [e for e in seen if e.instance_id == new]
    # Its stderr line too (the engine copies stdout and stderr separately, so it may
    # come just before or after the first stdout line).
    assert any(e.text.startswith("started ") for e in fresh[:3] if e.stream is LogStreamKind.STDERR)
    assert _numbers(fresh) == list(range(len(_numbers(fresh)))), "from its first line on"


async def test_a_following_stream_of_a_stopped_service_sees_it_start(
    provider: DockerComposeProvider, busybox_image: str, namespace: str
) -> None:
    factory = log_spec_factory_for(busybox_image)
    await provider.start(factory("later", namespace, replicas=0))
    assert await collect_logs(provider, "later", namespace, LogQuery()) == []
    stream = provider.stream_logs("later", LogQuery(follow=True), namespace=namespace)
    try:
        first = asyncio.ensure_future(anext(stream))
        await provider.scale("later", 2, namespace=namespace)
        async with asyncio.timeout(SETTLE):
            seen = [await first]
        seen += await _read_until(
            stream, lambda more: len({e.instance_id for e in seen + more}) == 2
        )
    finally:
        await stream.aclose()
    assert {e.instance_id for e in seen} == instance_ids(
        await provider.status("later", namespace=namespace)
    )


async def test_a_slow_reader_holds_the_engine_back_and_loses_nothing(
    provider: DockerComposeProvider, busybox_image: str, namespace: str
) -> None:
    fast = (
        "trap 'exit 0' TERM INT; i=0; while :; do echo \"line $i\"; i=$((i+1)); usleep 2000; done"
    )
    await provider.start(log_spec_factory_for(busybox_image, fast)("fast", namespace))
    await wait_for(provider, "fast", namespace, ready(1))
    stream = provider.stream_logs("fast", LogQuery(follow=True), namespace=namespace)
    try:
        seen = await _read_until(stream, lambda seen: len(seen) >= 1)
        (session,) = provider.log_sessions

        def held() -> int:
            return sum(session.buffered().values())

        # The caller reads nothing now: the reader fills its buffer, then waits.
        await until(lambda: held() >= BUFFER_LINES, "the reader to fill its buffer", within=SETTLE)
        marks = []
        for _ in range(10):
            marks.append(held())
            await asyncio.sleep(0.1)
        assert max(marks) <= BUFFER_LINES, "the controller buffers no more than the bound"
        seen += await _read_until(stream, lambda more: len(more) >= 3 * BUFFER_LINES)
    finally:
        await stream.aclose()
    numbers = _numbers(seen)
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), "nothing dropped"


async def test_closing_a_following_stream_ends_its_threads_and_connections(
    busybox_image: str, namespace: str, engine_env: dict[str, str]
) -> None:
    proxy = EngineProxy(engine_socket_path())
    provider = DockerComposeProvider(env={**engine_env, "DOCKER_HOST": proxy.docker_host})
    try:
        await provider.open()
        await provider.start(log_spec_factory_for(busybox_image)("close", namespace, replicas=3))
        await wait_for(provider, "close", namespace, ready(3))
        await collect_logs(provider, "close", namespace, LogQuery(tail_lines=1))
        await until(
            lambda: not _reader_threads(), "the threads of a finished stream to end", within=SETTLE
        )
        idle = proxy.open_connections  # the request pool's idle connections
        mark = proxy.accepted
        stream = provider.stream_logs("close", LogQuery(follow=True), namespace=namespace)
        seen = await _read_until(stream, lambda seen: len({e.instance_id for e in seen}) == 3)
        assert len(_reader_threads()) == 4, "a reader per replica, and the event watcher"
        # Each thread opens its connection itself: the event watcher's may still be on the
        # way when every replica's first line has arrived (a loaded run saw 3 of 4).
        await until(
            lambda: proxy.open_since(mark) >= 4,
            "each reader to hold a connection of its own",
            within=SETTLE,
        )
        assert provider.log_slots.in_use == 4
        await stream.aclose()
        await until(
            lambda: not _reader_threads(), "the reader threads to end with the stream", within=10
        )
        await until(
            lambda: proxy.open_connections <= idle, "the streams' connections to close", within=10
        )
        assert provider.log_slots.in_use == 0
        assert seen
    finally:
        await provider.close()
        proxy.close()


async def test_the_reader_limit_is_enforced_and_given_back(
    busybox_image: str, namespace: str, engine_env: dict[str, str]
) -> None:
    provider = DockerComposeProvider(
        env={**engine_env, "ALPHASWARM_DOCKER_COMPOSE_LOG_READERS": "3"}
    )
    try:
        await provider.open()
        await provider.start(log_spec_factory_for(busybox_image)("cap", namespace, replicas=2))
        await wait_for(provider, "cap", namespace, ready(2))
        following = provider.stream_logs("cap", LogQuery(follow=True), namespace=namespace)
        await anext(following)  # two readers and the watcher: every slot taken
        refused = provider.stream_logs("cap", LogQuery(), namespace=namespace)
        with pytest.raises(ReaderLimitReached, match="already reads 3 log streams") as caught:
            await anext(refused)
        assert caught.value.reason is ErrorReason.STREAM_LIMIT
        await refused.aclose()
        await following.aclose()
        await until(lambda: provider.log_slots.in_use == 0, "the slots to be given back", within=10)
        assert await collect_logs(provider, "cap", namespace, LogQuery(tail_lines=1))
    finally:
        await provider.close()


async def test_logs_of_a_tty_container_started_by_compose(
    provider: DockerComposeProvider,
    namespace: str,
    busybox_image: str,
    compose_cli: list[str],
    tmp_path: Path,
) -> None:
    # A TTY merges stdout and stderr and the engine sends no frames: lines still come
    # whole, with the stream not known.
    (tmp_path / "compose.yaml").write_text(
        "services:\n  term:\n"
        f"    image: {busybox_image}\n"
        "    tty: true\n"
        "    command: ['/bin/sh', '-c', "
        "\"echo one; echo two >&2; head -c 20000 /dev/zero | tr '\\\\0' z; echo; "
        "trap 'exit 0' TERM; while :; do sleep 1 & wait $$!; done\"]\n"
    )
    run_compose(compose_cli, "-p", namespace, "up", "-d", cwd=tmp_path)
    entries = await wait_for_logs(provider, "term", namespace, lambda seen: len(seen) >= 3)
    assert [(e.text[:3], e.stream, e.truncated) for e in entries] == [
        ("one", LogStreamKind.UNSPECIFIED, False),
        ("two", LogStreamKind.UNSPECIFIED, False),
        ("zzz", LogStreamKind.UNSPECIFIED, True),
    ]
    assert len(entries[2].text) == MAX_LOG_LINE_BYTES


async def test_logs_never_mix_namespaces(
    provider: DockerComposeProvider,
    busybox_image: str,
    namespace: str,
    docker_api: docker.APIClient,
) -> None:
    other = unique_name("t")
    factory = log_spec_factory_for(busybox_image)
    try:
        await provider.start(factory("same", namespace))
        await provider.start(factory("same", other))
        mine = instance_ids(await wait_for(provider, "same", namespace, ready(1)))
        entries = await wait_for_logs(provider, "same", namespace, lambda seen: len(seen) >= 2)
        assert {e.instance_id for e in entries} == mine
    finally:
        remove_project(docker_api, other)


async def test_a_log_driver_that_cannot_be_read_is_a_clear_error(
    provider: DockerComposeProvider,
    namespace: str,
    busybox_image: str,
    compose_cli: list[str],
    tmp_path: Path,
) -> None:
    (tmp_path / "compose.yaml").write_text(
        f"services:\n  mute:\n    image: {busybox_image}\n    logging:\n      driver: none\n"
    )
    run_compose(compose_cli, "-p", namespace, "up", "-d", cwd=tmp_path)
    await wait_for(provider, "mute", namespace, ready(1))
    stream = provider.stream_logs("mute", LogQuery(), namespace=namespace)
    with pytest.raises(BackendRejectedError, match="'none' does not support reading") as caught:
        await anext(stream)
    await stream.aclose()
    assert caught.value.metadata["cause"] == "LOG_DRIVER_UNREADABLE"
    await until(
        lambda: provider.log_slots.in_use == 0,
        "the failed reader's slot to be given back",
        within=10,
    )
