"""Plumbing shared by the GCP gRPC emulators: call log, fault injection, handlers, LROs.

Every emulated method is served through ``grpc.method_handlers_generic_handler``
with the message types the Google client packages ship (proto-plus types or the
raw ``*_pb2`` ones), so the real async clients talk to it over a plain channel.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import proto  # type: ignore[import-untyped]
from google.longrunning import operations_pb2  # type: ignore[import-untyped]
from google.protobuf import any_pb2, empty_pb2, message
from google.rpc import status_pb2


class EmulatorError(Exception):
    """Raised by an emulated method; becomes the gRPC status the real API would return."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Fault:
    code: grpc.StatusCode
    message: str
    times: int


@dataclass
class CallLog:
    """Which methods were called, and faults to return from the next calls of a method."""

    calls: list[str] = field(default_factory=list)
    faults: dict[str, Fault] = field(default_factory=dict)

    def inject(
        self, method: str, code: grpc.StatusCode, message: str = "injected fault", times: int = 1
    ) -> None:
        self.faults[method] = Fault(code, message, times)

    def take(self, method: str) -> Fault | None:
        fault = self.faults.get(method)
        if fault is None:
            return None
        fault.times -= 1
        if fault.times <= 0:
            del self.faults[method]
        return fault

    def count(self, method: str) -> int:
        return self.calls.count(method)


Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def _serialize(msg: Any) -> bytes:
    if isinstance(msg, proto.Message):
        return bytes(type(msg).serialize(msg))
    assert isinstance(msg, message.Message)
    return msg.SerializeToString()


def generic_handler(
    service: str,
    log: CallLog,
    methods: dict[str, tuple[Handler, Callable[[bytes], Any]]],
) -> grpc.GenericRpcHandler[Any, Any]:
    """A generic handler for ``service``: method -> (coroutine, request deserializer)."""

    def wrap(name: str, fn: Handler) -> Handler:
        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            log.calls.append(name)
            fault = log.take(name)
            if fault is not None:
                await context.abort(fault.code, fault.message)
            try:
                return await fn(request, context)
            except EmulatorError as exc:
                await context.abort(exc.code, exc.message)

        return handle

    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            wrap(name, fn), request_deserializer=deserialize, response_serializer=_serialize
        )
        for name, (fn, deserialize) in methods.items()
    }
    return grpc.method_handlers_generic_handler(service, handlers)


def pack(msg: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(type(msg).pb(msg) if isinstance(msg, proto.Message) else msg)
    return packed


@dataclass
class PendingOperation:
    operation: operations_pb2.Operation
    polls_left: int
    complete: Callable[[], tuple[Any, status_pb2.Status | None]]
    """Finishes the work; returns (response, error or None)."""


class Operations:
    """``google.longrunning.Operations``: operations finish after ``polls`` GetOperation calls."""

    def __init__(self, log: CallLog, polls: int = 1) -> None:
        self.log = log
        self.polls = polls
        self.pending: dict[str, PendingOperation] = {}

    def start(
        self,
        parent: str,
        metadata: Any,
        complete: Callable[[], tuple[Any, status_pb2.Status | None]],
    ) -> operations_pb2.Operation:
        name = f"{parent}/operations/{uuid.uuid4()}"
        op = operations_pb2.Operation(name=name, done=False, metadata=pack(metadata))
        self.pending[name] = PendingOperation(op, self.polls, complete)
        if self.polls <= 0:
            self._finish(self.pending[name])
        return _copy(op)

    def _finish(self, pending: PendingOperation) -> None:
        response, error = pending.complete()
        pending.operation.done = True
        if error is not None:
            pending.operation.error.CopyFrom(error)
        else:
            pending.operation.response.CopyFrom(pack(response))

    async def get_operation(
        self, request: operations_pb2.GetOperationRequest, context: object
    ) -> operations_pb2.Operation:
        pending = self.pending.get(request.name)
        if pending is None:
            raise EmulatorError(grpc.StatusCode.NOT_FOUND, f"operation {request.name} not found")
        if not pending.operation.done:
            pending.polls_left -= 1
            if pending.polls_left <= 0:
                self._finish(pending)
        return _copy(pending.operation)

    async def delete_operation(
        self, request: operations_pb2.DeleteOperationRequest, context: object
    ) -> empty_pb2.Empty:
        self.pending.pop(request.name, None)
        return empty_pb2.Empty()

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        return generic_handler(
            "google.longrunning.Operations",
            self.log,
            {
                "GetOperation": (
                    self.get_operation,
                    operations_pb2.GetOperationRequest.FromString,
                ),
                "DeleteOperation": (
                    self.delete_operation,
                    operations_pb2.DeleteOperationRequest.FromString,
                ),
            },
        )


def _copy(op: operations_pb2.Operation) -> operations_pb2.Operation:
    clone = operations_pb2.Operation()
    clone.CopyFrom(op)
    return clone
