"""Read google.rpc rich details back out of an aio RpcError (what any client sees)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"


@dataclass
class Details:
    code: grpc.StatusCode
    message: str
    error_info: error_details_pb2.ErrorInfo | None = None
    bad_request: error_details_pb2.BadRequest | None = None
    retry_info: error_details_pb2.RetryInfo | None = None
    resource_info: error_details_pb2.ResourceInfo | None = None
    other: list[str] = field(default_factory=list)

    @property
    def fields(self) -> list[str]:
        return [v.field for v in self.bad_request.field_violations] if self.bad_request else []


def details(error: grpc.aio.AioRpcError) -> Details:
    found = Details(error.code(), error.details() or "")
    trailers: Any = error.trailing_metadata() or ()
    raw = next((value for key, value in trailers if key == DETAILS_KEY), None)
    assert raw is not None, f"no rich status on {error.code()}: {error.details()}"
    status = status_pb2.Status.FromString(raw)
    assert status.code == error.code().value[0]
    for packed in status.details:
        for name, cls in (
            ("error_info", error_details_pb2.ErrorInfo),
            ("bad_request", error_details_pb2.BadRequest),
            ("retry_info", error_details_pb2.RetryInfo),
            ("resource_info", error_details_pb2.ResourceInfo),
        ):
            if packed.Is(cls.DESCRIPTOR):
                message = cls()
                packed.Unpack(message)
                setattr(found, name, message)
                break
        else:
            found.other.append(packed.type_url)
    return found
