"""Plumbing shared by the GCP gRPC emulators: one lock, faults, handlers, long-running operations.

Every emulated method is served through ``grpc.method_handlers_generic_handler`` with the
message types the Google client packages ship (proto-plus types or the raw ``*_pb2``
ones), so the real async clients talk to it over a plain channel.

Each request is, in order: counted and checked against the shared ``Faults`` plan
(operation ``<api>:<Method>``, path = the request's resource name), answered with the
fault's documented wire form if one is due; then served under the emulator's one lock,
after every long-running operation whose time has come has completed. Operations take
time (``Operations.seconds``, non-zero by default) and complete whether or not anyone
polls them, as Cloud Run's reconciliation does; completion is evaluated lazily, at the
next request, so no timer thread is needed.

Fault wire forms (``fault_status``), per Google's API design guide
(https://cloud.google.com/apis/design/errors) and google/api/error_reason.proto:

* THROTTLED: RESOURCE_EXHAUSTED with ErrorInfo reason ``RATE_LIMIT_EXCEEDED`` (domain
  googleapis.com, the quota metric in its metadata) and a RetryInfo delay;
* UNAVAILABLE: UNAVAILABLE, "The service is currently unavailable." (AIP-194: retryable);
* CONFLICT: the service's own code for a concurrent modification: ABORTED for APIs that
  follow AIP-154 (Cloud Run v2), FAILED_PRECONDITION for Secret Manager
  (https://cloud.google.com/secret-manager/docs/etags);
* GONE: NOT_FOUND (gRPC has no 410; a vanished resource is NOT_FOUND in Google APIs);
* DENIED: PERMISSION_DENIED with ErrorInfo reason ``IAM_PERMISSION_DENIED``.

A fault's ``code`` (a gRPC status name such as ``"FAILED_PRECONDITION"``) overrides the code.
"""

from __future__ import annotations

import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
import proto  # type: ignore[import-untyped]
from google.longrunning import operations_pb2  # type: ignore[import-untyped]
from google.protobuf import any_pb2, duration_pb2, empty_pb2, message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from .faults import Fault, Faults, Kind


class EmulatorError(Exception):
    """Raised by an emulated method; becomes the gRPC status the real API would return."""

    def __init__(
        self, code: grpc.StatusCode, message: str, details: list[message.Message] | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or []
        """google.rpc error details (ErrorInfo, RetryInfo...) sent with the status."""

    def status(self) -> status_pb2.Status:
        return status_pb2.Status(
            code=self.code.value[0], message=self.message, details=[_pack(d) for d in self.details]
        )


def invalid(message: str) -> EmulatorError:
    return EmulatorError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _pack(detail: message.Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(detail)
    return packed


def fault_status(fault: Fault, *, service: str, conflict: grpc.StatusCode) -> status_pb2.Status:
    """The google.rpc.Status a Google API answers with for ``fault`` (see the module doc)."""
    details: list[message.Message] = []
    if fault.kind is Kind.THROTTLED:
        code = grpc.StatusCode.RESOURCE_EXHAUSTED
        text = (
            f"Quota exceeded for quota metric 'Requests' and limit 'Requests per minute' "
            f"of service '{service}'."
        )
        details.append(
            error_details_pb2.ErrorInfo(
                reason="RATE_LIMIT_EXCEEDED",
                domain="googleapis.com",
                metadata={"service": service, "quota_metric": f"{service}/requests"},
            )
        )
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int((fault.retry_after or 1.0) * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    elif fault.kind is Kind.UNAVAILABLE:
        code, text = grpc.StatusCode.UNAVAILABLE, "The service is currently unavailable."
    elif fault.kind is Kind.CONFLICT:
        code, text = conflict, "The resource was modified concurrently; read it and retry."
    elif fault.kind is Kind.GONE:
        code, text = grpc.StatusCode.NOT_FOUND, "Requested entity was not found."
    else:
        code, text = grpc.StatusCode.PERMISSION_DENIED, "Permission denied on the resource."
        details.append(error_details_pb2.ErrorInfo(reason="IAM_PERMISSION_DENIED", domain=service))
    if fault.code:
        code = grpc.StatusCode[fault.code]
    if fault.message != "injected fault":
        text = fault.message
    return status_pb2.Status(code=code.value[0], message=text, details=[_pack(d) for d in details])


def resource_of(request: Any) -> str:
    """The resource a request is about (its ``name``, ``parent`` or the named message's name)."""
    for attribute in ("name", "parent"):
        value = getattr(request, attribute, "")
        if isinstance(value, str) and value:
            return value
    for attribute in ("service", "secret"):
        inner = getattr(request, attribute, None)
        if inner is not None and isinstance(getattr(inner, "name", None), str):
            return str(inner.name)
    return ""


class Plumbing:
    """What every emulated API on one server shares: the fault plan, one lock, settling."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.lock = threading.RLock()
        self.settlers: list[Callable[[], None]] = []

    def settle(self) -> None:
        """Complete whatever is due (call with the lock held)."""
        for settle in self.settlers:
            settle()


Method = Callable[[Any], Any]


def serialize(msg: Any) -> bytes:
    if isinstance(msg, proto.Message):
        return bytes(type(msg).serialize(msg))
    assert isinstance(msg, message.Message)
    return msg.SerializeToString()


def generic_handler(
    service: str,
    api: str,
    plumbing: Plumbing,
    methods: dict[str, tuple[Method, Callable[[bytes], Any]]],
    *,
    conflict: grpc.StatusCode = grpc.StatusCode.ABORTED,
    streaming: dict[str, grpc.RpcMethodHandler[Any, Any]] | None = None,
) -> grpc.GenericRpcHandler[Any, Any]:
    """A generic handler for ``service``: method -> (function of the request, deserializer).

    ``api`` names the operations in the fault plan (``run:CreateService``) and, as
    ``<api>.googleapis.com``, the service in throttling errors; ``conflict`` is the code
    this API answers a concurrent modification with. ``streaming`` adds streaming methods,
    whose handlers consult the fault plan themselves."""

    def wrap(name: str, fn: Method) -> Callable[[Any, grpc.ServicerContext], Any]:
        operation = f"{api}:{name}"

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            fault = plumbing.faults.take(operation, resource_of(request))
            if fault is not None:
                context.abort_with_status(
                    rpc_status.to_status(
                        fault_status(fault, service=f"{api}.googleapis.com", conflict=conflict)
                    )
                )
            error: EmulatorError | None = None
            with plumbing.lock:
                plumbing.settle()
                try:
                    return fn(request)
                except EmulatorError as exc:
                    error = exc
            context.abort_with_status(rpc_status.to_status(error.status()))

        return handle

    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            wrap(name, fn), request_deserializer=deserialize, response_serializer=serialize
        )
        for name, (fn, deserialize) in methods.items()
    }
    handlers.update(streaming or {})
    return grpc.method_handlers_generic_handler(service, handlers)


def pack(msg: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(type(msg).pb(msg) if isinstance(msg, proto.Message) else msg)
    return packed


@dataclass
class PendingOperation:
    operation: operations_pb2.Operation
    done_at: float
    complete: Callable[[], tuple[Any, status_pb2.Status | None]]
    """Finishes the work; returns (response, error or None)."""


class Operations:
    """``google.longrunning.Operations``: an operation completes ``seconds`` after it starts.

    Provisioning takes time on the real services (a Cloud Run revision needs seconds
    to a minute), so the default is non-zero; tests that need it otherwise set it."""

    def __init__(self, plumbing: Plumbing, seconds: float = 0.25) -> None:
        self.plumbing = plumbing
        self.seconds = seconds
        self.pending: dict[str, PendingOperation] = {}
        plumbing.settlers.append(self.settle)

    def start(
        self,
        parent: str,
        metadata: Any,
        complete: Callable[[], tuple[Any, status_pb2.Status | None]],
    ) -> operations_pb2.Operation:
        name = f"{parent}/operations/{uuid.uuid4()}"
        op = operations_pb2.Operation(name=name, done=False, metadata=pack(metadata))
        pending = PendingOperation(op, time.monotonic() + self.seconds, complete)
        self.pending[name] = pending
        if self.seconds <= 0:
            self._finish(pending)
        return _copy(op)

    def release(self) -> None:
        """Every operation started so far completes at the next request. A test holds
        operations with a long ``seconds``, looks at the state meanwhile, then lets them
        finish: a short ``seconds`` instead would be outrun on a loaded machine."""
        with self.plumbing.lock:
            for pending in self.pending.values():
                pending.done_at = min(pending.done_at, time.monotonic())

    def settle(self) -> None:
        now = time.monotonic()
        for pending in sorted(self.pending.values(), key=lambda p: p.done_at):
            if not pending.operation.done and pending.done_at <= now:
                self._finish(pending)

    def _finish(self, pending: PendingOperation) -> None:
        response, error = pending.complete()
        pending.operation.done = True
        if error is not None:
            pending.operation.error.CopyFrom(error)
        else:
            pending.operation.response.CopyFrom(pack(response))

    def get_operation(
        self, request: operations_pb2.GetOperationRequest
    ) -> operations_pb2.Operation:
        pending = self.pending.get(request.name)
        if pending is None:
            raise EmulatorError(grpc.StatusCode.NOT_FOUND, f"Operation {request.name} not found.")
        return _copy(pending.operation)

    def delete_operation(self, request: operations_pb2.DeleteOperationRequest) -> empty_pb2.Empty:
        self.pending.pop(request.name, None)
        return empty_pb2.Empty()

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        return generic_handler(
            "google.longrunning.Operations",
            "longrunning",
            self.plumbing,
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


# -- Google Cloud labels ---------------------------------------------------------------------
# https://cloud.google.com/resource-manager/docs/labels-overview#requirements and the
# Secret.labels comment (google/cloud/secretmanager/v1/resources.proto): at most 64 labels;
# keys 1-63 characters, at most 128 bytes, `[\p{Ll}\p{Lo}][\p{Ll}\p{Lo}\p{N}_-]{0,62}`;
# values 0-63 characters, at most 128 bytes, `[\p{Ll}\p{Lo}\p{N}_-]{0,63}`.

MAX_LABELS = 64


def _label_chars_ok(text: str) -> bool:
    return all(
        unicodedata.category(c) in ("Ll", "Lo")
        or unicodedata.category(c).startswith("N")
        or c in "_-"
        for c in text
    )


def check_labels(labels: Iterable[tuple[str, str]], where: str) -> None:
    items = list(labels)
    if len(items) > MAX_LABELS:
        raise invalid(f"{where}: no more than {MAX_LABELS} labels can be assigned")
    for key, value in items:
        if not 1 <= len(key) <= 63 or len(key.encode()) > 128 or not _label_chars_ok(key):
            raise invalid(f"{where}: invalid label key {key[:70]!r}")
        if unicodedata.category(key[0]) not in ("Ll", "Lo"):
            raise invalid(f"{where}: label key {key!r} must start with a lowercase letter")
        if len(value) > 63 or len(value.encode()) > 128 or not _label_chars_ok(value):
            raise invalid(f"{where}: invalid value for label {key!r}")
