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
numbers agree once a deployment settles. ``rolloutState`` decides FAILED, and
``failedTasks`` of the primary deployment DEGRADED.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from alphaswarm_core.providers.protocol import (
    BackendRejectedError,
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
from .taskdef import (
    SPEC_HASH_LABEL,
    EcsPlan,
    labels_from_tags,
    parse_service_name,
    plan_for,
    service_name,
)

log = logging.getLogger(__name__)

DESCRIBE_SERVICES_BATCH = 10
DESCRIBE_TASKS_BATCH = 100
LIST_PAGE_SIZE = 100


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


def status_from(
    service: JsonDict, tasks: Iterable[JsonDict], *, namespace: str, service_id: str, alias: str
) -> DeploymentStatus:
    """DeploymentStatus of one ECS service and its (RUNNING-desired) tasks."""
    desired = int(service.get("desiredCount", 0))
    primary = primary_deployment(service)
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
    elif rollout == "FAILED":
        state = DeploymentState.FAILED
        message = str(primary.get("rolloutStateReason") or "ECS deployment failed")
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
        updated_at=updated if isinstance(updated, datetime) else datetime.now(UTC),
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
        self, clients: Clients, cluster: str, settings: Mapping[str, str], alias: str
    ) -> None:
        self._clients = clients
        self.cluster = cluster
        self._settings = settings
        self._alias = alias

    # -- reads --------------------------------------------------------------------------

    def describe(self, names: list[str]) -> list[JsonDict]:
        """ACTIVE/DRAINING services among ``names``, DescribeServices in batches of 10."""
        found: list[JsonDict] = []
        for batch in _batches(names, DESCRIBE_SERVICES_BATCH):
            page = self._clients.call(
                "ecs", "DescribeServices", cluster=self.cluster, services=batch, include=["TAGS"]
            )
            found.extend(s for s in page.get("services", []) if s.get("status") != "INACTIVE")
        return found

    def describe_one(self, namespace: str, service_id: str) -> JsonDict | None:
        found = self.describe([service_name(namespace, service_id)])
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

    def status(self, namespace: str, service_id: str) -> DeploymentStatus:
        return self.observe(namespace, service_id)[0]

    def observe(self, namespace: str, service_id: str) -> tuple[DeploymentStatus, list[JsonDict]]:
        """The status and the tasks counted ready in it (metrics size memory from those)."""
        service = self.require(namespace, service_id)
        name = service["serviceName"]
        tasks = self.tasks(name).get(name, [])
        status = self._status(service, tasks, namespace, service_id)
        ready = [
            t for t in tasks if t.get("lastStatus") == "RUNNING" and task_is_current(t, service)
        ]
        return status, ready

    def _status(
        self, service: JsonDict, tasks: list[JsonDict], namespace: str, service_id: str
    ) -> DeploymentStatus:
        return status_from(
            service, tasks, namespace=namespace, service_id=service_id, alias=self._alias
        )

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

    def spec_hash_of(self, task_definition: str) -> str:
        described = self._clients.call(
            "ecs", "DescribeTaskDefinition", taskDefinition=task_definition
        )["taskDefinition"]
        for container in described.get("containerDefinitions", []):
            labels = container.get("dockerLabels") or {}
            if SPEC_HASH_LABEL in labels:
                return str(labels[SPEC_HASH_LABEL])
        return ""

    # -- writes -------------------------------------------------------------------------

    def _write(self, operation: str, **kwargs: Any) -> JsonDict:
        return self._clients.call("ecs", operation, write=True, **kwargs)

    def _task_definition(self, plan: EcsPlan) -> tuple[str, bool]:
        """ARN of a revision matching ``plan`` (the latest, when it does) and whether this call
        registered it (so a failed start can deregister what it registered)."""
        latest = self._clients.call(
            "ecs",
            "ListTaskDefinitions",
            familyPrefix=plan.family,
            status="ACTIVE",
            sort="DESC",
            maxResults=1,
        ).get("taskDefinitionArns", [])
        same_family = bool(latest) and latest[0].rsplit("/", 1)[-1].split(":")[0] == plan.family
        if same_family and self.spec_hash_of(latest[0]) == plan.spec_hash:
            return latest[0], False
        registered = self._write("RegisterTaskDefinition", tags=plan.tags, **plan.register_args)[
            "taskDefinition"
        ]
        return str(registered["taskDefinitionArn"]), True

    def _deregister(self, arn: str) -> None:
        try:
            self._write("DeregisterTaskDefinition", taskDefinition=arn)
        except InfrastructureProviderError:
            log.warning("could not deregister %s after a failed start", arn, exc_info=True)

    def start(self, spec: DeploymentSpec) -> DeploymentStatus:
        plan = plan_for(spec, self._settings)  # raises before any AWS call
        existing = self.describe_one(spec.namespace, spec.service_id)
        if existing is None:
            self._create(spec, plan)
        else:
            self._converge(spec, plan, existing)
        return self.status(spec.namespace, spec.service_id)

    def _create(self, spec: DeploymentSpec, plan: EcsPlan) -> None:
        arn, registered = self._task_definition(plan)
        args: dict[str, Any] = {
            "cluster": self.cluster,
            "serviceName": plan.service_name,
            "taskDefinition": arn,
            "desiredCount": spec.replicas,
            "launchType": plan.launch_type,
            "networkConfiguration": plan.network,
            "tags": plan.tags,
            "propagateTags": "SERVICE",
            "enableECSManagedTags": True,
        }
        if plan.platform_version:
            args["platformVersion"] = plan.platform_version
        try:
            self._write("CreateService", **args)
        except BaseException:
            if registered:
                self._deregister(arn)
            raise

    def _converge(self, spec: DeploymentSpec, plan: EcsPlan, service: JsonDict) -> None:
        current_launch = service.get("launchType")
        if current_launch and current_launch != plan.launch_type:
            raise BackendRejectedError(
                f"{spec.namespace}/{spec.service_id} runs on {current_launch}; ECS cannot move "
                f"an existing service to {plan.launch_type}",
                metadata={"field": "spec.provider_options['launch_type']"},
            )
        updates: dict[str, Any] = {}
        registered: str | None = None
        if self.spec_hash_of(service["taskDefinition"]) != plan.spec_hash:
            arn, was_registered = self._task_definition(plan)
            registered = arn if was_registered else None
            updates["taskDefinition"] = arn
        if int(service.get("desiredCount", 0)) != spec.replicas:
            updates["desiredCount"] = spec.replicas
        if _network_differs(service.get("networkConfiguration") or {}, plan.network):
            updates["networkConfiguration"] = plan.network
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

    def _sync_tags(self, service: JsonDict, plan: EcsPlan) -> None:
        have = {t["key"]: t["value"] for t in service.get("tags", [])}
        want = {t["key"]: t["value"] for t in plan.tags}
        changed = [{"key": k, "value": v} for k, v in want.items() if have.get(k) != v]
        gone = [k for k in have if k not in want and not k.startswith(("aws:", "alphaswarm:"))]
        if changed:
            self._write("TagResource", resourceArn=service["serviceArn"], tags=changed)
        if gone:
            self._write("UntagResource", resourceArn=service["serviceArn"], tagKeys=gone)

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

    def redeploy(self, namespace: str, service_id: str) -> None:
        """Roll every task (new config is read at task start)."""
        service = self.require(namespace, service_id)
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


def _network_differs(have: JsonDict, want: JsonDict) -> bool:
    a = have.get("awsvpcConfiguration") or {}
    b = want.get("awsvpcConfiguration") or {}
    return (
        sorted(a.get("subnets", [])) != sorted(b.get("subnets", []))
        or sorted(a.get("securityGroups", [])) != sorted(b.get("securityGroups", []))
        or a.get("assignPublicIp", "DISABLED") != b.get("assignPublicIp", "DISABLED")
    )
