"""Cloud Run Admin API v2 ``Services`` emulator (google.cloud.run.v2.Services over gRPC).

Behaves as the API does where the provider depends on it (sources in ``gcp_run_rules``
and google/cloud/run/v2/service.proto):

* create/update/delete are long-running operations that take time; meanwhile the service
  shows ``reconciling``, and it settles when the operation completes, polled or not. An
  update that arrives while an earlier one is still reconciling supersedes it;
* a request Cloud Run would refuse is INVALID_ARGUMENT before anything changes
  (``gcp_run_rules.check_service``), and the fields Cloud Run fills in are filled in
  (concurrency, limits, timeout, traffic), so a client that compares what it sent with
  what it reads back sees what it would see on the real service;
* an update or delete carrying a stale ``etag`` is ABORTED (AIP-154, which v2 follows);
* a new revision is created only when the template changes; ``manual_instance_count``
  instances of the latest ready revision serve once reconciled (the real API reports no
  per-instance list, neither does this);
* a revision fails when its image is one a test marked broken (``break_image``: "not
  found", "did not listen on $PORT"...) or when it references a Secret Manager version
  that does not exist; the operation then ends in FAILED_PRECONDITION and the previous
  ready revision keeps serving, as Cloud Run does;
* list is paged, newest first ("Results are sorted by creation time, descending");
* delete is a long-running operation; when it completes the service and its revisions
  are gone ([proto] DeleteServiceRequest: "Deletes a Service. This will cause the Service
  to stop serving traffic and will delete all revisions"), and its instances stop.

Instances: the real API lists none, but they exist and write logs. Once an operation
completes, the latest ready revision runs ``manual_instance_count`` instances
(``Instance``, each with an ``instanceId`` like Cloud Run's: a long hex string, new for
every instance); scaling up starts new ones, scaling down stops the newest, a new ready
revision replaces them all. An instance runs no code: it behaves as a program that writes
one line every ``log_interval`` seconds while it runs (``Instance.line``), which the Cloud
Logging emulator serves as Cloud Run's stdout/stderr entries.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.cloud import run_v2
from google.longrunning import operations_pb2  # type: ignore[import-untyped]
from google.protobuf import timestamp_pb2
from google.rpc import status_pb2

from . import gcp_run_rules as rules
from .gcp_common import EmulatorError, Method, Operations, Plumbing, generic_handler, invalid

_COND = run_v2.Condition.State
_LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
SecretCheck = Callable[[str, str], bool]


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


@dataclass
class Instance:
    """One instance of a revision: when it ran, and what its container is."""

    instance_id: str
    service: str
    """The service's full name (projects/P/locations/L/services/S)."""
    revision: str
    """The short revision name."""
    argv: tuple[str, ...]
    started: float
    """Wall-clock seconds."""
    stopped: float | None = None

    @property
    def project(self) -> str:
        return self.service.split("/")[1]

    @property
    def location(self) -> str:
        return self.service.split("/")[3]

    @property
    def service_name(self) -> str:
        return self.service.rsplit("/", 1)[1]

    def line(self, number: int) -> tuple[str, str]:
        """(stream, text) of line ``number``: the program prints its command line and the
        line number, every fourth line to stderr (deterministic, so tests can expect it)."""
        stream = "stderr" if number % 4 == 3 else "stdout"
        return stream, f"{' '.join(self.argv)} line {number}"


def _template_key(template: run_v2.RevisionTemplate) -> bytes:
    copy = run_v2.RevisionTemplate(template)
    copy.revision = ""
    return bytes(run_v2.RevisionTemplate.pb(copy).SerializeToString(deterministic=True))


class CloudRunEmulator:
    def __init__(
        self,
        plumbing: Plumbing,
        operations: Operations,
        *,
        max_page_size: int = 100,
        secret_exists: SecretCheck | None = None,
        log_interval: float = 0.5,
    ) -> None:
        self.plumbing = plumbing
        self.operations = operations
        self.max_page_size = max_page_size
        self.secret_exists = secret_exists
        self.services: dict[str, run_v2.Service] = {}
        self.revisions: dict[str, list[str]] = {}
        self.broken_images: dict[str, str] = {}
        self.instances: list[Instance] = []
        """Every instance that ever ran (a stopped one keeps its logs)."""
        self.log_interval = log_interval
        self._created: dict[str, int] = {}
        self._order = 0

    def break_image(self, image: str, message: str) -> None:
        """Revisions of ``image`` fail to become ready, with ``message`` (e.g. not found)."""
        self.broken_images[image] = message

    # -- helpers ---------------------------------------------------------------------------

    def live_instances(self, service: str) -> list[Instance]:
        return [i for i in self.instances if i.service == service and i.stopped is None]

    def _serve(self, service: run_v2.Service) -> None:
        """Run ``manual_instance_count`` instances of the latest ready revision (lock held)."""
        now = time.time()
        ready = service.latest_ready_revision.rsplit("/", 1)[-1]
        wanted = service.scaling.manual_instance_count if ready else 0
        live = self.live_instances(service.name)
        for instance in live:
            if instance.revision != ready:
                instance.stopped = now
        current = [i for i in live if i.revision == ready]
        for instance in current[wanted:]:
            instance.stopped = now  # scale-down stops the newest (they come last)
        if len(current) < wanted and service.template.containers:
            container = service.template.containers[0]
            argv = tuple(container.command) + tuple(container.args) or (container.image,)
            for _ in range(wanted - len(current)):
                self.instances.append(
                    Instance(secrets.token_hex(48), service.name, ready, argv, now)
                )

    def _stop_all(self, service: str) -> None:
        now = time.time()
        for instance in self.live_instances(service):
            instance.stopped = now

    def _get(self, name: str) -> run_v2.Service:
        service = self.services.get(name)
        if service is None:
            raise rules.not_found(name)
        return service

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

    def _revision_failure(self, service: run_v2.Service) -> str | None:
        for container in service.template.containers:
            if container.image in self.broken_images:
                return self.broken_images[container.image]
            for var in container.env:
                ref = var.value_source.secret_key_ref
                if not ref.secret or self.secret_exists is None:
                    continue
                # [proto] SecretKeySelector.secret: "{secret_name} if the secret is in the
                # same project", else "projects/{project}/secrets/{secret_name}".
                secret = ref.secret
                if not secret.startswith("projects/"):
                    secret = f"{service.name.split('/locations/')[0]}/secrets/{secret}"
                if not self.secret_exists(secret, ref.version or "latest"):
                    return f"Secret {secret}/versions/{ref.version} was not found."
        return None

    def _operation(self, service: run_v2.Service) -> operations_pb2.Operation:
        name, generation = service.name, service.generation
        revision_changed = service.latest_created_revision != service.latest_ready_revision

        def complete() -> tuple[run_v2.Service, status_pb2.Status | None]:
            current = self.services.get(name)
            if current is None:
                return service, None
            if current.generation != generation:
                return run_v2.Service(current), None  # superseded by a later update
            current.reconciling = False
            current.observed_generation = current.generation
            failure = self._revision_failure(current) if revision_changed else None
            if failure is not None:
                message = (
                    f"Revision '{current.latest_created_revision.rsplit('/', 1)[1]}' is not "
                    f"ready and cannot serve traffic. {failure}"
                )
                current.terminal_condition = run_v2.Condition(
                    type_="Ready",
                    state=_COND.CONDITION_FAILED,
                    message=message,
                    last_transition_time=_now(),
                )
                code = grpc.StatusCode.FAILED_PRECONDITION.value[0]
                self._serve(current)  # the previous ready revision keeps serving
                return current, status_pb2.Status(code=code, message=message)
            current.latest_ready_revision = current.latest_created_revision
            current.terminal_condition = run_v2.Condition(
                type_="Ready", state=_COND.CONDITION_SUCCEEDED, last_transition_time=_now()
            )
            current.traffic_statuses = [
                run_v2.TrafficTargetStatus(
                    type_=_LATEST,
                    revision=current.latest_ready_revision.rsplit("/", 1)[1],
                    percent=100,
                )
            ]
            self._serve(current)
            return run_v2.Service(current), None

        parent = name.rsplit("/services/", 1)[0]
        return self.operations.start(parent, run_v2.Service(service), complete)

    # -- methods ---------------------------------------------------------------------------

    def create_service(self, request: run_v2.CreateServiceRequest) -> operations_pb2.Operation:
        if not rules.PARENT.fullmatch(request.parent):
            raise invalid(f"parent {request.parent!r}: projects/{{project}}/locations/{{region}}")
        rules.check_service_id(request.service_id)
        if "service" not in request:
            raise invalid("service: required")
        name = f"{request.parent}/services/{request.service_id}"
        service = run_v2.Service(request.service)
        rules.check_service(service)
        if name in self.services:
            raise EmulatorError(
                grpc.StatusCode.ALREADY_EXISTS, f"Resource '{name}' already exists."
            )
        rules.fill_defaults(service)
        service.name = name
        service.uid = str(uuid.uuid4())
        service.create_time = _now()
        service.uri = f"https://{request.service_id}-emulated.a.run.app"
        self._reconciling(service)
        self._new_revision(service)
        self.services[name] = service
        self._order += 1
        self._created[name] = self._order
        return self._operation(service)

    def get_service(self, request: run_v2.GetServiceRequest) -> run_v2.Service:
        return run_v2.Service(self._get(request.name))

    def list_services(self, request: run_v2.ListServicesRequest) -> run_v2.ListServicesResponse:
        if not rules.PARENT.fullmatch(request.parent):
            raise invalid(f"parent {request.parent!r}: projects/{{project}}/locations/{{region}}")
        if request.page_size < 0:
            raise invalid("page_size must not be negative")
        prefix = f"{request.parent}/services/"
        names = sorted(
            (n for n in self.services if n.startswith(prefix)), key=lambda n: -self._created[n]
        )
        try:
            start = int(request.page_token or 0)
        except ValueError:
            raise invalid(f"invalid page_token {request.page_token[:40]!r}") from None
        size = min(request.page_size or self.max_page_size, self.max_page_size)
        page = names[start : start + size]
        token = str(start + size) if start + size < len(names) else ""
        return run_v2.ListServicesResponse(
            services=[run_v2.Service(self.services[n]) for n in page], next_page_token=token
        )

    def update_service(self, request: run_v2.UpdateServiceRequest) -> operations_pb2.Operation:
        incoming = request.service
        if not rules.SERVICE_NAME.fullmatch(incoming.name):
            raise invalid(f"service.name {incoming.name!r} is not a service name")
        current = self._get(incoming.name)
        if "delete_time" in current:
            raise EmulatorError(
                grpc.StatusCode.FAILED_PRECONDITION, f"Resource '{incoming.name}' is being deleted."
            )
        if incoming.etag and incoming.etag != current.etag:
            raise EmulatorError(
                grpc.StatusCode.ABORTED,
                f"Resource '{incoming.name}' was modified concurrently (etag mismatch); "
                "read it again and retry.",
            )
        rules.check_service(incoming)
        rules.fill_defaults(incoming)
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

    def delete_service(self, request: run_v2.DeleteServiceRequest) -> operations_pb2.Operation:
        if not rules.SERVICE_NAME.fullmatch(request.name):
            raise invalid(f"name {request.name!r} is not a service name")
        service = self._get(request.name)
        # [proto] DeleteServiceRequest.etag: "A system-generated fingerprint for this
        # version of the resource. May be used to detect modification conflict during
        # updates" (AIP-154: a mismatch is ABORTED).
        if request.etag and request.etag != service.etag:
            raise EmulatorError(
                grpc.StatusCode.ABORTED,
                f"Resource '{request.name}' was modified concurrently (etag mismatch).",
            )
        if request.validate_only:
            raise invalid("validate_only is not evaluated by the emulator")
        service.delete_time = _now()
        service.reconciling = True
        service.etag = f'"{uuid.uuid4().hex}"'
        snapshot = run_v2.Service(service)
        name = request.name

        def complete() -> tuple[run_v2.Service, None]:
            self.services.pop(name, None)
            self._created.pop(name, None)
            self.revisions.pop(name, None)
            self._stop_all(name)
            return snapshot, None

        return self.operations.start(name.rsplit("/services/", 1)[0], snapshot, complete)

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        methods: dict[str, tuple[Method, Callable[[bytes], Any]]] = {
            "CreateService": (self.create_service, run_v2.CreateServiceRequest.deserialize),
            "GetService": (self.get_service, run_v2.GetServiceRequest.deserialize),
            "ListServices": (self.list_services, run_v2.ListServicesRequest.deserialize),
            "UpdateService": (self.update_service, run_v2.UpdateServiceRequest.deserialize),
            "DeleteService": (self.delete_service, run_v2.DeleteServiceRequest.deserialize),
        }
        return generic_handler("google.cloud.run.v2.Services", "run", self.plumbing, methods)
