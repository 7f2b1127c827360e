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
deployment makes it DEGRADED, and so do recently stopped tasks of the current
revision that failed (read when fewer tasks run than desired): ECS stops counting
``failedTasks`` once a deployment has run a task ("Once a service deployment has one
or more successfully running tasks, the failed task count resets to zero and stops
being evaluated", Deployment.failedTasks, botocore ecs model), so a replacement
that cannot start after the rollout completed shows only in its stopped task.

Every service runs with ECS's deployment circuit breaker on
(``taskdef.deployment_configuration``): a deployment whose tasks keep failing to
start (a bad image, a missing role) stops launching tasks and turns ``rolloutState``
FAILED, which is what makes FAILED reachable (without the breaker ECS retries
forever). Its rollback is the spec's ``auto_rollback``: with it, ECS itself rolls the
service back to the last deployment that completed; without it, the service stays on
the failed revision, FAILED, while the tasks of the previous one keep serving.
rollout.py judges the rollout; revisions.py maps revisions onto task definitions.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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
from .rollout import Judgement, judge, newest_first, primary_deployment, stop_verdict
from .taskdef import (
    DEADLINE_TAG,
    EcsPlan,
    config_path_of,
    deadline_of,
    facts_of,
    labels_from_tags,
    parse_service_name,
    service_name,
    spec_hash_of,
)

log = logging.getLogger(__name__)

DESCRIBE_SERVICES_BATCH = 10
DESCRIBE_TASKS_BATCH = 100
LIST_PAGE_SIZE = 100
TASK_DEFINITION_CACHE = 256
Tags = list[dict[str, str]]
REGISTER_ATTEMPTS = 3
DRAINING_RETRY_AFTER = 5.0
STOPPED_TASKS_READ = 100
"""Stopped tasks read to judge a rollout: one ListTasks page (ECS lists stopped tasks for
about an hour: "Recently stopped tasks might appear in the returned results")."""


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a rollout is judged on beyond the service and its running tasks."""

    stopped: tuple[JsonDict, ...] = ()
    """Recently stopped tasks of the service (read while a rollout is not complete)."""
    rolled_back_from: int = 0
    rolled_back_since: datetime | None = None


NO_EVIDENCE = Evidence()


def _instances(service: JsonDict, tasks: list[JsonDict]) -> tuple[list[InstanceStatus], int]:
    """The tasks as instances (sorted) and how many of them run an older revision."""
    instances = []
    stale = 0
    for task in tasks:
        last = str(task.get("lastStatus", "UNKNOWN"))
        current = task_is_current(task, service)
        healthy = task.get("healthStatus") != "UNHEALTHY"
        if not current:
            stale += 1
        instances.append(
            InstanceStatus(
                instance_id=str(task.get("taskArn", "")).rsplit("/", 1)[-1],
                state=last.lower(),
                ready=last == "RUNNING" and current and healthy,
                message="" if current else "running a previous revision; being replaced",
                started_at=started
                if isinstance(started := task.get("startedAt"), datetime)
                else None,
            )
        )
    instances.sort(key=lambda item: item.instance_id)
    return instances, stale


def status_from(
    service: JsonDict,
    tasks: Iterable[JsonDict],
    *,
    namespace: str,
    service_id: str,
    alias: str,
    evidence: Evidence = NO_EVIDENCE,
) -> tuple[DeploymentStatus, Judgement]:
    """DeploymentStatus of one ECS service and its (RUNNING-desired) tasks, and the
    judgement of its rollout."""
    desired = int(service.get("desiredCount", 0))
    primary = primary_deployment(service)
    tasks = list(tasks)
    instances, stale = _instances(service, tasks)
    ready = sum(1 for item in instances if item.ready)
    judgement = judge(
        service,
        tasks,
        stopped=evidence.stopped,
        rolled_back_from=evidence.rolled_back_from,
        rolled_back_since=evidence.rolled_back_since,
        deadline_seconds=deadline_of(list(service.get("tags", []))),
    )
    failing = [
        verdict
        for task in newest_first(evidence.stopped)
        if task.get("taskDefinitionArn") == service.get("taskDefinition")
        and (verdict := stop_verdict(task)) is not None
    ]
    failed = max(int(primary.get("failedTasks", 0) or 0), len(failing))
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
    elif judgement.failed:
        assert judgement.rollout is not None
        state = DeploymentState.FAILED
        message = f"rollout of revision {judgement.revision} failed: {judgement.rollout.message}"
    elif ready >= desired and stale == 0:
        state = DeploymentState.RUNNING
        message = counts
    elif failed:
        state = DeploymentState.DEGRADED
        message = f"{counts}; {failed} task(s) failed" + (
            f", the last: {failing[0].message}" if failing else " to start"
        )
    else:
        state = DeploymentState.PENDING
        message = counts
        if judgement.rollout is not None and judgement.rollout.reason:
            message = f"{counts}; {judgement.rollout.message}"
    updated = primary.get("updatedAt") or primary.get("createdAt")
    status = DeploymentStatus(
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
        revision=judgement.revision,
        observed_revision=judgement.observed,
        rollout=judgement.rollout,
        conditions=judgement.conditions,
    )
    return status, judgement


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

    @property
    def clients(self) -> Clients:
        return self._clients

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

    def stopped_tasks(self, service: str) -> list[JsonDict]:
        """The service's recently stopped tasks, described (one page: ``STOPPED_TASKS_READ``)."""
        listed = self._clients.call(
            "ecs",
            "ListTasks",
            cluster=self.cluster,
            serviceName=service,
            desiredStatus="STOPPED",
            maxResults=STOPPED_TASKS_READ,
        ).get("taskArns", [])
        found: list[JsonDict] = []
        for batch in _batches(list(listed), DESCRIBE_TASKS_BATCH):
            page = self._clients.call("ecs", "DescribeTasks", cluster=self.cluster, tasks=batch)
            found.extend(page.get("tasks", []))
        return found

    def observe(self, namespace: str, service_id: str) -> tuple[DeploymentStatus, list[JsonDict]]:
        """The status as ECS's deployments show it (no stopped tasks read, no claims: see
        revisions.py for the full one) and the tasks counted ready in it (metrics size CPU
        and memory from those)."""
        service = self.require(namespace, service_id)
        name = service["serviceName"]
        tasks = self.tasks(name).get(name, [])
        status, _ = self.status_of(service, tasks, namespace, service_id)
        ready = [
            t for t in tasks if t.get("lastStatus") == "RUNNING" and task_is_current(t, service)
        ]
        return status, ready

    def status_of(
        self,
        service: JsonDict,
        tasks: list[JsonDict],
        namespace: str,
        service_id: str,
        evidence: Evidence = NO_EVIDENCE,
    ) -> tuple[DeploymentStatus, Judgement]:
        return status_from(
            service,
            tasks,
            namespace=namespace,
            service_id=service_id,
            alias=self._alias,
            evidence=evidence,
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
            found = tasks.get(service["serviceName"], [])
            result.append(self.status_of(service, found, *parsed)[0])
        result.sort(key=lambda s: (s.namespace, s.service_id))
        return result

    # -- writes -------------------------------------------------------------------------

    def _write(self, operation: str, *, idempotent: bool = True, **kwargs: Any) -> JsonDict:
        return self._clients.call("ecs", operation, idempotent=idempotent, **kwargs)

    def register(self, registration: JsonDict, tags: Tags) -> str:
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
            if latest is not None and same_registration(latest, registration):
                return str(latest["taskDefinitionArn"])
        raise AssertionError("unreachable")  # pragma: no cover

    def deregister(self, arn: str) -> None:
        """Deregister a revision this call registered and did not deploy (quietly)."""
        try:
            self._write("DeregisterTaskDefinition", taskDefinition=arn)
        except InfrastructureProviderError:
            log.warning("could not deregister %s after a failed change", arn, exc_info=True)

    def prepare(self, spec: DeploymentSpec, plan: EcsPlan) -> JsonDict | None:
        """What ``start`` does before it changes anything: refuse a name ECS still drains,
        make sure the log group exists; the service when it exists."""
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
        return existing

    def create_service(self, spec: DeploymentSpec, plan: EcsPlan, arn: str) -> None:
        args: dict[str, Any] = {
            "cluster": self.cluster,
            "serviceName": plan.service_name,
            "taskDefinition": arn,
            "desiredCount": spec.replicas,
            "launchType": plan.launch_type,
            "networkConfiguration": plan.network,
            "deploymentConfiguration": plan.deployment_configuration,
            "tags": plan.service_tags,
            "propagateTags": "SERVICE",
            "enableECSManagedTags": True,
            # The same token on every attempt makes a retried CreateService idempotent.
            "clientToken": str(uuid.uuid4()),
        }
        if plan.platform_version:
            args["platformVersion"] = plan.platform_version
        self._write("CreateService", **args)

    def update_service(
        self,
        service: JsonDict,
        *,
        plan: EcsPlan | None = None,
        replicas: int | None = None,
        task_definition: str = "",
    ) -> bool:
        """Bring ``service`` to ``plan`` (network, breaker), ``replicas`` and
        ``task_definition``, in one UpdateService when anything differs; whether it did."""
        updates: dict[str, Any] = {}
        if plan is not None:
            current_launch = service.get("launchType")
            if current_launch and current_launch != plan.launch_type:
                parsed = parse_service_name(str(service["serviceName"])) or ("", "")
                raise BackendRejectedError(
                    f"{parsed[0]}/{parsed[1]} runs on {current_launch}; ECS cannot move an "
                    f"existing service to {plan.launch_type}",
                    metadata={"field": "spec.provider_options['launch_type']"},
                )
            if _network_differs(service.get("networkConfiguration") or {}, plan.network):
                updates["networkConfiguration"] = plan.network
            have = (service.get("deploymentConfiguration") or {}).get("deploymentCircuitBreaker")
            if have != plan.deployment_configuration["deploymentCircuitBreaker"]:
                updates["deploymentConfiguration"] = plan.deployment_configuration
        if task_definition and task_definition != service.get("taskDefinition"):
            updates["taskDefinition"] = task_definition
        if replicas is not None and int(service.get("desiredCount", 0)) != replicas:
            updates["desiredCount"] = replicas
        if not updates:
            return False
        name = service["serviceName"]
        self._write("UpdateService", cluster=self.cluster, service=name, **updates)
        return True

    def sync_tags(self, service: JsonDict, plan: EcsPlan) -> None:
        have = {t["key"]: t["value"] for t in service.get("tags", [])}
        want = {t["key"]: t["value"] for t in plan.service_tags}
        changed = [{"key": k, "value": v} for k, v in want.items() if have.get(k) != v]
        gone = [
            k
            for k in have
            if k not in want and (k == DEADLINE_TAG or not k.startswith(("aws:", "alphaswarm:")))
        ]
        if gone:  # first, so the resource never holds old and new labels (50-tag limit)
            self._write("UntagResource", resourceArn=service["serviceArn"], tagKeys=gone)
        if changed:
            self._write("TagResource", resourceArn=service["serviceArn"], tags=changed)

    def scale(self, service: JsonDict, replicas: int) -> None:
        self.update_service(service, replicas=replicas)

    def retry_deployment(self, service: JsonDict) -> None:
        """Deploy the service's task definition again ("start a new deployment with no
        service definition changes", UpdateServiceRequest.forceNewDeployment): what a
        deployment the circuit breaker failed needs to be tried again."""
        self._write(
            "UpdateService",
            cluster=self.cluster,
            service=service["serviceName"],
            forceNewDeployment=True,
        )

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


def same_registration(described: JsonDict, registration: JsonDict) -> bool:
    """Whether ``described`` is ``registration`` registered: the same spec, config and
    facts (a rollback to what runs differs in its facts only)."""
    return (
        spec_hash_of(described) == spec_hash_of(registration)
        and config_path_of(described) == config_path_of(registration)
        and facts_of(described) == facts_of(registration)
    )


def _network_differs(have: JsonDict, want: JsonDict) -> bool:
    a = have.get("awsvpcConfiguration") or {}
    b = want.get("awsvpcConfiguration") or {}
    return (
        sorted(a.get("subnets", [])) != sorted(b.get("subnets", []))
        or sorted(a.get("securityGroups", [])) != sorted(b.get("securityGroups", []))
        or a.get("assignPublicIp", "DISABLED") != b.get("assignPublicIp", "DISABLED")
    )
