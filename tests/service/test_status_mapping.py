"""errors.to_status and its clipping, exactly: what every error becomes on the wire.

test_error_table.py checks the codes through a running server; these pin the rest
of the google.rpc.Status (messages, ErrorInfo metadata, the detail that goes with
each error) and the byte budgets, boundary by boundary.
"""

from __future__ import annotations

import logging
import re

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from alphaswarm_controller.errors import (
    DOMAIN,
    MAX_DETAIL_BYTES,
    MAX_DETAILS_BYTES,
    MAX_KEY_BYTES,
    MAX_MESSAGE_WIRE_BYTES,
    MAX_VIOLATIONS,
    OMITTED_VIOLATIONS_KEY,
    ServerShuttingDown,
    as_provider_error,
    clip_for_wire,
    clip_utf8,
    to_status,
)
from alphaswarm_core.providers.errors import (
    BackendUnavailableError,
    DeploymentNotFoundError,
    FieldViolation,
    InfrastructureProviderError,
    InvalidSpecError,
)
from alphaswarm_core.providers.reasons import ErrorReason


def unpacked(status: status_pb2.Status) -> list[Message]:
    found: list[Message] = []
    for packed in status.details:
        for cls in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
            error_details_pb2.ResourceInfo,
        ):
            if packed.Is(cls.DESCRIPTOR):
                message = cls()
                packed.Unpack(message)
                found.append(message)
    assert len(found) == len(status.details)
    return found


@pytest.mark.parametrize(
    ("text", "limit", "clipped"),
    [
        ("abcde", 5, "abcde"),
        ("abcdef", 5, "ab..."),
        ("abcdef", 6, "abcdef"),
        ("éé", 4, "éé"),
        ("ééé", 5, "é..."),
        ("ééé", 6, "ééé"),
        ("a€b", 5, "a€b"),
        ("a€bc", 5, "a..."),
        ("", 0, ""),
    ],
)
def test_clip_utf8_keeps_the_longest_prefix_that_fits(text: str, limit: int, clipped: str) -> None:
    assert clip_utf8(text, limit) == clipped
    assert len(clipped.encode()) <= limit


@pytest.mark.parametrize(
    ("text", "limit", "clipped"),
    [
        ("a" * 10, 10, "a" * 10),
        ("a" * 11, 10, "a" * 7 + "..."),
        (" ~" * 5, 10, " ~" * 5),  # both ends of printable ASCII: one byte each
        ("%%%%", 10, "%%..."),  # '%' is escaped: three bytes
        ("%%%", 9, "%%%"),
        ("\x7f\x7f\x7f\x7f", 10, "\x7f\x7f..."),  # DEL and controls: %XX
        ("\x1f\x1f\x1f", 9, "\x1f\x1f\x1f"),
        ("éé", 12, "éé"),  # two UTF-8 bytes, each %XX
        ("ééé", 12, "é..."),
    ],
)
def test_clip_for_wire_counts_percent_encoded_bytes(text: str, limit: int, clipped: str) -> None:
    assert clip_for_wire(text, limit) == clipped


def test_a_provider_error_keeps_its_reason_metadata_and_provider() -> None:
    error = InfrastructureProviderError(
        "quota gone", reason=ErrorReason.BACKEND_QUOTA_EXCEEDED, metadata={"quota": "cpus"}
    )
    code, status = to_status(error, provider="memory")
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (status.code, status.message) == (code.value[0], "quota gone")
    (info,) = unpacked(status)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("BACKEND_QUOTA_EXCEEDED", DOMAIN)
    assert dict(info.metadata) == {"quota": "cpus", "provider": "memory"}
    (alone,) = unpacked(to_status(error)[1])
    assert isinstance(alone, error_details_pb2.ErrorInfo)
    assert dict(alone.metadata) == {"quota": "cpus"}  # no provider: none was named


def test_metadata_and_message_are_clipped_to_their_budgets() -> None:
    error = InfrastructureProviderError(
        "m" * 5000,
        reason=ErrorReason.BACKEND_REJECTED,
        metadata={"k" * 100: "v" * 1000, "small": "x"},
    )
    _, status = to_status(error, provider="p" * 100)
    assert status.message == "m" * (MAX_MESSAGE_WIRE_BYTES - 3) + "..."
    (info,) = unpacked(status)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert dict(info.metadata) == {
        "k" * (MAX_KEY_BYTES - 3) + "...": "v" * (MAX_DETAIL_BYTES - 3) + "...",
        "small": "x",
        "provider": "p" * (MAX_KEY_BYTES - 3) + "...",
    }


def test_a_missing_deployment_names_the_resource() -> None:
    code, status = to_status(DeploymentNotFoundError("web", "team-a"), provider="memory")
    assert code is grpc.StatusCode.NOT_FOUND
    info, resource = unpacked(status)
    assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "DEPLOYMENT_NOT_FOUND"
    assert resource == error_details_pb2.ResourceInfo(
        resource_type="alphaswarm.provider.v1.Deployment",
        resource_name="team-a/web",
        owner="memory",
        description=status.message,
    )


def test_an_unavailable_backend_says_when_to_retry() -> None:
    error = BackendUnavailableError("down", retry_after_seconds=2.5)
    code, status = to_status(error)
    assert code is grpc.StatusCode.UNAVAILABLE
    _, retry = unpacked(status)
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToNanoseconds() == 2_500_000_000
    shutting = to_status(ServerShuttingDown())[1]
    assert shutting.message == "server is shutting down; reconnect and retry"
    info, retry = unpacked(shutting)
    assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "SERVER_SHUTTING_DOWN"
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToNanoseconds() == 1_000_000_000


def test_a_timeout_is_the_backend_timeout() -> None:
    error = as_provider_error(TimeoutError())
    assert error.reason is ErrorReason.BACKEND_TIMEOUT
    assert error.message == "the backend did not answer within the call's deadline"
    assert to_status(TimeoutError())[0] is grpc.StatusCode.DEADLINE_EXCEEDED


def test_anything_else_is_internal_with_an_incident_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="alphaswarm_controller.errors"):
        code, status = to_status(KeyError("secret-ish detail"))
    assert code is grpc.StatusCode.INTERNAL
    (info,) = unpacked(status)
    assert isinstance(info, error_details_pb2.ErrorInfo) and info.reason == "INTERNAL"
    incident = info.metadata["incident"]
    assert re.fullmatch(r"[0-9a-f]{12}", incident)
    assert status.message == (
        f"internal error; the server log has details under incident {incident}"
    )
    assert "secret-ish" not in status.message
    (record,) = caplog.records
    assert record.getMessage() == f"unexpected error (incident {incident})"
    assert record.exc_info is not None and isinstance(record.exc_info[1], KeyError)
    same = InfrastructureProviderError("x", reason=ErrorReason.BACKEND_REJECTED)
    assert as_provider_error(same) is same


def test_violations_are_listed_in_order() -> None:
    violations = [FieldViolation(f"f{i}", f"bad {i}") for i in range(3)]
    _, status = to_status(InvalidSpecError(violations))
    info, bad = unpacked(status)
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("f0", "bad 0"),
        ("f1", "bad 1"),
        ("f2", "bad 2"),
    ]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert OMITTED_VIOLATIONS_KEY not in info.metadata


def test_more_violations_than_fit_are_counted() -> None:
    many = [FieldViolation(f"field{i}", "d") for i in range(MAX_VIOLATIONS + 5)]
    _, status = to_status(InvalidSpecError(many))
    info, bad = unpacked(status)
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert [v.field for v in bad.field_violations] == [f"field{i}" for i in range(MAX_VIOLATIONS)]
    assert info.metadata[OMITTED_VIOLATIONS_KEY] == "5"


def test_wide_violations_stop_at_the_details_budget() -> None:
    wide = [FieldViolation("f" * 1000 + str(i), "d" * 1000) for i in range(20)]
    _, status = to_status(InvalidSpecError(wide))
    info, bad = unpacked(status)
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert isinstance(info, error_details_pb2.ErrorInfo)
    kept = len(bad.field_violations)
    assert 0 < kept < 20
    assert info.metadata[OMITTED_VIOLATIONS_KEY] == str(20 - kept)
    assert status.ByteSize() <= MAX_DETAILS_BYTES + 64
    one = bad.field_violations[0]
    assert one.field == "f" * (MAX_DETAIL_BYTES - 3) + "..."
    assert one.description == "d" * (MAX_DETAIL_BYTES - 3) + "..."
    # One more would not have fitted.
    assert status.ByteSize() + one.ByteSize() + 4 > MAX_DETAILS_BYTES - 128


@pytest.mark.parametrize("width", [8, 40, 60, 80, 100, 120, 160, 250])
def test_the_details_stay_within_their_budget_whatever_the_violations_width(width: int) -> None:
    # 25 violations of ~2 x width bytes each: around 60 bytes they just fill the budget,
    # where a miscount of a few bytes per violation adds up past the margin.
    many = [FieldViolation(f"f{i:02d}" + "x" * width, "d" * width) for i in range(30)]
    _, status = to_status(InvalidSpecError(many))
    assert status.ByteSize() <= MAX_DETAILS_BYTES
