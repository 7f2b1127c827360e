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
* a revision fails when its image is one a test marked broken (``break_image`` with a
  ``RevisionFailure``: an image that is not found or may not be read, a container that
  does not start and listen on $PORT, a quota) or when it references a Secret Manager
  version that does not exist; the operation then ends in FAILED_PRECONDITION and the
  previous ready revision keeps serving, as Cloud Run does;
* every revision is a ``Revision`` resource (``google.cloud.run.v2.Revisions``:
  GetRevision, ListRevisions): "an immutable snapshot of code and configuration" made
  only "by updates to its parent Service" ([proto] Revision), named from the service
  (RevisionTemplate.revision: "If this field is omitted, it will be automatically
  generated based on the Service name"; gcloud shows ``<service>-<5 digits>-<suffix>``),
  carrying the template's labels and annotations, and its conditions (``Ready``,
  ``ContainerHealthy``, ``ResourcesAvailable``, [proto] condition.proto): RECONCILING
  while its operation runs, then SUCCEEDED (no reason: "Successful conditions cannot
  have a reason") or FAILED with the failure's reason and message;
* list is paged, newest first ("Results are sorted by creation time, descending"), for
  services and for revisions alike;
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
_COMMON = run_v2.Condition.CommonReason
_REVISION = run_v2.Condition.RevisionReason
_LATEST = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST
SecretCheck = Callable[[str, str], bool]
#: The conditions of a revision ([proto] Revision.conditions, as Cloud Run reports them).
REVISION_CONDITIONS = ("Ready", "ContainerHealthy", "ResourcesAvailable")


@dataclass(frozen=True)
class RevisionFailure:
    """Why a revision fails: the condition that fails, Cloud Run's reason and message."""

    condition: str
    message: str
    reason: int = 0
    """A ``Condition.CommonReason`` (0: none)."""
    revision_reason: int = 0
    """A ``Condition.RevisionReason`` (0: none)."""


def image_not_found(image: str) -> RevisionFailure:
    """[proto] CommonReason CONTAINER_MISSING, "The container image path is incorrect",
    on Ready; the message is of the kind Cloud Run writes (tests match on the reason)."""
    return RevisionFailure("Ready", f"Image '{image}' not found.", reason=_COMMON.CONTAINER_MISSING)


def image_denied(image: str) -> RevisionFailure:
    """[proto] CONTAINER_PERMISSION_DENIED, "Insufficient permissions on the container
    image" (the service agent may not read the repository)."""
    return RevisionFailure(
        "Ready",
        f"Google Cloud Run Service Agent must have permission to read the image, {image}.",
        reason=_COMMON.CONTAINER_PERMISSION_DENIED,
    )


def container_unhealthy(port: int = 8080) -> RevisionFailure:
    """[proto] RevisionReason HEALTH_CHECK_CONTAINER_ERROR, "There was a health check
    error", on ContainerHealthy (and Ready): the container exited or never listened on
    $PORT (https://cloud.google.com/run/docs/troubleshooting, "Container failed to start")."""
    return RevisionFailure(
        "ContainerHealthy",
        "The user-provided container failed to start and listen on the port defined "
        f"provided by the PORT={port} environment variable within the allocated timeout.",
        revision_reason=_REVISION.HEALTH_CHECK_CONTAINER_ERROR,
    )


def quota_exceeded() -> RevisionFailure:
    """ResourcesAvailable fails when the project's regional quota cannot hold the
    revision's instances (no specific reason enum exists for it)."""
    return RevisionFailure(
        "ResourcesAvailable", "Quota exceeded for total allowable CPU per project per region."
    )


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
        """Each service's revision names (short), oldest first."""
        self.revision_resources: dict[str, run_v2.Revision] = {}
        """Every revision by its full name."""
        self.broken_images: dict[str, RevisionFailure] = {}
        self.instances: list[Instance] = []
        """Every instance that ever ran (a stopped one keeps its logs)."""
        self.log_interval = log_interval
        self._created: dict[str, int] = {}
        self._order = 0

    def break_image(self, image: str, failure: RevisionFailure) -> None:
        """Revisions of ``image`` fail to become ready, as ``failure`` says."""
        self.broken_images[image] = failure

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
        full = f"{service.name}/revisions/{revision}"
        service.latest_created_revision = full
        template = service.template
        self._order += 1
        self._created[full] = self._order
        self.revision_resources[full] = run_v2.Revision(
            name=full,
            uid=str(uuid.uuid4()),
            generation=1,
            labels=dict(template.labels),
            annotations=dict(template.annotations),
            create_time=_now(),
            update_time=_now(),
            service=service.name,
            scaling=template.scaling,
            max_instance_request_concurrency=template.max_instance_request_concurrency,
            timeout=template.timeout,
            service_account=template.service_account,
            containers=list(template.containers),
            volumes=list(template.volumes),
            execution_environment=template.execution_environment,
            reconciling=True,
            conditions=[
                run_v2.Condition(
                    type_=kind, state=_COND.CONDITION_RECONCILING, last_transition_time=_now()
                )
                for kind in REVISION_CONDITIONS
            ],
            etag=f'"{uuid.uuid4().hex}"',
        )

    def _settle_revision(self, name: str, failure: RevisionFailure | None) -> None:
        """The revision's conditions once Cloud Run is done with it."""
        revision = self.revision_resources.get(name)
        if revision is None:
            return
        revision.reconciling = False
        revision.observed_generation = revision.generation
        conditions = []
        for kind in REVISION_CONDITIONS:
            if failure is None:
                conditions.append(
                    run_v2.Condition(
                        type_=kind, state=_COND.CONDITION_SUCCEEDED, last_transition_time=_now()
                    )
                )
            elif kind in ("Ready", failure.condition):  # Ready fails with the cause
                condition = run_v2.Condition(
                    type_=kind,
                    state=_COND.CONDITION_FAILED,
                    message=failure.message,
                    severity=run_v2.Condition.Severity.ERROR,
                    last_transition_time=_now(),
                )
                if failure.reason:
                    condition.reason = _COMMON(failure.reason)
                elif failure.revision_reason:
                    condition.revision_reason = _REVISION(failure.revision_reason)
                conditions.append(condition)
            else:  # not reached: what comes after the failure never ran
                conditions.append(
                    run_v2.Condition(
                        type_=kind, state=_COND.CONDITION_PENDING, last_transition_time=_now()
                    )
                )
        revision.conditions = conditions

    def _reconciling(self, service: run_v2.Service) -> None:
        service.reconciling = True
        service.generation += 1
        service.etag = f'"{uuid.uuid4().hex}"'
        service.update_time = _now()
        service.terminal_condition = run_v2.Condition(
            type_="Ready", state=_COND.CONDITION_RECONCILING, last_transition_time=_now()
        )

    def _revision_failure(self, service: run_v2.Service) -> RevisionFailure | None:
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
                    # [proto] CommonReason SECRETS_ACCESS_CHECK_FAILED: "At least one
                    # Access check on secrets failed."
                    return RevisionFailure(
                        "Ready",
                        f"Secret {secret}/versions/{ref.version} was not found.",
                        reason=_COMMON.SECRETS_ACCESS_CHECK_FAILED,
                    )
        return None

    def _operation(self, service: run_v2.Service) -> operations_pb2.Operation:
        name, generation = service.name, service.generation
        revision_changed = service.latest_created_revision != service.latest_ready_revision
        revision = service.latest_created_revision
        # What the revision meets is decided by its own template, superseded or not: a
        # revision is reconciled on its own ([proto] Revision.reconciling).
        own_failure = self._revision_failure(service) if revision_changed else None

        def complete() -> tuple[run_v2.Service, status_pb2.Status | None]:
            if revision_changed:
                self._settle_revision(revision, own_failure)
            current = self.services.get(name)
            if current is None:
                return service, None
            if current.generation != generation:
                return run_v2.Service(current), None  # superseded by a later update
            current.reconciling = False
            current.observed_generation = current.generation
            failure = own_failure
            if failure is not None:
                message = (
                    f"Revision '{current.latest_created_revision.rsplit('/', 1)[1]}' is not "
                    f"ready and cannot serve traffic. {failure.message}"
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
        rules.check_service(service, creating=True)
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
        start = rules.page_start(request.page_token)
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
        rules.check_service(incoming, creating=False)
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
            for revision in self.revisions.pop(name, []):
                self.revision_resources.pop(f"{name}/revisions/{revision}", None)
                self._created.pop(f"{name}/revisions/{revision}", None)
            self._stop_all(name)
            return snapshot, None

        return self.operations.start(name.rsplit("/services/", 1)[0], snapshot, complete)

    # -- google.cloud.run.v2.Revisions ------------------------------------------------------

    def get_revision(self, request: run_v2.GetRevisionRequest) -> run_v2.Revision:
        # [proto] GetRevisionRequest.name: "projects/{project}/locations/{location}/
        # services/{service}/revisions/{revision}".
        if not rules.REVISION_NAME.fullmatch(request.name):
            raise invalid(f"name {request.name!r} is not a revision name")
        revision = self.revision_resources.get(request.name)
        if revision is None:
            raise rules.not_found(request.name)
        return run_v2.Revision(revision)

    def list_revisions(self, request: run_v2.ListRevisionsRequest) -> run_v2.ListRevisionsResponse:
        # [proto] ListRevisionsRequest.parent: a service, or "-" for every service of the
        # location; "Results are sorted by creation time, descending"; paged.
        every = request.parent.endswith("/services/-")
        if not (rules.SERVICE_NAME.fullmatch(request.parent) or every):
            raise invalid(f"parent {request.parent!r} is not a service name")
        if not every:
            self._get(request.parent)
        if request.page_size < 0:
            raise invalid("page_size must not be negative")
        prefix = request.parent.removesuffix("-") if every else f"{request.parent}/"
        names = sorted(
            (n for n in self.revision_resources if n.startswith(prefix)),
            key=lambda n: -self._created[n],
        )
        start = rules.page_start(request.page_token)
        size = min(request.page_size or self.max_page_size, self.max_page_size)
        token = str(start + size) if start + size < len(names) else ""
        return run_v2.ListRevisionsResponse(
            revisions=[
                run_v2.Revision(self.revision_resources[n]) for n in names[start : start + size]
            ],
            next_page_token=token,
        )

    def revisions_handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        methods: dict[str, tuple[Method, Callable[[bytes], Any]]] = {
            "GetRevision": (self.get_revision, run_v2.GetRevisionRequest.deserialize),
            "ListRevisions": (self.list_revisions, run_v2.ListRevisionsRequest.deserialize),
        }
        return generic_handler("google.cloud.run.v2.Revisions", "run", self.plumbing, methods)

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        methods: dict[str, tuple[Method, Callable[[bytes], Any]]] = {
            "CreateService": (self.create_service, run_v2.CreateServiceRequest.deserialize),
            "GetService": (self.get_service, run_v2.GetServiceRequest.deserialize),
            "ListServices": (self.list_services, run_v2.ListServicesRequest.deserialize),
            "UpdateService": (self.update_service, run_v2.UpdateServiceRequest.deserialize),
            "DeleteService": (self.delete_service, run_v2.DeleteServiceRequest.deserialize),
        }
        return generic_handler("google.cloud.run.v2.Services", "run", self.plumbing, methods)
