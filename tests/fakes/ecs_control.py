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
  ``failedTasks`` counts it.
* Rolling update with minimumHealthyPercent 100: tasks of older deployments stop once
  the primary deployment runs its desired count; a deployment with no tasks left goes.
* Circuit breaker ("How the Amazon ECS deployment circuit breaker detects failures"):
  with ``deploymentCircuitBreaker.enable``, a deployment whose failed tasks reach the
  threshold (0.5 x desired count, at least 3, at most 200) turns rolloutState FAILED
  and launches no more tasks; with ``rollback`` and a previous deployment that
  COMPLETED, the service rolls back to it (a new PRIMARY deployment of that task
  definition). Without the breaker, failing tasks are replaced for ever and the
  deployment stays IN_PROGRESS.
* A deployment COMPLETES when it runs its desired count and no older one is left.
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
    running: int = 0
    pending: int = 0

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
    stopped: bool = False
    """ECS set the desired status to STOPPED."""
    stopped_at: float = 0.0

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
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

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
            if task.started:
                described["startedAt"] = task.created_at.timestamp() + self.start_seconds
            if task.stopped and not task.started:
                described["stopCode"] = "TaskFailedToStart"
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
            batches = self.logs.collect()
        self.logs.send(batches)  # CloudWatch calls outside the lock, like the metrics
        for start in range(0, len(metric_data), 20):
            self._cloudwatch().put_metric_data(
                Namespace="AWS/ECS", MetricData=metric_data[start : start + 20]
            )

    def _alive(self, deployment: Deployment) -> list[Task]:
        return [t for t in self._tasks.values() if t.deployment == deployment.id and not t.stopped]

    def _reconcile(self, service: Service) -> None:
        for deployment in service.deployments:
            for task in self._alive(deployment):
                due = time.monotonic() - task.created >= self.start_seconds
                if task.started or not due:
                    continue
                failure = self._start_container(task)
                if failure:
                    self._stop_task(service, task, failure)
                    deployment.failed += 1
                    deployment.updated = now()
        if service.deleted:  # ECS stops what is left and starts nothing
            for deployment in service.deployments:
                for task in self._alive(deployment):
                    self._stop_task(service, task, "Service deleted")
            return
        primary = service.primary
        alive = self._alive(primary)
        if primary.rollout != "FAILED":
            missing = primary.desired - len(alive)
            if missing > 0:
                self._run_tasks(service, primary, missing)
            for task in sorted(alive, key=lambda t: t.created)[primary.desired :]:
                self._stop_task(service, task, "Scaling activity initiated by deployment")
        self._trip_breaker(service)
        primary = service.primary
        running = [t for t in self._alive(primary) if t.started]
        for old in service.deployments[1:]:
            if old.rollout == "FAILED" or len(running) >= primary.desired:
                for task in self._alive(old):
                    self._stop_task(service, task, "Task replaced by a newer deployment")
        service.deployments = [service.primary] + [
            d for d in service.deployments[1:] if self._alive(d)
        ]
        for deployment in service.deployments:
            tasks = self._alive(deployment)
            deployment.running = sum(1 for t in tasks if t.started)
            deployment.pending = len(tasks) - deployment.running
        primary = service.primary
        if (
            primary.rollout == "IN_PROGRESS"
            and primary.running == primary.desired
            and primary.pending == 0
            and len(service.deployments) == 1
        ):
            primary.rollout = "COMPLETED"
            primary.reason = f"ECS deployment {primary.id} completed."
            primary.updated = now()
            service.completed = primary
            service.event(f"(service {service.name}) has reached a steady state.")

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
        rollback = self._new_deployment(
            service, completed.task_definition, completed.network, completed.platform_version
        )
        self._ecs().update_service(
            cluster=service.cluster,
            service=service.arn,
            taskDefinition=completed.task_definition,
        )
        service.event(f"(service {service.name}) rolling back to deployment {completed.id}.")
        log.debug("rolled %s back in %s", service.name, rollback.id)

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

    def _stop_task(self, service: Service, task: Task, reason: str) -> None:
        self._ecs().stop_task(cluster=service.cluster, task=task.arn, reason=reason)
        task.stopped = True
        task.stopped_at = time.monotonic()
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
