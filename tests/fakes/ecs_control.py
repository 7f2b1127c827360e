"""The part of ECS moto leaves out: deployments, the service scheduler, the circuit breaker,
task start-up time, and the AWS/ECS metrics; plus the list paging moto ignores.

moto keeps ECS services as records: one deployment that never changes, tasks never
started for a service, no circuit breaker, ``deploymentConfiguration`` dropped on
CreateService, tasks without ``createdAt``/``cpu``/``memory``, and
ListServices/ListTasks/ListTaskDefinitions without paging or sort.
``EcsControlPlane`` plays those parts of ECS. The front (``aws_front``) hands it
every ECS request and moto's answer; it keeps the deployments and rewrites the
answers, and its scheduler thread runs tasks through moto's RunTask/StopTask
(straight to moto: ECS's own actions are not the caller's, so no fault hits them).

The rules it follows, each from the ECS API reference / developer guide:

* A new deployment starts only when UpdateService changes the task definition
  ("This parameter triggers a new service deployment", UpdateServiceRequest.taskDefinition),
  the network configuration or platform version, or sets forceNewDeployment ("start a
  new deployment with no service definition changes"); desiredCount alone changes the
  primary deployment's count.
* Tasks take time to start (PROVISIONING, PENDING, then RUNNING; ``start_seconds``,
  non-zero by default). A task whose image cannot be pulled stops with
  ``CannotPullContainerError`` and stop code ``TaskFailedToStart``; the deployment's
  ``failedTasks`` counts it: "A task is considered a failure if the service scheduler
  can't launch the task, the task doesn't transition to a RUNNING state, or if it fails
  any of its defined health checks and is stopped. Once a service deployment has one or
  more successfully running tasks, the failed task count resets to zero and stops being
  evaluated." (Deployment.failedTasks, botocore ecs model).
* A container whose command is a shell that exits (``sh -c 'exit 3'``) starts, so its
  task turns RUNNING, and exits ``crash_seconds`` later: the task stops with stop code
  ``EssentialContainerExited``, ``stoppedReason`` "Essential container in task
  exited" and the container's ``exitCode`` (TaskStopCode, "Stopped tasks error
  codes"). It reached RUNNING, so ``failedTasks`` does not count it and the circuit
  breaker never trips for it: the scheduler replaces it for ever
  (aws/containers-roadmap#1206; aws/copilot-cli#1879, ``CMD exit 1`` with failedTasks 0
  for an hour).
* A task the scheduler cannot place leaves a service event and counts as failed
  ("the service scheduler can't launch the task"): the EC2 launch type in a cluster
  without container instances ("(service NAME) was unable to place a task because no
  container instance met all of its requirements. Reason: No Container Instances were
  found in your cluster."), or Fargate tasks beyond the account's vCPU quota
  (``vcpu_quota``; "Fargate On-Demand vCPU resource count", Service Quotas: "(service
  NAME) was unable to place a task. Reason: You've reached the limit on the number of
  vCPUs you can run concurrently"; ECS developer guide, "Service event messages").
  The scheduler tries again every ``start_seconds``.
* Tasks the scheduler stops itself (replaced by a newer deployment, scaled in, the
  service deleted) stop with code ``ServiceSchedulerInitiated``; ``stoppedAt`` and
  ``startedAt`` are set as ECS sets them.
* Rolling update with minimumHealthyPercent 100: tasks of older deployments stop once
  the primary deployment runs its desired count; a deployment with no tasks left goes.
* Circuit breaker ("How the Amazon ECS deployment circuit breaker detects failures"):
  with ``deploymentCircuitBreaker.enable``, a deployment whose failed tasks reach the
  threshold turns rolloutState FAILED ("ECS deployment circuit breaker: tasks failed
  to start.") and launches no more tasks. The threshold: "The deployment circuit
  breaker has a minimum threshold of 3 and a maximum threshold of 200. and uses the
  values in the following formula to determine the deployment failure. 0.5 * desired
  task count" (ServiceDeploymentCircuitBreaker.threshold, ECS API reference), rounded
  up. With ``rollback``, "it looks for the most recent deployment that is in a
  COMPLETED state ... When the rollback starts, the deployment changes from a
  COMPLETED to IN_PROGRESS. This means that the deployment is not eligible for
  another rollback until it reaches a COMPLETED state. When the deployment circuit
  breaker does not find a deployment that is in a COMPLETED state, the circuit breaker
  does not launch new tasks and the deployment is stalled." (developer guide): that
  deployment, the same id, becomes PRIMARY again and the service's task definition its
  own. Without the breaker, failing tasks are replaced for ever and the deployment
  stays IN_PROGRESS.
* A deployment COMPLETES when it runs its desired count, no older one is left, and its
  tasks have kept running for ``steady_seconds``: "When the service reaches a steady
  state, the deployment transitions to a COMPLETED state" (Deployment.rolloutState,
  botocore ecs model); a task that starts and then stops keeps it from one, and the
  circuit breaker "might not activate" for it ("If a task successfully starts, passes
  the dependent health checks, but then stops", AWS re:Post knowledge center, "Why
  didn't my Amazon ECS deployment circuit breaker roll back?").
* Paging: ListServices returns 10 by default, ListTasks and ListTaskDefinitions 100,
  each at most ``maxResults`` (1-100) with a ``nextToken``; ListTaskDefinitions sorts by
  family and revision, ``sort=DESC`` newest first (ListTaskDefinitionsRequest.sort).
* CreateService for a name that is ACTIVE is refused ("Creation of service was not
  idempotent.") unless it repeats the ``clientToken`` that created it, which returns
  that service (CreateServiceRequest.clientToken).
* DeleteService (desiredCount 0, or ``force``) turns the service DRAINING while its
  tasks stop, then INACTIVE; neither is listed by ListServices, and "If you attempt to
  create a new service with the same name as an existing service in either ACTIVE or
  DRAINING status, you receive an error" (DeleteService): ECS's words for it are
  ``InvalidParameterException: Unable to Start a service that is still Draining.``
  (as reported in spinnaker/spinnaker#5476, ewilde/faas-fargate#13). UpdateService of a
  service that is not ACTIVE is ``ServiceNotActiveException`` ("You can't update a
  service that's inactive", the model's shape). moto marks a deleted service INACTIVE at
  once and lists it on.
* Tasks take time to stop too (``stop_seconds``): their lastStatus is STOPPING until
  then (Task lifecycle: RUNNING, DEACTIVATING, STOPPING, DEPROVISIONING, STOPPED).
* Containers write their output through the ``awslogs`` driver (``awslogs_driver``):
  the stream is created when the container starts, a missing log group fails the start.
* AWS/ECS CPUUtilization and MemoryUtilization are published per service (dimensions
  ClusterName, ServiceName) as percent of the reserved CPU and memory.
"""

from __future__ import annotations

import base64
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .aws_wire import AwsError
from .awslogs_driver import AwsLogsDriver, LogTarget

log = logging.getLogger(__name__)

JsonDict = dict[str, Any]

CPU_PERCENT = 12.5
MEMORY_PERCENT = 37.5
BREAKER_MIN, BREAKER_MAX = 3, 200
MAX_EVENTS = 100
PULL_ERROR = (
    "CannotPullContainerError: pull image manifest has been retried 1 time(s): failed to "
    "resolve ref {image}: not found"
)
EXITED = "Essential container in task exited"
NO_INSTANCES = (
    "(service {service}) was unable to place a task because no container instance met all "
    "of its requirements. Reason: No Container Instances were found in your cluster."
)
VCPU_LIMIT = (
    "(service {service}) was unable to place a task. Reason: You've reached the limit on the "
    "number of vCPUs you can run concurrently"
)
FAILED_TO_START = "TaskFailedToStart"
CONTAINER_EXITED = "EssentialContainerExited"
SCHEDULER = "ServiceSchedulerInitiated"
_EXIT = re.compile(r"\s*exit\s+(?P<code>[0-9]{1,3})\s*")


def exit_code_of(command: tuple[str, ...]) -> int | None:
    """The status a container running ``command`` exits with at once (``sh -c 'exit N'``),
    None for one that keeps running."""
    if len(command) == 3 and command[0] in ("sh", "/bin/sh") and command[1] == "-c":
        match = _EXIT.fullmatch(command[2])
        if match:
            return int(match["code"])
    return None


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Deployment:
    id: str
    task_definition: str
    desired: int
    launch_type: str
    network: JsonDict
    platform_version: str
    created: datetime = field(default_factory=now)
    updated: datetime = field(default_factory=now)
    status: str = "PRIMARY"
    rollout: str = "IN_PROGRESS"
    reason: str = ""
    failed: int = 0
    evaluated: bool = True
    """The breaker still counts failures (no task of it has reached RUNNING yet)."""
    running: int = 0
    pending: int = 0
    next_launch: float = 0.0
    """When the scheduler tries again to place a task it could not place."""

    def render(self) -> JsonDict:
        rendered: JsonDict = {
            "id": self.id,
            "status": self.status,
            "taskDefinition": self.task_definition,
            "desiredCount": self.desired,
            "pendingCount": self.pending,
            "runningCount": self.running,
            "failedTasks": self.failed,
            "createdAt": self.created.timestamp(),
            "updatedAt": self.updated.timestamp(),
            "launchType": self.launch_type,
            "rolloutState": self.rollout,
            "rolloutStateReason": self.reason or f"ECS deployment {self.id} in progress.",
        }
        if self.network:
            rendered["networkConfiguration"] = self.network
        if self.platform_version:
            rendered["platformVersion"] = self.platform_version
        return rendered


@dataclass(frozen=True)
class Definition:
    """What the scheduler needs of a task definition revision (immutable, read once)."""

    cpu: str
    memory: str
    image: str
    command: tuple[str, ...]
    logging: LogTarget | None

    @property
    def exit_code(self) -> int | None:
        return exit_code_of(self.command)


@dataclass
class Task:
    arn: str
    service: str
    deployment: str
    definition: Definition
    created: float = field(default_factory=time.monotonic)
    created_at: datetime = field(default_factory=now)
    pullable: bool = True
    started: bool = False
    """The container started (image pulled, log driver ready)."""
    started_at: float = 0.0
    started_wall: datetime | None = None
    stopped: bool = False
    """ECS set the desired status to STOPPED."""
    stopped_at: float = 0.0
    stopped_wall: datetime | None = None
    stop_code: str = ""
    exit_code: int | None = None

    def phase(self, start_seconds: float, stop_seconds: float) -> str:
        if self.stopped:
            stopping = time.monotonic() - self.stopped_at < stop_seconds
            return "STOPPING" if stopping and self.started else "STOPPED"
        if self.started:
            return "RUNNING"
        if time.monotonic() - self.created < start_seconds / 2:
            return "PROVISIONING"
        return "PENDING"


@dataclass
class Service:
    arn: str
    name: str
    cluster: str
    client_token: str
    breaker: JsonDict
    configuration: JsonDict
    deployments: list[Deployment]
    events: list[JsonDict] = field(default_factory=list)
    completed: Deployment | None = None
    published: float = 0.0
    deleted: bool = False
    tasks: list[Task] = field(default_factory=list)

    @property
    def primary(self) -> Deployment:
        return self.deployments[0]

    def event(self, message: str) -> None:
        stamp = now()
        self.events.insert(
            0,
            {
                "id": f"{random.getrandbits(64):016x}",
                "createdAt": stamp.timestamp(),
                "message": message,
            },
        )
        del self.events[MAX_EVENTS:]


def _deployment_id() -> str:
    return f"ecs-svc/{random.randint(10**18, 10**19 - 1)}"


def _page(items: list[str], params: JsonDict, default: int) -> JsonDict:
    size = int(params.get("maxResults") or default)
    start = int(base64.b64decode(params["nextToken"]).decode()) if params.get("nextToken") else 0
    page: JsonDict = {"items": items[start : start + size]}
    if start + size < len(items):
        page["nextToken"] = base64.b64encode(str(start + size).encode()).decode()
    return page


def _revision_key(arn: str) -> tuple[str, int]:
    family, _, revision = arn.rsplit("/", 1)[-1].rpartition(":")
    return family, int(revision or 0)


class EcsControlPlane:
    """Deployments and tasks of every ECS service created through the front."""

    def __init__(
        self,
        ecs: Callable[[], Any],
        cloudwatch: Callable[[], Any],
        *,
        logs: AwsLogsDriver,
        pullable: Iterable[str],
        start_seconds: float = 0.3,
        stop_seconds: float = 0.3,
        crash_seconds: float = 0.3,
        steady_seconds: float = 0.6,
        vcpu_quota: float | None = None,
        interval: float = 0.05,
        publish_metrics: bool = True,
        metrics_interval: float = 1.0,
    ) -> None:
        self._ecs = ecs
        self._cloudwatch = cloudwatch
        self.logs = logs
        self.pullable = set(pullable)
        self.start_seconds = start_seconds
        self.stop_seconds = stop_seconds
        self.crash_seconds = crash_seconds
        self.steady_seconds = max(steady_seconds, crash_seconds)
        """How long a deployment's tasks run before it is in a steady state (at least
        ``crash_seconds``: a task that exits keeps its deployment from one)."""
        self.vcpu_quota = vcpu_quota
        """Fargate vCPUs the account may run at once (None: no limit)."""
        self.interval = interval
        self.publish_metrics = publish_metrics
        self.metrics_interval = metrics_interval
        self._lock = threading.RLock()
        self._services: dict[str, Service] = {}
        self._tasks: dict[str, Task] = {}
        self._registered: dict[str, datetime] = {}
        self._definitions: dict[str, Definition] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ecs-control-plane", daemon=True)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> EcsControlPlane:
        self._thread.start()
        self.logs.open(self.interval)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.logs.close()

    def __enter__(self) -> EcsControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the front's hooks ----------------------------------------------------------------

    def before(self, operation: str, params: JsonDict) -> AwsError | JsonDict | None:
        """An error, an answer that replaces moto's, or None to let moto answer."""
        if operation == "UpdateService":
            with self._lock:
                found = self._named(str(params.get("service", "")))
                if found is not None and self.status_of(found) != "ACTIVE":
                    return AwsError(400, "ServiceNotActiveException", "Service was not ACTIVE.")
            return None
        if operation != "CreateService":
            return None
        with self._lock:
            existing = self._named(str(params.get("serviceName", "")))
            status = "INACTIVE" if existing is None else self.status_of(existing)
            if status == "DRAINING":
                return AwsError(
                    400,
                    "InvalidParameterException",
                    "Unable to Start a service that is still Draining.",
                )
            if existing is None or status != "ACTIVE":
                return None
            token = params.get("clientToken")
            if token and token == existing.client_token:
                described = self._ecs().describe_services(
                    cluster=existing.cluster, services=[existing.arn], include=["TAGS"]
                )["services"][0]
                return {"service": self._render_service(_jsonable(described))}
        return AwsError(400, "InvalidParameterException", "Creation of service was not idempotent.")

    def after(self, operation: str, params: JsonDict, answer: JsonDict) -> JsonDict:
        """moto's answer to ``operation``, as ECS gives it."""
        handler = getattr(self, f"_after_{operation}", None)
        if handler is None:
            return answer
        with self._lock:
            result: JsonDict = handler(params, answer)
            return result

    def _named(self, name_or_arn: str) -> Service | None:
        name = name_or_arn.rsplit("/", 1)[-1]
        return next((s for s in self._services.values() if s.name == name), None)

    def status_of(self, service: Service) -> str:
        """ACTIVE; DRAINING once deleted, until every task of it has stopped; INACTIVE."""
        if not service.deleted:
            return "ACTIVE"
        phases = (t.phase(self.start_seconds, self.stop_seconds) for t in service.tasks)
        return "DRAINING" if any(phase != "STOPPED" for phase in phases) else "INACTIVE"

    def service_status(self, name: str) -> str:
        """The emulated ECS status of service ``name`` ("" when ECS never had it)."""
        with self._lock:
            found = self._named(name)
            return "" if found is None else self.status_of(found)

    def _after_RegisterTaskDefinition(self, params: JsonDict, answer: JsonDict) -> JsonDict:
        definition = answer["taskDefinition"]
        stamp = now()
        self._registered[definition["taskDefinitionArn"]] = stamp
        definition["registeredAt"] = stamp.timestamp()
        return answer

    def _after_DescribeTaskDefinition(self, params: JsonDict, answer: JsonDict) -> JsonDict:
        definition = answer["taskDefinition"]
        stamp = self._registered.get(definition["taskDefinitionArn"])
        if stamp is not None:
            definition["registeredAt"] = stamp.timestamp()
        return answer

    def _after_ListTaskDefinitions(self, params: JsonDict, answer: JsonDict) -> JsonDict:
        arns = sorted(answer.get("taskDefinitionArns", []), key=_revision_key)
        if params.get("sort") == "DESC":
            arns.reverse()
        page = _page(arns, params, 100)
        return {"taskDefinitionArns": page.pop("items"), **page}

    def _after_ListServices(self, params: JsonDict, answer: JsonDict) -> JsonDict:
        # Deleted services are "no longer visible ... in the ListServices API operation"
        # (DeleteService); moto lists them on.
        arns = [
            arn
            for arn in answer.get("serviceArns", [])
            if arn not in self._services or self.status_of(self._services[arn]) == "ACTIVE"
        ]
        page = _page(arns, params, 10)
        return {"serviceArns": page.pop("items"), **page}

    def _after_ListTasks(self, params: JsonDict, answer: JsonDict) -> JsonDict:
        arns = list(answer.get("taskArns", []))
        if params.get("serviceName"):  # moto ignores the filter
            group = params["serviceName"].rsplit("/", 1)[-1]
            arns = [a for a in arns if a in self._tasks and self._tasks[a].service == group]
        page = _page(arns, params, 100)
        return {"taskArns": page.pop("items"), **page}

    def _after_CreateService(self, params: JsonDict, answer: JsonDict) -> JsonDict:
        described = answer["service"]
        configuration = dict(params.get("deploymentConfiguration") or {})
        network = params.get("networkConfiguration") or {}
        deployment = Deployment(
            id=_deployment_id(),
            task_definition=described["taskDefinition"],
            desired=int(params.get("desiredCount", 0)),
            launch_type=str(params.get("launchType") or "FARGATE"),
            network=network,
            platform_version=str(params.get("platformVersion") or ""),
        )
        service = Service(
            arn=described["serviceArn"],
            name=described["serviceName"],
            cluster=str(params.get("cluster", "default")),
            client_token=str(params.get("clientToken") or ""),
            breaker=dict(configuration.get("deploymentCircuitBreaker") or {}),
            configuration=configuration,
            deployments=[deployment],
        )
        self._services[service.arn] = service
        service.event(f"(service {service.name}) has started 0 tasks.")
        answer["service"] = self._render_service(described)
        return answer

    def _after_UpdateService(self, params: JsonDict, answer: JsonDict) -> JsonDict:
        described = answer["service"]
        service = self._services.get(described["serviceArn"])
        if service is None:
            return answer
        primary = service.primary
        if "desiredCount" in params:
            primary.desired = int(params["desiredCount"])
            primary.updated = now()
        if params.get("deploymentConfiguration"):
            service.configuration = dict(params["deploymentConfiguration"])
            service.breaker = dict(service.configuration.get("deploymentCircuitBreaker") or {})
        task_definition = self._arn_of(described["taskDefinition"])
        network = params.get("networkConfiguration") or primary.network
        platform = str(params.get("platformVersion") or primary.platform_version)
        if (
            task_definition != primary.task_definition
            or network != primary.network
            or platform != primary.platform_version
            or params.get("forceNewDeployment")
        ):
            self._new_deployment(service, task_definition, network, platform)
        answer["service"] = self._render_service(described)
        return answer

    def _after_DeleteService(self, params: JsonDict, answer: JsonDict) -> JsonDict:
        described = answer["service"]
        service = self._services.get(described["serviceArn"])
        if service is not None:
            service.deleted = True
            service.primary.desired = 0
            service.primary.updated = now()
            service.event(f"(service {service.name}) has been deleted.")
        answer["service"] = self._render_service(described)
        return answer

    def _after_DescribeServices(self, params: JsonDict, answer: JsonDict) -> JsonDict:
        answer["services"] = [self._render_service(s) for s in answer.get("services", [])]
        return answer

    def _after_DescribeTasks(self, params: JsonDict, answer: JsonDict) -> JsonDict:
        for described in answer.get("tasks", []):
            task = self._tasks.get(described["taskArn"])
            if task is None:
                continue
            phase = task.phase(self.start_seconds, self.stop_seconds)
            described["lastStatus"] = phase
            described["createdAt"] = task.created_at.timestamp()
            described["cpu"], described["memory"] = task.definition.cpu, task.definition.memory
            if task.started_wall is not None:
                described["startedAt"] = task.started_wall.timestamp()
            containers = described.get("containers") or [{}]
            container = containers[0]
            container["lastStatus"] = phase if phase != "PROVISIONING" else "PENDING"
            container.pop("exitCode", None)  # moto says 0 for a container that never ran
            if task.stopped:
                described["stopCode"] = task.stop_code
                if task.stopped_wall is not None and phase == "STOPPED":
                    described["stoppedAt"] = task.stopped_wall.timestamp()
                if task.exit_code is not None:
                    container["exitCode"] = task.exit_code
            described["containers"] = containers
        return answer

    def _arn_of(self, task_definition: str) -> str:
        if task_definition.startswith("arn:"):
            return task_definition
        found = self._ecs().describe_task_definition(taskDefinition=task_definition)
        return str(found["taskDefinition"]["taskDefinitionArn"])

    def _new_deployment(
        self, service: Service, task_definition: str, network: JsonDict, platform: str
    ) -> Deployment:
        old = service.primary
        old.status = "ACTIVE"
        deployment = Deployment(
            id=_deployment_id(),
            task_definition=task_definition,
            desired=old.desired,
            launch_type=old.launch_type,
            network=network,
            platform_version=platform,
        )
        service.deployments.insert(0, deployment)
        return deployment

    def _render_service(self, described: JsonDict) -> JsonDict:
        service = self._services.get(described.get("serviceArn", ""))
        if service is None:
            return described
        described["status"] = self.status_of(service)
        described["deployments"] = [d.render() for d in service.deployments]
        described["deploymentConfiguration"] = service.configuration
        described["runningCount"] = sum(d.running for d in service.deployments)
        described["pendingCount"] = sum(d.pending for d in service.deployments)
        described["desiredCount"] = service.primary.desired
        described["taskDefinition"] = service.primary.task_definition
        described["events"] = list(service.events)
        return described

    # -- the scheduler --------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:  # the next pass retries; a test sees the effect, not the error
                log.debug("ECS control plane pass failed", exc_info=True)
            self._stop.wait(self.interval)

    def reconcile(self) -> None:
        with self._lock:
            metric_data: list[JsonDict] = []
            for service in list(self._services.values()):
                self._reconcile(service)
                metric_data.extend(self._metrics(service))
        # CloudWatch calls outside the lock (the task logs are the driver's own thread's).
        for start in range(0, len(metric_data), 20):
            self._cloudwatch().put_metric_data(
                Namespace="AWS/ECS", MetricData=metric_data[start : start + 20]
            )

    def _alive(self, deployment: Deployment) -> list[Task]:
        return [t for t in self._tasks.values() if t.deployment == deployment.id and not t.stopped]

    def _reconcile(self, service: Service) -> None:
        for deployment in service.deployments:
            self._advance(service, deployment)
        if service.deleted:  # ECS stops what is left and starts nothing
            for deployment in service.deployments:
                for task in self._alive(deployment):
                    self._stop_task(service, task, "Service deleted", SCHEDULER)
            return
        primary = service.primary
        alive = self._alive(primary)
        if primary.rollout != "FAILED":
            missing = primary.desired - len(alive)
            if missing > 0 and time.monotonic() >= primary.next_launch:
                self._launch(service, primary, missing)
            for task in sorted(alive, key=lambda t: t.created)[primary.desired :]:
                self._stop_task(
                    service, task, f"Scaling activity initiated by (deployment {primary.id})"
                )
        self._trip_breaker(service)
        primary = service.primary
        running = [t for t in self._alive(primary) if t.started]
        for old in service.deployments[1:]:
            if old.rollout == "FAILED" or len(running) >= primary.desired:
                for task in self._alive(old):
                    self._stop_task(
                        service, task, f"Scaling activity initiated by (deployment {primary.id})"
                    )
        service.deployments = [service.primary] + [
            d for d in service.deployments[1:] if self._alive(d)
        ]
        for deployment in service.deployments:
            tasks = self._alive(deployment)
            deployment.running = sum(1 for t in tasks if t.started)
            deployment.pending = len(tasks) - deployment.running
        primary = service.primary
        settled = time.monotonic() - self.steady_seconds
        if (
            primary.rollout == "IN_PROGRESS"
            and primary.running == primary.desired
            and primary.pending == 0
            and len(service.deployments) == 1
            and all(t.started_at <= settled for t in self._alive(primary))
        ):
            primary.rollout = "COMPLETED"
            primary.reason = f"ECS deployment {primary.id} completed."
            primary.updated = now()
            service.completed = primary
            service.event(f"(service {service.name}) has reached a steady state.")

    def _advance(self, service: Service, deployment: Deployment) -> None:
        """Start the containers of tasks that are due; stop those whose container exited."""
        for task in self._alive(deployment):
            clock = time.monotonic()
            if task.started:
                code = task.definition.exit_code
                if code is not None and clock - task.started_at >= self.crash_seconds:
                    task.exit_code = code
                    self._stop_task(service, task, EXITED, CONTAINER_EXITED)
                continue
            if clock - task.created < self.start_seconds:
                continue
            failure = self._start_container(task)
            if failure:
                self._stop_task(service, task, failure, FAILED_TO_START)
                self._failed(deployment)
            elif deployment.evaluated:  # "the failed task count resets to zero"
                deployment.evaluated = False
                deployment.failed = 0

    def _failed(self, deployment: Deployment) -> None:
        if deployment.evaluated:
            deployment.failed += 1
            deployment.updated = now()

    def _trip_breaker(self, service: Service) -> None:
        primary = service.primary
        threshold = min(BREAKER_MAX, max(BREAKER_MIN, math.ceil(0.5 * primary.desired)))
        if not service.breaker.get("enable") or primary.rollout != "IN_PROGRESS":
            return
        if primary.failed < threshold:
            return
        primary.rollout = "FAILED"
        primary.reason = "ECS deployment circuit breaker: tasks failed to start."
        primary.updated = now()
        service.event(
            f"(service {service.name}) (deployment {primary.id}) deployment failed: "
            "tasks failed to start."
        )
        completed = service.completed
        if not service.breaker.get("rollback") or completed is None:
            return
        # The COMPLETED deployment itself goes back to IN_PROGRESS and becomes PRIMARY.
        primary.status = "ACTIVE"
        service.deployments = [completed] + [d for d in service.deployments if d is not completed]
        completed.status = "PRIMARY"
        completed.rollout = "IN_PROGRESS"
        completed.reason = f"ECS deployment circuit breaker: rolling back to {completed.id}."
        completed.desired = primary.desired
        completed.updated = now()
        completed.evaluated, completed.failed = True, 0
        service.completed = None
        self._ecs().update_service(
            cluster=service.cluster,
            service=service.arn,
            taskDefinition=completed.task_definition,
        )
        service.event(f"(service {service.name}) rolling back to deployment {completed.id}.")

    def _start_container(self, task: Task) -> str:
        """Start a task's container: "" when it runs, else why it stopped."""
        if not task.pullable:
            return PULL_ERROR.format(image=task.definition.image)
        target = task.definition.logging
        if target is not None:
            failure = self.logs.start(task.arn, target, task.definition.command)
            if failure:
                return failure
        task.started = True
        task.started_at = time.monotonic()
        task.started_wall = now()
        return ""

    def _definition_of(self, task_definition: str) -> Definition:
        known = self._definitions.get(task_definition)
        if known is None:
            found = self._ecs().describe_task_definition(taskDefinition=task_definition)
            described = found["taskDefinition"]
            container = described["containerDefinitions"][0]
            known = Definition(
                cpu=str(described.get("cpu", "")),
                memory=str(described.get("memory", "")),
                image=str(container.get("image", "")),
                command=tuple(str(arg) for arg in container.get("command") or ()),
                logging=LogTarget.of(container),
            )
            self._definitions[task_definition] = known
        return known

    def _unplaceable(self, service: Service, deployment: Deployment, cpu_units: int) -> str:
        """Why the scheduler cannot place one more task of ``deployment`` ("" if it can)."""
        if deployment.launch_type == "EC2":
            listed = self._ecs().list_container_instances(cluster=service.cluster, maxResults=1)
            if not listed.get("containerInstanceArns"):
                return NO_INSTANCES.format(service=service.name)
            return ""
        if self.vcpu_quota is None:
            return ""
        in_use = sum(int(t.definition.cpu or 0) for t in self._tasks.values() if not t.stopped)
        if (in_use + cpu_units) / 1024 > self.vcpu_quota:
            return VCPU_LIMIT.format(service=service.name)
        return ""

    def _launch(self, service: Service, deployment: Deployment, count: int) -> None:
        """Place ``count`` more tasks of ``deployment``, as many as fit."""
        definition = self._definition_of(deployment.task_definition)
        for placed in range(count):
            why = self._unplaceable(service, deployment, int(definition.cpu or 0))
            if why:
                service.event(why)
                self._failed(deployment)
                deployment.next_launch = time.monotonic() + self.start_seconds
                count = placed
                break
        if count:
            self._run_tasks(service, deployment, count)

    def _run_tasks(self, service: Service, deployment: Deployment, count: int) -> None:
        definition = self._definition_of(deployment.task_definition)
        args: JsonDict = {
            "cluster": service.cluster,
            "taskDefinition": deployment.task_definition,
            "count": count,
            "group": f"service:{service.name}",
            "startedBy": deployment.id,
            "launchType": deployment.launch_type,
        }
        if deployment.network:
            args["networkConfiguration"] = deployment.network
        for started in self._ecs().run_task(**args)["tasks"]:
            task = Task(
                arn=started["taskArn"],
                service=service.name,
                deployment=deployment.id,
                definition=definition,
                pullable=definition.image in self.pullable,
            )
            self._tasks[task.arn] = task
            service.tasks.append(task)

    def _stop_task(self, service: Service, task: Task, reason: str, code: str = SCHEDULER) -> None:
        self._ecs().stop_task(cluster=service.cluster, task=task.arn, reason=reason)
        task.stopped = True
        task.stopped_at = time.monotonic()
        task.stopped_wall = now()
        task.stop_code = code
        self.logs.stop(task.arn)

    def _metrics(self, service: Service) -> list[JsonDict]:
        running = service.primary.running
        due = time.monotonic() - service.published >= self.metrics_interval
        if not (self.publish_metrics and running and due) or service.deleted:
            return []
        service.published = time.monotonic()
        dimensions = [
            {"Name": "ClusterName", "Value": service.cluster},
            {"Name": "ServiceName", "Value": service.name},
        ]
        return [
            {
                "MetricName": metric,
                "Dimensions": dimensions,
                "Timestamp": now(),
                "Value": value,
                "Unit": "Percent",
            }
            for metric, value in (
                ("CPUUtilization", CPU_PERCENT),
                ("MemoryUtilization", MEMORY_PERCENT),
            )
        ]


def _jsonable(value: Any) -> Any:
    """A boto3 answer (datetimes) as the JSON the wire carries (epoch seconds)."""
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value
