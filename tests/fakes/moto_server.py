"""moto in server mode plus the part of ECS that moto leaves out: the service scheduler.

moto's ECS keeps services as records: it never starts their tasks (its
``runningCount`` is 0 after CreateService and jumps to desiredCount on any
UpdateService), and it publishes no CloudWatch metrics. ``FakeEcsScheduler``
plays the ECS service scheduler and the ECS metrics publisher against moto over
HTTP, through the public API only, the way ECS itself behaves:

* for each ACTIVE service, RUNNING tasks of its group (``service:<name>``) on
  its current task definition and primary deployment are counted; missing ones
  are started with RunTask (``startedBy`` = the deployment id, the service's
  launch type and awsvpc configuration), surplus and outdated ones (another
  revision, or a deployment replaced by forceNewDeployment) are stopped;
* as soon as a service has tasks, then every second, CPUUtilization and
  MemoryUtilization are put into CloudWatch under ``AWS/ECS`` with the
  ClusterName/ServiceName dimensions.

moto advances a task's state each time DescribeTasks sees it (RUNNING ->
DEACTIVATING -> ... after one look by default); ``start_moto`` sets that
transition to manual with an unreachable count through moto's own
``/moto-api/state-manager`` endpoint, so tasks stay RUNNING until stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from moto.server import ThreadedMotoServer

log = logging.getLogger(__name__)

REGION = "us-east-1"
CPU_PERCENT = 12.5
MEMORY_PERCENT = 37.5


@dataclass
class MotoAws:
    """A running moto server and what a provider needs to reach it."""

    url: str
    server: Any
    region: str = REGION
    network: dict[str, str] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.url,
            **extra,
        }

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            region_name=self.region,
            endpoint_url=self.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"mode": "standard", "total_max_attempts": 3}),
        )


def _moto_api(url: str, path: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{url}/moto-api/{path}", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@contextlib.contextmanager
def start_moto() -> Iterator[MotoAws]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one INFO line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    aws = MotoAws(url=f"http://{host}:{port}", server=server)
    try:
        # moto's backends are process-global: start each bed from an empty account.
        _moto_api(aws.url, "reset", {})
        _moto_api(
            aws.url,
            "state-manager/set-transition",
            {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 10**9}},
        )
        yield aws
    finally:
        server.stop()


def make_network(aws: MotoAws) -> dict[str, str]:
    """A VPC (DNS hostnames on, as Fargate needs), one subnet and one security group."""
    ec2 = aws.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="alphaswarm", Description="tests", VpcId=vpc)
    return {"vpc": vpc, "subnet": subnet, "security_group": group["GroupId"]}


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class FakeEcsScheduler:
    """Keeps each ECS service's tasks at its desiredCount and publishes its metrics."""

    def __init__(
        self, aws: MotoAws, cluster: str, interval: float = 0.1, publish_metrics: bool = True
    ) -> None:
        self.aws = aws
        self.publish_metrics = publish_metrics
        self.cluster = cluster
        self.interval = interval
        self.metrics_interval = 1.0
        self._ecs = aws.client("ecs")
        self._cloudwatch = aws.client("cloudwatch")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-ecs-scheduler", daemon=True)
        self._published: dict[str, float] = {}
        self.passes = 0

    def __enter__(self) -> FakeEcsScheduler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile()
            except Exception:  # the next pass retries; a test sees the effect, not the error
                log.debug("fake ECS scheduler pass failed", exc_info=True)
            self.passes += 1
            self._stop.wait(self.interval)

    def _services(self) -> list[dict[str, Any]]:
        arns = self._ecs.list_services(cluster=self.cluster).get("serviceArns", [])
        services: list[dict[str, Any]] = []
        for batch in _batches(arns, 10):
            found = self._ecs.describe_services(cluster=self.cluster, services=batch)
            services.extend(s for s in found["services"] if s.get("status") == "ACTIVE")
        return services

    def _tasks(self) -> dict[str, list[dict[str, Any]]]:
        arns = self._ecs.list_tasks(cluster=self.cluster, desiredStatus="RUNNING")["taskArns"]
        grouped: dict[str, list[dict[str, Any]]] = {}
        for batch in _batches(arns, 100):
            for task in self._ecs.describe_tasks(cluster=self.cluster, tasks=batch)["tasks"]:
                if task.get("lastStatus") == "RUNNING":
                    grouped.setdefault(task.get("group", ""), []).append(task)
        return grouped

    def reconcile(self) -> None:
        services = self._services()
        tasks = self._tasks()
        now = datetime.now(UTC).timestamp()
        metric_data: list[dict[str, Any]] = []
        for service in services:
            name = service["serviceName"]
            primary: dict[str, Any] = next(
                (d for d in service.get("deployments", []) if d.get("status") == "PRIMARY"), {}
            )
            deployment = primary.get("id", "")
            mine = tasks.get(f"service:{name}", [])
            current = [
                t
                for t in mine
                if t["taskDefinitionArn"] == service["taskDefinition"]
                and t.get("startedBy") == deployment
            ]
            outdated = [t for t in mine if t not in current]
            surplus = current[service["desiredCount"] :]
            for task in outdated + surplus:
                self._ecs.stop_task(
                    cluster=self.cluster, task=task["taskArn"], reason="replaced by scheduler"
                )
            missing = service["desiredCount"] - len(current)
            if missing > 0:
                args: dict[str, Any] = {
                    "cluster": self.cluster,
                    "taskDefinition": service["taskDefinition"],
                    "count": missing,
                    "group": f"service:{name}",
                    "startedBy": deployment,
                    "launchType": service.get("launchType") or "FARGATE",
                }
                if service.get("networkConfiguration"):
                    args["networkConfiguration"] = service["networkConfiguration"]
                self._ecs.run_task(**args)
            due = now - self._published.get(name, 0.0) >= self.metrics_interval
            if (
                self.publish_metrics
                and due
                and service["desiredCount"]
                and (current or missing > 0)
            ):
                self._published[name] = now
                metric_data.extend(self._metric_data(name))
        if metric_data:
            for batch in range(0, len(metric_data), 20):
                self._cloudwatch.put_metric_data(
                    Namespace="AWS/ECS", MetricData=metric_data[batch : batch + 20]
                )

    def _metric_data(self, service: str) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        dimensions = [
            {"Name": "ClusterName", "Value": self.cluster},
            {"Name": "ServiceName", "Value": service},
        ]
        return [
            {
                "MetricName": metric,
                "Dimensions": dimensions,
                "Timestamp": now,
                "Value": value,
                "Unit": "Percent",
            }
            for metric, value in (
                ("CPUUtilization", CPU_PERCENT),
                ("MemoryUtilization", MEMORY_PERCENT),
            )
        ]


# -- pytest fixtures (import them by name into a test module) ----------------------------------

CLUSTER = "alphaswarm-test"
IMAGE = "public.ecr.aws/nginx/nginx:1.27"


@dataclass
class EcsTestBed:
    aws: MotoAws
    cluster: str
    network: dict[str, str]
    scheduler: FakeEcsScheduler

    def provider_env(self, **extra: str) -> dict[str, str]:
        settings = {
            "ALPHASWARM_AWS_ECS_CLUSTER": self.cluster,
            "ALPHASWARM_AWS_SUBNETS": self.network["subnet"],
            "ALPHASWARM_AWS_SECURITY_GROUPS": self.network["security_group"],
        }
        return self.aws.env(**{**settings, **extra})


@contextlib.contextmanager
def ecs_test_bed(*, publish_metrics: bool = True) -> Iterator[EcsTestBed]:
    with start_moto() as aws:
        network = make_network(aws)
        aws.client("ecs").create_cluster(clusterName=CLUSTER)
        with FakeEcsScheduler(aws, CLUSTER, publish_metrics=publish_metrics) as scheduler:
            yield EcsTestBed(aws, CLUSTER, network, scheduler)
