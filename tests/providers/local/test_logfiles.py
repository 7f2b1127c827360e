"""The pieces of the local provider's logs on their own: the capture of a real pipe, the
record format, reading a file backwards, rotation at record boundaries, the settings."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

from alphaswarm_controller.providers.local.logcapture import OutputCapture
from alphaswarm_controller.providers.local.logfiles import (
    STDERR,
    STDOUT,
    LogLimits,
    ReplicaLog,
    parse,
)
from alphaswarm_controller.providers.local.logstream import lines_backwards
from alphaswarm_controller.providers.local.settings import LocalSettings
from alphaswarm_core.providers.models import MAX_LOG_LINE_BYTES
from alphaswarm_core.providers.protocol import SettingInvalid

LIMITS = LogLimits(file_bytes=64 * 1024, rotated_files=3)


async def captured(tmp_path: Path, pieces: list[bytes], stream: bytes = STDOUT) -> ReplicaLog:
    """Write ``pieces`` one by one into a pipe read by a capture, then close the pipe."""
    replica_log = ReplicaLog(tmp_path / "logs", 0, LIMITS)
    read_end, write_end = os.pipe()
    capture = OutputCapture(read_end, replica_log, 4242, stream)
    try:
        for piece in pieces:
            seen = replica_log.seq
            os.write(write_end, piece)
            if b"\n" in piece:  # a whole line: wait until it is written
                async with asyncio.timeout(30):
                    while replica_log.seq == seen:
                        await replica_log.changed(seen, 1.0)
    finally:
        os.close(write_end)
    async with asyncio.timeout(30):
        await capture.done
    return replica_log


def records(path: Path) -> list[tuple[int, bytes, bool, bytes]]:
    parsed = [parse(line) for line in path.read_bytes().split(b"\n")[:-1]]
    assert all(record is not None for record in parsed)
    return [(r.pid, r.stream, r.truncated, r.text) for r in parsed if r is not None]


async def test_capture_cuts_long_lines_joins_pieces_and_keeps_a_last_unfinished_line(
    tmp_path: Path,
) -> None:
    long = b"y" * (40 * 1024)  # longer than one read of the pipe, too
    replica_log = await captured(
        tmp_path,
        [b"one\ntw", b"o\n", long[:20_000], long[20_000:] + b" tail\nafter\r\n", b"", b"last"],
        STDERR,
    )
    assert records(replica_log.path) == [
        (4242, STDERR, False, b"one"),
        (4242, STDERR, False, b"two"),
        (4242, STDERR, True, b"y" * MAX_LOG_LINE_BYTES),
        (4242, STDERR, False, b"after\r"),  # \r is dropped when read (LogEntry)
        (4242, STDERR, False, b"last"),
    ]


async def test_nothing_a_replica_prints_parses_as_another_record(tmp_path: Path) -> None:
    forged = b"2030-01-01T00:00:00.000000Z 1 e+ not mine\n"
    replica_log = await captured(tmp_path, [forged, b"\x00\xff binary\n"])
    assert records(replica_log.path) == [
        (4242, STDOUT, False, forged.rstrip(b"\n")),
        (4242, STDOUT, False, b"\x00\xff binary"),
    ]


async def test_files_rotate_at_record_boundaries_and_keep_only_the_newest(
    tmp_path: Path,
) -> None:
    lines = [b"%06d" % n for n in range(20_000)]  # about 900 KB of records
    pieces = [b"\n".join(lines[n : n + 500]) + b"\n" for n in range(0, len(lines), 500)]
    replica_log = await captured(tmp_path, pieces)
    kept = [replica_log.file(back) for back in range(LIMITS.rotated_files, -1, -1)]
    assert sorted(p.name for p in replica_log.path.parent.iterdir()) == sorted(
        p.name for p in kept
    ), "the oldest files were dropped"
    texts = [text for path in kept for _, _, _, text in records(path)]
    assert texts == lines[-len(texts) :], "whole records, in order, the newest kept"
    assert all(path.stat().st_size <= LIMITS.file_bytes for path in kept)
    assert replica_log.generation >= 10


def test_lines_backwards_matches_a_forward_split(tmp_path: Path) -> None:
    generator = random.Random(7)
    path = tmp_path / "file"
    for _ in range(200):
        lines = [
            bytes(generator.choice(b"ab \r\x00") for _ in range(generator.randint(0, 30)))
            for _ in range(generator.randint(0, 40))
        ]
        data = b"".join(line + b"\n" for line in lines)
        expected, offset = [], 0
        for line in lines:
            expected.append((offset, line))
            offset += len(line) + 1
        if generator.random() < 0.3:
            data += b"torn"
            expected.append((offset, b"torn"))
        path.write_bytes(data)
        fd = os.open(path, os.O_RDONLY)
        try:
            for block in (1, 5, 64, 65536):
                assert list(lines_backwards(fd, len(data), block)) == expected[::-1], block
        finally:
            os.close(fd)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("", 10 * 1024 * 1024), ("1048576", 1024 * 1024), ("64KiB", 65536), ("2 MiB", 2 << 20)],
)
def test_log_file_size_setting(raw: str, expected: int) -> None:
    env = {"ALPHASWARM_CP_STATE_DIR": "/x", "ALPHASWARM_LOCAL_LOG_FILE_BYTES": raw}
    assert LocalSettings.from_env(env).log_file_bytes == expected


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("ALPHASWARM_LOCAL_LOG_FILE_BYTES", "1KiB"),  # below 64 KiB
        ("ALPHASWARM_LOCAL_LOG_FILE_BYTES", "2GiB"),
        ("ALPHASWARM_LOCAL_LOG_FILE_BYTES", "ten"),
        ("ALPHASWARM_LOCAL_LOG_FILE_BYTES", "10MB"),
        ("ALPHASWARM_LOCAL_LOG_ROTATED_FILES", "21"),
        ("ALPHASWARM_LOCAL_LOG_ROTATED_FILES", "-1"),
        ("ALPHASWARM_LOCAL_LOG_ROTATED_FILES", "\u00b2"),
    ],
)
def test_bad_log_settings_are_refused_naming_the_variable(name: str, raw: str) -> None:
    with pytest.raises(SettingInvalid) as caught:
        LocalSettings.from_env({"ALPHASWARM_CP_STATE_DIR": "/x", name: raw})
    assert name in str(caught.value)


def test_the_rate_bound_lets_a_burst_through_then_asks_for_pauses(tmp_path: Path) -> None:
    replica_log = ReplicaLog(tmp_path, 0, LogLimits(1 << 20, 1, rate_bytes=1000))
    assert replica_log.throttle(600, now=100.0) == 0.0  # a second's worth at once
    assert replica_log.throttle(400, now=100.0) == 0.0
    assert replica_log.throttle(500, now=100.0) == pytest.approx(0.5)
    assert replica_log.throttle(0, now=100.5) == 0.0
    # Idle time does not pile up more than a second's worth.
    assert replica_log.throttle(1500, now=160.5) == pytest.approx(0.5)


async def test_a_slot_over_its_rate_stops_reading_and_its_pipe_fills_without_loss(
    tmp_path: Path,
) -> None:
    replica_log = ReplicaLog(tmp_path, 0, LogLimits(1 << 20, 1, rate_bytes=64 * 1024))
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    capture = OutputCapture(read_end, replica_log, 7, STDOUT)
    chunk = b"z" * 99 + b"\n"
    sent = 0
    try:
        for _ in range(10_000):  # the capture may read after every write: only a pause stops it
            try:
                sent += os.write(write_end, chunk * 100)
            except BlockingIOError:
                break
            await asyncio.sleep(0)
        else:
            pytest.fail(f"the pipe never filled: {sent} bytes read as fast as written")
    finally:
        os.close(write_end)
    async with asyncio.timeout(60):
        await capture.done
    texts = [text for _, _, _, text in records(replica_log.path)]
    expected = (chunk * (sent // len(chunk) + 1))[:sent]
    assert b"\n".join(texts) == expected.removesuffix(b"\n"), "every byte, in order"
