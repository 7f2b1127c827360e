"""One catalogue of error reasons: the proto's ErrorReason, and everything built from it."""

from __future__ import annotations

import inspect

import grpc
from google.rpc import error_details_pb2

from alphaswarm.provider.v1 import error_reason_pb2
from alphaswarm_client.errors import REASONS, from_rpc_error
from alphaswarm_controller import errors as server_errors
from alphaswarm_controller.errors import to_status
from alphaswarm_controller.security import auth, limits
from alphaswarm_core.providers import errors as core_errors
from alphaswarm_core.providers.errors import (
    PROVIDER_REASON_KEY,
    BackendRejectedError,
    InfrastructureProviderError,
    SettingInvalid,
)
from alphaswarm_core.providers.reasons import STATUS_CODE, ErrorReason

PROTO_REASONS = {
    value.name: value.GetOptions().Extensions[error_reason_pb2.status_code]
    for value in error_reason_pb2.ErrorReason.DESCRIPTOR.values
    if value.number
}


def test_the_core_enum_is_the_proto_catalogue() -> None:
    assert {reason.value: code for reason, code in STATUS_CODE.items()} == PROTO_REASONS
    assert set(ErrorReason) == set(STATUS_CODE)
    assert all(code in grpc.StatusCode.__members__ for code in PROTO_REASONS.values())


def test_every_error_class_defaults_to_a_catalogue_reason() -> None:
    classes = [
        cls
        for module in (core_errors, server_errors, auth, limits)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, InfrastructureProviderError)
    ]
    assert len(classes) > 15
    for cls in classes:
        assert isinstance(cls.reason, ErrorReason), cls


def test_a_reason_outside_the_catalogue_is_kept_in_metadata_only() -> None:
    error = BackendRejectedError("the thing is off", reason="MY_OWN_WORD")
    code, status = to_status(error, provider="nomad")
    assert code is grpc.StatusCode.FAILED_PRECONDITION
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert info.reason == "BACKEND_REJECTED"
    assert info.metadata[PROVIDER_REASON_KEY] == "MY_OWN_WORD"
    assert info.metadata["provider"] == "nomad"


def test_the_code_follows_the_reason_not_the_class() -> None:
    # A reason always travels with its one code, whichever class carried it.
    error = BackendRejectedError("bad ARM credentials", reason=ErrorReason.CREDENTIALS_INVALID)
    assert error.code == "FAILED_PRECONDITION"
    assert to_status(error)[0] is grpc.StatusCode.FAILED_PRECONDITION
    setting = SettingInvalid("ALPHASWARM_AWS_MODE", "must be ecs or eks, not 'x'")
    assert (setting.reason, setting.code) == ("SETTING_INVALID", "FAILED_PRECONDITION")
    assert setting.metadata == {"setting": "ALPHASWARM_AWS_MODE"}


def test_the_client_table_covers_the_catalogue_with_the_right_codes() -> None:
    assert set(REASONS) == set(PROTO_REASONS)
    for name, code in PROTO_REASONS.items():
        error = from_rpc_error(
            grpc.aio.AioRpcError(
                grpc.StatusCode[code], grpc.aio.Metadata(), grpc.aio.Metadata(), "x", None
            )
        )
        # Without details the class follows the code; with the reason it may be narrower.
        assert issubclass(REASONS[name], type(error)), name
