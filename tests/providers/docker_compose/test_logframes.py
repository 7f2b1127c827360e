"""Decoding the engine's log stream, without an engine: frames, timestamps, pieces.

The byte layouts are the Engine API's (``GET /containers/{id}/logs``: an 8-byte header
per frame, stream 1 = stdout, 2 = stderr, big-endian length) and what moby's json-file
driver was seen to send (a line over 16 KiB as pieces with one timestamp, the last
line of a stopped container without a newline); test_logs.py checks them end to end.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

from alphaswarm_controller.providers.docker_compose.logframes import (
    LineAssembler,
    multiplexed_frames,
    nanoseconds,
    raw_messages,
    since_param,
    split_timestamp,
    to_datetime,
)
from alphaswarm_core.providers.models import MAX_LOG_LINE_BYTES, LogStreamKind

STAMP = b"2026-12-02T12:40:29.890212531Z "
STAMP_NS = 1_796_215_229_890_212_531


def _frame(kind: int, payload: bytes) -> bytes:
    return bytes([kind, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


def test_timestamps_keep_nanoseconds_and_honour_offsets() -> None:
    assert split_timestamp(STAMP + b"hello\n") == (STAMP_NS, b"hello\n")
    shifted = b"2026-12-02T14:40:29.890212531+02:00 x"
    assert split_timestamp(shifted) == (STAMP_NS, b"x")
    assert split_timestamp(b"2026-12-02T12:40:29Z y") == (STAMP_NS - 890_212_531, b"y")
    assert split_timestamp(b"no stamp here") == (None, b"no stamp here")
    assert to_datetime(STAMP_NS) == datetime(2026, 12, 2, 12, 40, 29, 890212, tzinfo=UTC)
    assert nanoseconds(to_datetime(STAMP_NS)) == STAMP_NS - 531
    assert since_param(STAMP_NS + 1) == "1796215229.890212532"


def test_frames_are_demultiplexed_and_an_oversized_one_is_kept_short() -> None:
    huge = STAMP + b"z" * 100_000 + b"\n"
    body = (
        _frame(1, STAMP + b"out\n")
        + _frame(2, STAMP + b"err\n")
        + _frame(1, huge)
        + _frame(1, STAMP + b"end\n")
    )
    frames = list(multiplexed_frames(io.BytesIO(body).read))
    assert [kind for kind, _ in frames] == [
        LogStreamKind.STDOUT,
        LogStreamKind.STDERR,
        LogStreamKind.STDOUT,
        LogStreamKind.STDOUT,
    ]
    assert frames[0][1] == STAMP + b"out\n" and frames[3][1] == STAMP + b"end\n"
    kept = frames[2][1]
    assert len(kept) < MAX_LOG_LINE_BYTES + 100 and kept.endswith(b"\n"), "newline kept"


def test_a_stream_cut_inside_a_frame_ends_without_a_partial_frame() -> None:
    body = _frame(1, STAMP + b"whole\n") + _frame(1, STAMP + b"cut off\n")[:-3]
    assert [m for _, m in multiplexed_frames(io.BytesIO(body).read)] == [STAMP + b"whole\n"]


def test_pieces_of_a_line_are_joined_and_cut_at_the_limit() -> None:
    lines = LineAssembler("abc")
    piece = b"p" * (16 * 1024)
    assert lines.message(LogStreamKind.STDOUT, 5, piece) is None
    # An stderr line between the pieces of a stdout line is its own line.
    err = lines.message(LogStreamKind.STDERR, 6, b"oops\n")
    assert err is not None and err[1].text == "oops" and err[1].stream is LogStreamKind.STDERR
    assert lines.message(LogStreamKind.STDOUT, 5, piece) is None
    done = lines.message(LogStreamKind.STDOUT, 5, b"tail\n")
    assert done is not None
    stamp, entry = done
    assert stamp == 5 and entry.truncated and entry.text == "p" * MAX_LOG_LINE_BYTES


def test_a_line_of_exactly_the_limit_is_not_truncated() -> None:
    lines = LineAssembler("abc")
    assert lines.message(LogStreamKind.STDOUT, 1, b"q" * MAX_LOG_LINE_BYTES) is None
    done = lines.message(LogStreamKind.STDOUT, 1, b"\n")
    assert done is not None and not done[1].truncated
    assert len(done[1].text) == MAX_LOG_LINE_BYTES


def test_a_last_line_without_newline_is_flushed_and_crlf_is_stripped() -> None:
    lines = LineAssembler("abc")
    crlf = lines.message(LogStreamKind.STDOUT, 1, b"dos\r\n")
    assert crlf is not None and crlf[1].text == "dos"
    assert lines.message(LogStreamKind.STDOUT, 2, b"no newline") is None
    flushed = lines.flush()
    assert [(s, e.text, e.truncated) for s, e in flushed] == [(2, "no newline", False)]
    assert lines.flush() == []


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    done = LineAssembler("abc").message(LogStreamKind.STDOUT, 1, b"\xff\xfe ok\n")
    assert done is not None and done[1].text.endswith(" ok")


def test_tty_output_is_split_at_newlines_across_chunks() -> None:
    chunks = [STAMP + b"one\r\n" + STAMP + b"t", b"wo\r\n", STAMP + b"x" * 40_000 + b"\r\n"]
    messages = list(raw_messages(iter(chunks)))
    assert [m[:40] for _, m in messages[:2]] == [STAMP + b"one\r\n", STAMP + b"two\r\n"]
    assert {kind for kind, _ in messages} == {LogStreamKind.UNSPECIFIED}
    stamp, text = split_timestamp(messages[2][1])
    done = LineAssembler("t").message(LogStreamKind.UNSPECIFIED, stamp or 0, text)
    assert done is not None and done[1].truncated and len(done[1].text) == MAX_LOG_LINE_BYTES
