"""ECS services as deployments: converge, scale, stop, observe (blocking; run in the executor).

Stopping scales the service to zero and KEEPS it. Issue 5 first said "scale to
zero and delete", but the contract every provider keeps says a stopped
service keeps its definition, reports STOPPED, can be stopped again and comes
back with ``start``; ECS forgets deleted services (INACTIVE, then gone within
the hour), so deleting would turn the second ``stop`` into NOT_FOUND. A
service at desiredCount 0 costs nothing on Fargate.

Readiness is counted from the service's tasks (``group == service:<name>``,
RUNNING, on the service's current task definition and deployment), not taken
from the service's ``runningCount``: the instance list and the ready count
then come from the same read and can never disagree, and tasks still running
an older revision are reported as instances but not as ready. On AWS the two
numbers agree once a deployment settles. ``failedTasks`` of the primary
deployment makes it DEGRADED.

Every service runs with ECS's deployment circuit breaker on, with rollback
(``DEPLOYMENT_CONFIGURATION``): a deployment whose tasks keep failing to start
(a bad image, a missing role) stops launching tasks and turns ``rolloutState``
FAILED, which is what makes FAILED reachable (without the breaker ECS retries
forever). With a previous deployment that completed, ECS then rolls the
service back to it. FAILED is reported while ECS lists the failed deployment,
and after it is gone as long as the service runs an older revision than the
latest one ``start`` (or ``apply_config``) registered and the deployment
running it began after that revision was registered: ECS made it, so the
revision asked for failed. ``start`` with the spec again tries again.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from alphaswarm_core.providers.protocol import (
    BackendRejectedError,
    BackendTimeoutError,
    BackendUnavailableError,
    DeploymentNotFoundError,
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    InfrastructureProviderError,
    InfrastructureProviderUnavailable,
    InstanceStatus,
)
from alphaswarm_core.providers.reasons import ErrorReason

from .clients import Clients, JsonDict
from .logs import DEFAULT_RETENTION_DAYS, ensure_log_group
from .taskdef import (
    EcsPlan,
    config_path_of,
    labels_from_tags,
    parse_service_name,
    service_name,
    spec_hash_of,
    with_config_path,
)

log = logging.getLogger(__name__)

DESCRIBE_SERVICES_BATCH = 10
DESCRIBE_TASKS_BATCH = 100
LIST_PAGE_SIZE = 100
TASK_DEFINITION_CACHE = 256
Tags = list[dict[str, str]]
REGISTER_ATTEMPTS = 3
DRAINING_RETRY_AFTER = 5.0
CIRCUIT_BREAKER = {"enable": True, "rollback": True}
DEPLOYMENT_CONFIGURATION: JsonDict = {
    "deploymentCircuitBreaker": CIRCUIT_BREAKER,
    "maximumPercent": 200,
    "minimumHealthyPercent": 100,
}


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def primary_deployment(service: JsonDict) -> JsonDict:
    for deployment in service.get("deployments", []):
        if deployment.get("status") == "PRIMARY":
            return dict(deployment)
    return {}


def task_is_current(task: JsonDict, service: JsonDict) -> bool:
    """Whether a task runs the service's current revision (and, when ECS started it for a
    deployment, the primary one: a forced new deployment replaces tasks of the same revision)."""
    if task.get("taskDefinitionArn") != service.get("taskDefinition"):
        return False
    started_by = str(task.get("startedBy", ""))
    primary_id = primary_deployment(service).get("id")
    return not (started_by.startswith("ecs-svc/") and primary_id and started_by != primary_id)


def _revision(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def failure_of(service: JsonDict, latest: JsonDict | None) -> str:
    """Why the service's rollout failed, or "" when it did not.

    ``latest`` is the newest ACTIVE revision of the service's family (described), the
    one ``start`` or ``apply_config`` asked for last; None skips the rollback check.
    """
    primary = primary_deployment(service)
    asked = str((latest or {}).get("taskDefinitionArn", ""))
    running = str(service.get("taskDefinition"))
    for deployment in service.get("deployments", []):
        if deployment.get("rolloutState") != "FAILED":
            continue
        reason = str(deployment.get("rolloutStateReason") or "ECS deployment failed")
        if deployment.get("id") == primary.get("id") or not primary:
            return reason
        if asked and asked == running:
            continue  # an older failure: what was asked last is being deployed now
        return f"{reason}; ECS rolled back to {_revision(running)}"
    if not latest or not primary:
        return ""
    registered, began = latest.get("registeredAt"), primary.get("createdAt")
    if (
        asked
        and asked != running
        and isinstance(registered, datetime)
        and isinstance(began, datetime)
        and began > registered
    ):
        return (
            f"the deployment of {_revision(asked)} failed and ECS rolled the service back to "
            f"{_revision(running)}; StartDeployment tries again"
        )
    return ""


def status_from(
    service: JsonDict,
    tasks: Iterable[JsonDict],
    *,
    namespace: str,
    service_id: str,
    alias: str,
    latest: JsonDict | None = None,
) -> DeploymentStatus:
    """DeploymentStatus of one ECS service and its (RUNNING-desired) tasks."""
    desired = int(service.get("desiredCount", 0))
    primary = primary_deployment(service)
    failure = failure_of(service, latest)
    tasks = list(tasks)
    instances = []
    stale = 0
    for task in tasks:
        last = str(task.get("lastStatus", "UNKNOWN"))
        current = task_is_current(task, service)
        healthy = task.get("healthStatus") != "UNHEALTHY"
        is_ready = last == "RUNNING" and current and healthy
        if not current:
            stale += 1
        instances.append(
            InstanceStatus(
                instance_id=str(task.get("taskArn", "")).rsplit("/", 1)[-1],
                state=last.lower(),
                ready=is_ready,
                message="" if current else "running a previous revision; being replaced",
                started_at=started
                if isinstance(started := task.get("startedAt"), datetime)
                else None,
            )
        )
    instances.sort(key=lambda item: item.instance_id)
    ready = sum(1 for item in instances if item.ready)
    failed = int(primary.get("failedTasks", 0) or 0)
    rollout = str(primary.get("rolloutState", ""))
    counts = (
        f"{ready}/{desired} ready (ECS: running {service.get('runningCount', 0)}, "
        f"pending {service.get('pendingCount', 0)}"
        + (f", rollout {rollout}" if rollout else "")
        + ")"
    )
    if desired == 0:
        state = DeploymentState.STOPPED
        message = f"scaled to zero; {len(instances)} task(s) draining" if instances else "stopped"
    elif failure:
        state = DeploymentState.FAILED
        message = failure
    elif ready >= desired and stale == 0:
        state = DeploymentState.RUNNING
        message = counts
    elif failed:
        state = DeploymentState.DEGRADED
        message = f"{counts}; {failed} task(s) failed to start"
    else:
        state = DeploymentState.PENDING
        message = counts
    updated = primary.get("updatedAt") or primary.get("createdAt")
    return DeploymentStatus(
        service_id=service_id,
        namespace=namespace,
        provider=alias,
        state=state,
        desired_replicas=desired,
        ready_replicas=ready,
        message=message,
        updated_at=datetime.now(UTC),
        changed_at=updated if isinstance(updated, datetime) else None,
        created_at=created if isinstance(created := service.get("createdAt"), datetime) else None,
        restarts=failed,
        instances=tuple(instances),
        image=next(
            (
                str(container.get("image", ""))
                for task in tasks
                if task_is_current(task, service)
                for container in task.get("containers", [])[:1]
            ),
            "",
        ),
        labels=labels_from_tags(service.get("tags", [])),
    )


class EcsDeployments:
    """Deployments of one provider in one ECS cluster."""

    def __init__(
        self,
        clients: Clients,
        cluster: str,
        alias: str,
        *,
        log_retention_days: int = DEFAULT_RETENTION_DAYS,
    ) -> None:
        self._clients = clients
        self.cluster = cluster
        self._alias = alias
        self._log_retention_days = log_retention_days
        self._described: OrderedDict[str, JsonDict] = OrderedDict()
        self._described_lock = threading.Lock()

    # -- reads --------------------------------------------------------------------------

    def describe(self, names: list[str], *, draining: bool = False) -> list[JsonDict]:
        """ACTIVE services among ``names`` (and DRAINING ones, deleted but with tasks still
        stopping, when ``draining``), DescribeServices in batches of 10."""
        kept = ("ACTIVE", "DRAINING") if draining else ("ACTIVE",)
        found: list[JsonDict] = []
        for batch in _batches(names, DESCRIBE_SERVICES_BATCH):
            page = self._clients.call(
                "ecs", "DescribeServices", cluster=self.cluster, services=batch, include=["TAGS"]
            )
            found.extend(s for s in page.get("services", []) if s.get("status") in kept)
        return found

    def describe_one(
        self, namespace: str, service_id: str, *, draining: bool = False
    ) -> JsonDict | None:
        found = self.describe([service_name(namespace, service_id)], draining=draining)
        return found[0] if found else None

    def require(self, namespace: str, service_id: str) -> JsonDict:
        """The service, or DeploymentNotFoundError."""
        service = self.describe_one(namespace, service_id)
        if service is None:
            raise DeploymentNotFoundError(service_id, namespace)
        return service

    def tasks(self, service: str | None = None) -> dict[str, list[JsonDict]]:
        """RUNNING-desired tasks by service name (of one service, or of the whole cluster)."""
        args: dict[str, Any] = {"cluster": self.cluster, "desiredStatus": "RUNNING"}
        if service:
            args["serviceName"] = service
        arns: list[str] = []
        for page in self._clients.pages("ecs", "ListTasks", maxResults=LIST_PAGE_SIZE, **args):
            arns.extend(page.get("taskArns", []))
        grouped: dict[str, list[JsonDict]] = {}
        for batch in _batches(arns, DESCRIBE_TASKS_BATCH):
            page = self._clients.call("ecs", "DescribeTasks", cluster=self.cluster, tasks=batch)
            for task in page.get("tasks", []):
                group = str(task.get("group", ""))
                if group.startswith("service:"):
                    grouped.setdefault(group.removeprefix("service:"), []).append(task)
        return grouped

    def task_ids(self, service: str) -> list[str]:
        """Ids of the service's tasks whose output is worth reading: every desired-RUNNING
        one, and the stopped ones ECS still lists ("Recently stopped tasks might appear",
        ListTasks; one page of them)."""
        ids: list[str] = []
        for page in self._clients.pages(
            "ecs",
            "ListTasks",
            cluster=self.cluster,
            serviceName=service,
            desiredStatus="RUNNING",
            maxResults=LIST_PAGE_SIZE,
        ):
            ids.extend(str(arn).rsplit("/", 1)[-1] for arn in page.get("taskArns", []))
        stopped = self._clients.call(
            "ecs",
            "ListTasks",
            cluster=self.cluster,
            serviceName=service,
            desiredStatus="STOPPED",
            maxResults=LIST_PAGE_SIZE,
        )
        ids.extend(str(arn).rsplit("/", 1)[-1] for arn in stopped.get("taskArns", []))
        return sorted(set(ids))

    def status(self, namespace: str, service_id: str) -> DeploymentStatus:
        return self.observe(namespace, service_id)[0]

    def observe(self, namespace: str, service_id: str) -> tuple[DeploymentStatus, list[JsonDict]]:
        """The status and the tasks counted ready in it (metrics size CPU and memory from
        those)."""
        service = self.require(namespace, service_id)
        name = service["serviceName"]
        tasks = self.tasks(name).get(name, [])
        latest = self.latest_revision(name)
        status = self._status(service, tasks, namespace, service_id, latest)
        ready = [
            t for t in tasks if t.get("lastStatus") == "RUNNING" and task_is_current(t, service)
        ]
        return status, ready

    def _status(
        self,
        service: JsonDict,
        tasks: list[JsonDict],
        namespace: str,
        service_id: str,
        latest: JsonDict | None = None,
    ) -> DeploymentStatus:
        return status_from(
            service,
            tasks,
            namespace=namespace,
            service_id=service_id,
            alias=self._alias,
            latest=latest,
        )

    def task_definition(self, arn: str) -> JsonDict:
        """A described revision; revisions are immutable, so each is read once."""
        with self._described_lock:
            cached = self._described.get(arn)
            if cached is not None:
                self._described.move_to_end(arn)
                return cached
        described: JsonDict = self._clients.call(
            "ecs", "DescribeTaskDefinition", taskDefinition=arn, include=["TAGS"]
        )
        found = {**described["taskDefinition"], "tags": described.get("tags", [])}
        with self._described_lock:
            self._described[arn] = found
            while len(self._described) > TASK_DEFINITION_CACHE:
                self._described.popitem(last=False)
        return found

    def latest_revision(self, family: str) -> JsonDict | None:
        """The newest ACTIVE revision of ``family`` (described), None when it has none."""
        latest = self._clients.call(
            "ecs",
            "ListTaskDefinitions",
            familyPrefix=family,
            status="ACTIVE",
            sort="DESC",
            maxResults=1,
        ).get("taskDefinitionArns", [])
        if not latest or _revision(latest[0]).split(":")[0] != family:
            return None
        return self.task_definition(latest[0])

    def list(self, namespace: str | None) -> list[DeploymentStatus]:
        names: list[str] = []
        for page in self._clients.pages(
            "ecs", "ListServices", cluster=self.cluster, maxResults=LIST_PAGE_SIZE
        ):
            for arn in page.get("serviceArns", []):
                parsed = parse_service_name(arn)
                if parsed and (namespace is None or parsed[0] == namespace):
                    names.append(arn.rsplit("/", 1)[-1])
        if not names:
            return []
        services = self.describe(names)
        tasks = self.tasks() if services else {}
        result = []
        for service in services:
            parsed = parse_service_name(service["serviceName"])
            if parsed is None:
                continue
            result.append(self._status(service, tasks.get(service["serviceName"], []), *parsed))
        result.sort(key=lambda s: (s.namespace, s.service_id))
        return result

    # -- writes -------------------------------------------------------------------------

    def _write(self, operation: str, *, idempotent: bool = True, **kwargs: Any) -> JsonDict:
        return self._clients.call("ecs", operation, idempotent=idempotent, **kwargs)

    def _task_definition(self, plan: EcsPlan, config_path: str) -> tuple[str, bool]:
        """ARN of a revision matching ``plan`` and ``config_path`` (the latest, when it does)
        and whether this call registered it (a failed start deregisters what it registered)."""
        latest = self.latest_revision(plan.family)
        if (
            latest is not None
            and spec_hash_of(latest) == plan.spec_hash
            and config_path_of(latest) == config_path
        ):
            return str(latest["taskDefinitionArn"]), False
        return self._register(plan.registration(config_path), plan.tags), True

    def _register(self, registration: JsonDict, tags: Tags) -> str:
        """Register ``registration``; its ARN. Not idempotent (each call is a revision), so
        ``Clients.call`` sends it again only when throttled; after a 5xx or a timeout,
        which may or may not have registered it, the newest revision is checked first."""
        family = str(registration["family"])
        for attempt in range(REGISTER_ATTEMPTS):
            try:
                registered = self._write(
                    "RegisterTaskDefinition", idempotent=False, tags=tags, **registration
                )["taskDefinition"]
                return str(registered["taskDefinitionArn"])
            except (BackendUnavailableError, BackendTimeoutError):
                if attempt + 1 == REGISTER_ATTEMPTS:
                    raise
            latest = self.latest_revision(family)
            if latest is not None and _same_definition(latest, registration):
                return str(latest["taskDefinitionArn"])
        raise AssertionError("unreachable")  # pragma: no cover

    def _deregister(self, arn: str) -> None:
        try:
            self._write("DeregisterTaskDefinition", taskDefinition=arn)
        except InfrastructureProviderError:
            log.warning("could not deregister %s after a failed start", arn, exc_info=True)

    def start(self, spec: DeploymentSpec, plan: EcsPlan, config_path: str) -> DeploymentStatus:
        """Converge onto ``plan`` (validated by the caller before any call), its tasks
        reading config generation ``config_path``."""
        existing = self.describe_one(spec.namespace, spec.service_id, draining=True)
        if existing is not None and existing.get("status") == "DRAINING":
            # ECS refuses the name until the deleted service's tasks have stopped
            # ("Unable to Start a service that is still Draining.", InvalidParameterException).
            raise BackendUnavailableError(
                f"{spec.namespace}/{spec.service_id} was deleted and ECS is still stopping "
                "its tasks; start it again in a few seconds",
                retry_after_seconds=DRAINING_RETRY_AFTER,
                metadata={"ecs_service_status": "DRAINING"},
            )
        # Every start (a read when it exists): a task whose group is missing cannot start.
        ensure_log_group(self._clients, plan.log_group, self._log_retention_days)
        if existing is None:
            self._create(spec, plan, config_path)
        else:
            self._converge(spec, plan, config_path, existing)
        return self.status(spec.namespace, spec.service_id)

    def _create(self, spec: DeploymentSpec, plan: EcsPlan, config_path: str) -> None:
        arn, registered = self._task_definition(plan, config_path)
        args: dict[str, Any] = {
            "cluster": self.cluster,
            "serviceName": plan.service_name,
            "taskDefinition": arn,
            "desiredCount": spec.replicas,
            "launchType": plan.launch_type,
            "networkConfiguration": plan.network,
            "deploymentConfiguration": DEPLOYMENT_CONFIGURATION,
            "tags": plan.tags,
            "propagateTags": "SERVICE",
            "enableECSManagedTags": True,
            # The same token on every attempt makes a retried CreateService idempotent.
            "clientToken": str(uuid.uuid4()),
        }
        if plan.platform_version:
            args["platformVersion"] = plan.platform_version
        try:
            self._write("CreateService", **args)
        except BaseException:
            if registered:
                self._deregister(arn)
            raise

    def _converge(
        self, spec: DeploymentSpec, plan: EcsPlan, config_path: str, service: JsonDict
    ) -> None:
        current_launch = service.get("launchType")
        if current_launch and current_launch != plan.launch_type:
            raise BackendRejectedError(
                f"{spec.namespace}/{spec.service_id} runs on {current_launch}; ECS cannot move "
                f"an existing service to {plan.launch_type}",
                metadata={"field": "spec.provider_options['launch_type']"},
            )
        updates: dict[str, Any] = {}
        registered: str | None = None
        running = self.task_definition(str(service["taskDefinition"]))
        if spec_hash_of(running) != plan.spec_hash or config_path_of(running) != config_path:
            arn, was_registered = self._task_definition(plan, config_path)
            registered = arn if was_registered else None
            updates["taskDefinition"] = arn
        else:
            self._abandon_newer(plan.family, str(running["taskDefinitionArn"]))
        if int(service.get("desiredCount", 0)) != spec.replicas:
            updates["desiredCount"] = spec.replicas
        if _network_differs(service.get("networkConfiguration") or {}, plan.network):
            updates["networkConfiguration"] = plan.network
        breaker = (service.get("deploymentConfiguration") or {}).get("deploymentCircuitBreaker")
        if breaker != CIRCUIT_BREAKER:
            updates["deploymentConfiguration"] = DEPLOYMENT_CONFIGURATION
        if updates:
            try:
                self._write(
                    "UpdateService", cluster=self.cluster, service=plan.service_name, **updates
                )
            except BaseException:
                if registered:
                    self._deregister(registered)
                raise
        self._sync_tags(service, plan)

    def _abandon_newer(self, family: str, running: str) -> None:
        """Deregister revisions newer than the one running (the spec asked for now): what
        is left of a deployment ECS rolled back, so the service reads RUNNING again."""
        running_number = int(running.rsplit(":", 1)[-1])
        newer: list[str] = []
        for page in self._clients.pages(
            "ecs",
            "ListTaskDefinitions",
            familyPrefix=family,
            status="ACTIVE",
            sort="DESC",
            maxResults=LIST_PAGE_SIZE,
        ):
            arns = [
                a
                for a in page.get("taskDefinitionArns", [])
                if _revision(a).split(":")[0] == family
            ]
            newer.extend(a for a in arns if int(a.rsplit(":", 1)[-1]) > running_number)
            if not arns or int(arns[-1].rsplit(":", 1)[-1]) <= running_number:
                break
        for arn in newer:
            self._write("DeregisterTaskDefinition", taskDefinition=arn)

    def _sync_tags(self, service: JsonDict, plan: EcsPlan) -> None:
        have = {t["key"]: t["value"] for t in service.get("tags", [])}
        want = {t["key"]: t["value"] for t in plan.tags}
        changed = [{"key": k, "value": v} for k, v in want.items() if have.get(k) != v]
        gone = [k for k in have if k not in want and not k.startswith(("aws:", "alphaswarm:"))]
        if gone:  # first, so the resource never holds old and new labels (50-tag limit)
            self._write("UntagResource", resourceArn=service["serviceArn"], tagKeys=gone)
        if changed:
            self._write("TagResource", resourceArn=service["serviceArn"], tags=changed)

    def scale(self, namespace: str, service_id: str, replicas: int) -> DeploymentStatus:
        service = self.require(namespace, service_id)
        if int(service.get("desiredCount", 0)) != replicas:
            self._write(
                "UpdateService",
                cluster=self.cluster,
                service=service["serviceName"],
                desiredCount=replicas,
            )
        return self.status(namespace, service_id)

    def roll_onto_config(self, namespace: str, service_id: str, config_path: str) -> None:
        """Run the service on config generation ``config_path``: a copy of its running
        revision that reads it, deployed (no-op when it already does)."""
        service = self.require(namespace, service_id)
        running = self.task_definition(str(service["taskDefinition"]))
        if config_path_of(running) == config_path:
            return
        arn = self._register(with_config_path(running, config_path), running.get("tags", []))
        try:
            self._write(
                "UpdateService",
                cluster=self.cluster,
                service=service["serviceName"],
                taskDefinition=arn,
            )
        except BaseException:
            self._deregister(arn)
            raise

    def check_cluster(self) -> JsonDict:
        described = self._clients.call("ecs", "DescribeClusters", clusters=[self.cluster])
        for cluster in described.get("clusters", []):
            if cluster.get("status") == "ACTIVE":
                return dict(cluster)
        raise InfrastructureProviderUnavailable(
            f"ECS cluster {self.cluster!r} (ALPHASWARM_AWS_ECS_CLUSTER) does not exist or is "
            f"not ACTIVE in region {self._clients.region or '(default)'}",
            reason=ErrorReason.CLUSTER_NOT_FOUND,
            metadata={"setting": "ALPHASWARM_AWS_ECS_CLUSTER", "cluster": self.cluster},
        )


def _same_definition(described: JsonDict, registration: JsonDict) -> bool:
    return spec_hash_of(described) == spec_hash_of(registration) and config_path_of(
        described
    ) == config_path_of(registration)


def _network_differs(have: JsonDict, want: JsonDict) -> bool:
    a = have.get("awsvpcConfiguration") or {}
    b = want.get("awsvpcConfiguration") or {}
    return (
        sorted(a.get("subnets", [])) != sorted(b.get("subnets", []))
        or sorted(a.get("securityGroups", [])) != sorted(b.get("securityGroups", []))
        or a.get("assignPublicIp", "DISABLED") != b.get("assignPublicIp", "DISABLED")
    )
