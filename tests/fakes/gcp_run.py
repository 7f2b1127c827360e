"""Cloud Run Admin API v2 ``Services`` emulator (google.cloud.run.v2.Services over gRPC).

Behaves as the API does where the provider depends on it: create/update/delete
are long-running operations whose service shows ``reconciling`` until the
operation completes; a new revision is created only when the template changes;
``scaling.manual_instance_count`` instances of the latest ready revision serve
once reconciled (the real API reports no per-instance list, neither does this);
list is paged with page tokens. ``fail_next_operation`` makes the next
operation end in an error, leaving the service in a failed state as Cloud Run
does.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from google.cloud import run_v2
from google.longrunning import operations_pb2  # type: ignore[import-untyped]
from google.protobuf import timestamp_pb2
from google.rpc import status_pb2

from .gcp_common import CallLog, EmulatorError, Handler, Operations, generic_handler

_PARENT = re.compile(r"^projects/([^/]+)/locations/([^/]+)$")
_SERVICE_ID = re.compile(r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$")
_COND = run_v2.Condition.State


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _template_key(template: run_v2.RevisionTemplate) -> bytes:
    copy = run_v2.RevisionTemplate(template)
    copy.revision = ""
    return bytes(run_v2.RevisionTemplate.pb(copy).SerializeToString(deterministic=True))


class CloudRunEmulator:
    def __init__(self, log: CallLog, operations: Operations, *, max_page_size: int = 100) -> None:
        self.log = log
        self.operations = operations
        self.max_page_size = max_page_size
        self.services: dict[str, run_v2.Service] = {}
        self.revisions: dict[str, list[str]] = {}
        self._fail_next: tuple[int, str] | None = None

    def fail_next_operation(self, code: grpc.StatusCode, message: str) -> None:
        self._fail_next = (code.value[0], message)

    # -- helpers ---------------------------------------------------------------------------

    def _get(self, name: str) -> run_v2.Service:
        service = self.services.get(name)
        if service is None:
            raise EmulatorError(grpc.StatusCode.NOT_FOUND, f"Resource '{name}' does not exist.")
        return service

    def _validate(self, service: run_v2.Service) -> None:
        containers = service.template.containers
        if not containers:
            raise EmulatorError(
                grpc.StatusCode.INVALID_ARGUMENT, "spec.template.containers: required"
            )
        for container in containers:
            if not container.image:
                raise EmulatorError(
                    grpc.StatusCode.INVALID_ARGUMENT, "spec.template.containers.image: required"
                )
        if sum(len(c.ports) for c in containers) > 1:
            raise EmulatorError(
                grpc.StatusCode.INVALID_ARGUMENT, "only one container port may be specified"
            )

    def _new_revision(self, service: run_v2.Service) -> None:
        short = service.name.rsplit("/", 1)[1]
        history = self.revisions.setdefault(service.name, [])
        revision = f"{short}-{len(history) + 1:05d}-{secrets.token_hex(2)[:3]}"
        history.append(revision)
        service.latest_created_revision = (
            f"{service.name.rsplit('/services/', 1)[0]}/revisions/{revision}"
        )

    def _reconciling(self, service: run_v2.Service) -> None:
        service.reconciling = True
        service.generation += 1
        service.etag = f'"{uuid.uuid4().hex}"'
        service.update_time = _now()
        service.terminal_condition = run_v2.Condition(
            type_="Ready", state=_COND.CONDITION_RECONCILING, last_transition_time=_now()
        )

    def _operation(self, service: run_v2.Service) -> operations_pb2.Operation:
        failure, self._fail_next = self._fail_next, None
        name = service.name

        def complete() -> tuple[run_v2.Service, status_pb2.Status | None]:
            current = self.services.get(name)
            if current is None:
                return service, None
            current.reconciling = False
            current.observed_generation = current.generation
            if failure is not None:
                code, message = failure
                current.terminal_condition = run_v2.Condition(
                    type_="Ready",
                    state=_COND.CONDITION_FAILED,
                    message=message,
                    last_transition_time=_now(),
                )
                return current, status_pb2.Status(code=code, message=message)
            current.latest_ready_revision = current.latest_created_revision
            current.terminal_condition = run_v2.Condition(
                type_="Ready", state=_COND.CONDITION_SUCCEEDED, last_transition_time=_now()
            )
            current.traffic_statuses = [
                run_v2.TrafficTargetStatus(
                    type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST,
                    revision=current.latest_ready_revision.rsplit("/", 1)[1],
                    percent=100,
                )
            ]
            return run_v2.Service(current), None

        parent = name.rsplit("/services/", 1)[0]
        return self.operations.start(parent, run_v2.Service(service), complete)

    # -- methods ---------------------------------------------------------------------------

    async def create_service(
        self, request: run_v2.CreateServiceRequest, context: object
    ) -> operations_pb2.Operation:
        if not _PARENT.match(request.parent):
            raise EmulatorError(grpc.StatusCode.INVALID_ARGUMENT, f"bad parent {request.parent}")
        if not _SERVICE_ID.match(request.service_id):
            raise EmulatorError(
                grpc.StatusCode.INVALID_ARGUMENT, f"invalid service_id {request.service_id!r}"
            )
        name = f"{request.parent}/services/{request.service_id}"
        if name in self.services:
            raise EmulatorError(
                grpc.StatusCode.ALREADY_EXISTS, f"Resource '{name}' already exists."
            )
        service = run_v2.Service(request.service)
        service.name = name
        self._validate(service)
        service.uid = str(uuid.uuid4())
        service.create_time = _now()
        service.uri = f"https://{request.service_id}-emulated.a.run.app"
        self._reconciling(service)
        self._new_revision(service)
        self.services[name] = service
        return self._operation(service)

    async def get_service(
        self, request: run_v2.GetServiceRequest, context: object
    ) -> run_v2.Service:
        return run_v2.Service(self._get(request.name))

    async def list_services(
        self, request: run_v2.ListServicesRequest, context: object
    ) -> run_v2.ListServicesResponse:
        prefix = f"{request.parent}/services/"
        names = sorted(n for n in self.services if n.startswith(prefix))
        start = int(request.page_token or 0)
        size = min(request.page_size or self.max_page_size, self.max_page_size)
        page = names[start : start + size]
        token = str(start + size) if start + size < len(names) else ""
        return run_v2.ListServicesResponse(
            services=[run_v2.Service(self.services[n]) for n in page], next_page_token=token
        )

    async def update_service(
        self, request: run_v2.UpdateServiceRequest, context: object
    ) -> operations_pb2.Operation:
        incoming = request.service
        current = self._get(incoming.name)
        if incoming.etag and incoming.etag != current.etag:
            raise EmulatorError(grpc.StatusCode.ABORTED, "etag mismatch: the service changed")
        self._validate(incoming)
        template_changed = _template_key(incoming.template) != _template_key(current.template)
        current.labels = dict(incoming.labels)
        current.annotations = dict(incoming.annotations)
        current.scaling = incoming.scaling
        current.traffic = incoming.traffic
        current.template = incoming.template
        self._reconciling(current)
        if template_changed:
            self._new_revision(current)
        return self._operation(current)

    async def delete_service(
        self, request: run_v2.DeleteServiceRequest, context: object
    ) -> operations_pb2.Operation:
        service = self._get(request.name)
        del self.services[request.name]
        snapshot = run_v2.Service(service)
        parent = request.name.rsplit("/services/", 1)[0]
        return self.operations.start(parent, snapshot, lambda: (snapshot, None))

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        methods: dict[str, tuple[Handler, Callable[[bytes], Any]]] = {
            "CreateService": (self.create_service, run_v2.CreateServiceRequest.deserialize),
            "GetService": (self.get_service, run_v2.GetServiceRequest.deserialize),
            "ListServices": (self.list_services, run_v2.ListServicesRequest.deserialize),
            "UpdateService": (self.update_service, run_v2.UpdateServiceRequest.deserialize),
            "DeleteService": (self.delete_service, run_v2.DeleteServiceRequest.deserialize),
        }
        return generic_handler("google.cloud.run.v2.Services", self.log, methods)
