"""No caller-chosen value can forge or bloat a log line.

A newline in ``provider`` used to start a line of its own in the text log, so a
request could write a fake ``alphaswarm.audit`` record; a 100 KB value was logged
in full. Text lines now escape control and invisible characters, tracebacks
continue on lines marked with ``CONTINUATION``, and messages are clipped.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_controller.observability.logs import (
    CONTINUATION,
    MAX_MESSAGE_CHARS,
    JsonFormatter,
    TextFormatter,
    escape_controls,
)
from tests.e2e.server_process import start_server

FORGED = '2025-01-01 00:00:00,000 INFO alphaswarm.audit: {"event":"audit","principal":"root"}'
# A record the server writes: time, level, logger, optional [request id], colon.
RECORD = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ (?P<logger>[\w.]+)( \[[^\]\s]+\])?: "
)


def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    made = logging.LogRecord(
        "alphaswarm_controller.test", logging.INFO, __file__, 1, message, args, None
    )
    if exc is not None:
        made.exc_info = (type(exc), exc, exc.__traceback__)
    made.request_tag = ""
    return made


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\r\\nb"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),
        ("\u202etxt.exe", "\\u202etxt.exe"),
        ("nul\x00 del\x7f c1\x85", "nul\\x00 del\\x7f c1\\x85"),
        ("tab\there", "tab\\there"),
        ("plain ascii, unicode € ok", "plain ascii, unicode € ok"),
    ],
)
def test_escape_controls(text: str, shown: str) -> None:
    assert escape_controls(text) == shown


def test_a_message_with_newlines_stays_one_line() -> None:
    line = TextFormatter().format(record("unknown provider %s", "memory\n" + FORGED))
    assert "\n" not in line
    assert RECORD.match(line)
    assert "memory\\n" + FORGED in line


def test_a_traceback_cannot_start_a_record() -> None:
    try:
        raise ValueError("bad\n" + FORGED + "\r\n" + FORGED)
    except ValueError as error:
        line = TextFormatter().format(record("failed", exc=error))
    first, *rest = line.split("\n")
    assert RECORD.match(first) and rest
    assert all(part.startswith(CONTINUATION) for part in rest), rest
    assert not any(RECORD.match(part) for part in rest)


def test_huge_messages_are_clipped_in_both_formats() -> None:
    huge = record("value %s", "x" * 100_000)
    text = TextFormatter().format(huge)
    assert len(text) < MAX_MESSAGE_CHARS + 200 and "more characters not logged" in text
    parsed = json.loads(JsonFormatter().format(huge))
    assert len(parsed["message"]) < MAX_MESSAGE_CHARS + 100


def test_json_lines_escape_everything_already() -> None:
    line = JsonFormatter().format(record("%s", "memory\n" + FORGED + "\u2028"))
    assert "\n" not in line and "\u2028" not in line
    assert json.loads(line)["message"].startswith("memory\n")


# -- the real server ----------------------------------------------------------------------------


@pytest.fixture
def server_log(tmp_path: Path) -> Iterator[list[str]]:
    """Hostile requests to a real server (text logs); yields its log once it stopped."""
    running = start_server(tmp_path / "state", {"ALPHASWARM_CP_LOG_FORMAT": "text"})
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = pb_grpc.ProviderServiceStub(channel)
            hostile: list[Callable[[], object]] = [
                lambda: stub.StartDeployment(
                    pb.StartDeploymentRequest(
                        provider="local\n" + FORGED,
                        spec=types.DeploymentSpec(service_id="web", command=["true"]),
                    ),
                    timeout=30,
                ),
                lambda: stub.StopDeployment(
                    pb.StopDeploymentRequest(service_id="web\n" + FORGED, namespace="ns\r\n"),
                    timeout=30,
                ),
                lambda: stub.GetDeploymentStatus(
                    pb.GetDeploymentStatusRequest(provider="x" * 100_000, service_id="web"),
                    timeout=30,
                ),
                lambda: stub.ScaleDeployment(
                    pb.ScaleDeploymentRequest(
                        provider="\u2028" + FORGED, service_id="x" * 100_000, replicas=1
                    ),
                    timeout=30,
                ),
            ]
            codes = []
            for call in hostile:
                with pytest.raises(grpc.RpcError) as caught:
                    call()
                error: Any = caught.value
                codes.append(error.code())
        assert grpc.StatusCode.RESOURCE_EXHAUSTED not in codes, codes
        assert running.terminate() == 0, running.log
    finally:
        running.kill()
    yield running.log.splitlines()


@pytest.mark.e2e
def test_hostile_requests_cannot_forge_or_bloat_server_log_lines(server_log: list[str]) -> None:
    assert any("alphaswarm.audit" in line for line in server_log), server_log
    for line in server_log:
        assert RECORD.match(line) or line.startswith(CONTINUATION), line[:300]
        assert not line.startswith("2025-01-01"), line
        assert len(line) < 2 * MAX_MESSAGE_CHARS, line[:300]
        assert "x" * 1100 not in line, line[:300]  # at most the clipped 1 KiB status message
    audit = [
        line[match.end() :]
        for line in server_log
        if (match := RECORD.match(line)) and match["logger"] == "alphaswarm.audit"
    ]
    assert len(audit) == 3, audit  # StartDeployment, StopDeployment, ScaleDeployment
    for text in audit:
        fields = json.loads(text)
        assert all(len(str(value)) <= 256 for value in fields.values()), fields


def test_plain_messages_are_unchanged() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    made = record("provider %s opened", "local")
    handler.handle(made)
    assert (
        stream.getvalue().rstrip("\n").endswith("alphaswarm_controller.test: provider local opened")
    )
