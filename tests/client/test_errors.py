"""Error translation from a gRPC status with google.rpc details, without a network."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

from alphaswarm_client import errors
from alphaswarm_client.errors import FieldViolation, ResourceInfo, from_rpc_error

DETAILS_KEY = "grpc-status-details-bin"


def _any(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def rpc_error(
    code: grpc.StatusCode,
    message: str,
    *details: Message,
    trailer_message: str | None = None,
) -> grpc.aio.AioRpcError:
    """An AioRpcError exactly as grpc.aio raises it, with a real serialized google.rpc.Status."""
    status = status_pb2.Status(
        code=code.value[0],
        message=message if trailer_message is None else trailer_message,
        details=[_any(d) for d in details],
    )
    trailing = grpc.aio.Metadata((DETAILS_KEY, status.SerializeToString()))
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, message, None)


def error_info(reason: str, **metadata: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain="alphaswarm.dev", metadata=metadata)


def test_bad_request_becomes_invalid_argument_with_field_violations() -> None:
    error = from_rpc_error(
        rpc_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid request: spec.service_id: must be a DNS-1123 label",
            error_info("INVALID_ARGUMENT", provider="local"),
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field="spec.service_id", description="must be a DNS-1123 label"
                    ),
                    error_details_pb2.BadRequest.FieldViolation(
                        field="spec.replicas", description="must be between 0 and 500"
                    ),
                ]
            ),
        )
    )
    assert type(error) is errors.InvalidArgument
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.code_name == "INVALID_ARGUMENT"
    assert error.reason == "INVALID_ARGUMENT"
    assert error.domain == "alphaswarm.dev"
    assert error.metadata == {"provider": "local"}
    assert error.field_violations == (
        FieldViolation("spec.service_id", "must be a DNS-1123 label"),
        FieldViolation("spec.replicas", "must be between 0 and 500"),
    )
    # The message names service_id already; only the violation it omits is appended.
    assert error.one_line() == (
        "INVALID_ARGUMENT: invalid request: spec.service_id: must be a DNS-1123 label "
        "(spec.replicas: must be between 0 and 500)"
    )


def test_provider_not_found_keeps_known_aliases() -> None:
    error = from_rpc_error(
        rpc_error(
            grpc.StatusCode.NOT_FOUND,
            "unknown provider 'nope'; known providers: local",
            error_info("PROVIDER_NOT_FOUND", alias="nope", known_aliases="docker_compose,local"),
        )
    )
    assert isinstance(error, errors.ProviderNotFound)
    assert isinstance(error, errors.NotFound)
    assert error.metadata["known_aliases"] == "docker_compose,local"
    assert error.one_line() == (
        "NOT_FOUND: unknown provider 'nope'; known providers: local (reason=PROVIDER_NOT_FOUND)"
    )


def test_deployment_not_found_carries_resource_info() -> None:
    error = from_rpc_error(
        rpc_error(
            grpc.StatusCode.NOT_FOUND,
            "deployment default/web not found",
            error_info("DEPLOYMENT_NOT_FOUND", service_id="web", namespace="default"),
            error_details_pb2.ResourceInfo(
                resource_type="alphaswarm.provider.v1.Deployment",
                resource_name="default/web",
                owner="local",
                description="deployment default/web not found",
            ),
        )
    )
    assert isinstance(error, errors.DeploymentNotFound)
    assert error.resource == ResourceInfo(
        "alphaswarm.provider.v1.Deployment",
        "default/web",
        "local",
        "deployment default/web not found",
    )


def test_config_conflict_is_an_aborted() -> None:
    error = from_rpc_error(
        rpc_error(
            grpc.StatusCode.ABORTED,
            "config of default/web is at version '3', not the expected '1'",
            error_info("CONFIG_VERSION_CONFLICT", expected_version="1", current_version="3"),
        )
    )
    assert isinstance(error, errors.ConfigVersionConflict)
    assert isinstance(error, errors.Aborted)
    assert error.metadata["current_version"] == "3"


def test_retry_info_becomes_seconds() -> None:
    retry = error_details_pb2.RetryInfo()
    retry.retry_delay.FromNanoseconds(1_500_000_000)
    error = from_rpc_error(
        rpc_error(
            grpc.StatusCode.UNAVAILABLE,
            "docker engine unreachable",
            error_info("BACKEND_UNAVAILABLE"),
            retry,
        )
    )
    assert isinstance(error, errors.Unavailable)
    assert error.retry_delay == 1.5
    assert error.one_line() == (
        "UNAVAILABLE: docker engine unreachable (reason=BACKEND_UNAVAILABLE; retry after 1.5s)"
    )


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, errors.NotFound),
        (grpc.StatusCode.ALREADY_EXISTS, errors.AlreadyExists),
        (grpc.StatusCode.ABORTED, errors.Aborted),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
        (grpc.StatusCode.UNIMPLEMENTED, errors.Unimplemented),
        (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
        (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied),
        (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
        (grpc.StatusCode.CANCELLED, errors.Cancelled),
        (grpc.StatusCode.INTERNAL, errors.Internal),
        (grpc.StatusCode.UNKNOWN, errors.AlphaswarmError),
    ],
)
def test_each_code_has_its_class(code: grpc.StatusCode, cls: type[errors.AlphaswarmError]) -> None:
    error = from_rpc_error(rpc_error(code, "boom", error_info("SOMETHING")))
    assert type(error) is cls
    assert error.code is code
    assert error.reason == "SOMETHING"


def test_a_reason_never_contradicts_the_code() -> None:
    # A reason that belongs to another code must not produce a class callers do not expect.
    error = from_rpc_error(
        rpc_error(grpc.StatusCode.INTERNAL, "odd", error_info("DEPLOYMENT_NOT_FOUND"))
    )
    assert type(error) is errors.Internal


def test_transport_error_without_details() -> None:
    plain = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        "failed to connect to all addresses;\nlast error: connection refused",
        None,
    )
    error = from_rpc_error(plain)
    assert type(error) is errors.Unavailable
    assert (error.reason, error.field_violations, error.retry_delay) == ("", (), None)
    assert error.one_line() == (
        "UNAVAILABLE: failed to connect to all addresses; last error: connection refused"
    )


def test_details_are_read_even_when_a_proxy_rewrote_the_message() -> None:
    # grpcio-status refuses a trailer whose message differs from the call's; the details
    # (ErrorInfo, BadRequest) are still the server's and still useful.
    error = from_rpc_error(
        rpc_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            "rewritten by a proxy",
            error_info("INVALID_ARGUMENT"),
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field="replicas", description="< 0")
                ]
            ),
            trailer_message="original message",
        )
    )
    assert error.message == "rewritten by a proxy"
    assert error.field_violations == (FieldViolation("replicas", "< 0"),)


def test_str_and_code_numbers_agree_with_google_rpc() -> None:
    error = from_rpc_error(rpc_error(grpc.StatusCode.NOT_FOUND, "gone"))
    assert str(error) == "NOT_FOUND: gone"
    assert error.code.value[0] == code_pb2.NOT_FOUND
