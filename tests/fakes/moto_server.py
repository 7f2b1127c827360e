"""moto in server mode behind the AWS front: the backend of the aws provider's tests.

moto is the AWS backend (its services over HTTP, through the real boto3 clients).
What moto leaves out or accepts too readily is added in front of it
(``aws_front``): the services' documented limits (``aws_rules``), fault injection
through the shared ``faults.Faults`` answered in each service's wire form, and
the ECS control plane (``ecs_control``: deployments, scheduler, circuit breaker,
start-up and stop time, deletion, metrics, paging, and the tasks' output written to
moto's CloudWatch Logs by an emulated ``awslogs`` driver, ``awslogs_driver``).

The provider is pointed at the front (``MotoAws.env``); tests read and arrange
state through moto directly (``MotoAws.client``), which no fault touches.

moto advances a task's state each time DescribeTasks sees it (RUNNING ->
DEACTIVATING -> ... after one look by default); ``start_moto`` sets that
transition to manual with an unreachable count through moto's own
state manager (``_reset_moto``): task states are the control plane's.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from moto.moto_api._internal.models import moto_api_backend
from moto.server import ThreadedMotoServer

from .aws_front import AwsFront
from .aws_rules import RuleContext
from .awslogs_driver import FLUSH_SECONDS, AwsLogsDriver
from .ecs_control import CPU_PERCENT, MEMORY_PERCENT, EcsControlPlane
from .faults import Faults

__all__ = [
    "CLUSTER",
    "CPU_PERCENT",
    "CRASHING_COMMAND",
    "EXECUTION_ROLE",
    "IMAGE",
    "MEMORY_PERCENT",
    "MISSING_IMAGE",
    "EcsTestBed",
    "MotoAws",
    "ecs_test_bed",
    "start_moto",
]

REGION = "us-east-1"
CLUSTER = "alphaswarm-test"
IMAGE = "public.ecr.aws/nginx/nginx:1.27"
"""The one image the emulated registry serves; any other fails to pull."""
MISSING_IMAGE = "public.ecr.aws/nginx/nginx:no-such-tag"
"""An image the emulated registry does not have: its tasks stop with CannotPullContainerError."""
CRASHING_COMMAND = ("sh", "-c", "exit 3")
"""A command whose container exits at once with status 3 (ecs_control.exit_code_of)."""
EXECUTION_ROLE = "arn:aws:iam::123456789012:role/alphaswarm-task-execution"


@dataclass
class MotoAws:
    """A running moto server, the front the provider talks to, and the front's faults."""

    direct_url: str
    server: Any
    front: AwsFront
    region: str = REGION
    network: dict[str, str] = field(default_factory=dict)
    _shared: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return self.front.url

    @property
    def faults(self) -> Faults:
        return self.front.faults

    def env(self, **extra: str) -> dict[str, str]:
        """A provider's environment: test credentials, the front as every endpoint."""
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.front.url,
            **extra,
        }

    def client(self, service: str) -> Any:
        """A client of moto itself (no faults, no front): for arranging and inspecting."""
        return boto3.client(
            service,
            region_name=self.region,
            endpoint_url=self.direct_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"mode": "standard", "total_max_attempts": 3}),
        )

    def front_client(self, service: str) -> Any:
        """A client of the front: what the provider sees (ECS deployments as ECS keeps
        them), faults included."""
        return boto3.client(
            service,
            region_name=self.region,
            endpoint_url=self.front.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
        )

    def shared_client(self, service: str) -> Any:
        """One moto client per service for the emulator's own threads (clients are
        thread-safe; building one takes tens of milliseconds)."""
        with self._lock:
            if service not in self._shared:
                self._shared[service] = self.client(service)
            return self._shared[service]


def _reset_moto() -> None:
    """Empty every moto backend and make ECS task states manual (module docstring).

    moto's backends are process-global and its server runs in this process
    (ThreadedMotoServer), so these are the calls ``POST /moto-api/reset`` and
    ``/moto-api/state-manager/set-transition`` make, without the socket: a read
    timeout on them was outrun once on a loaded CI machine (aws@lowest), and a reset
    that hangs now shows its threads' stacks through pytest-timeout instead.
    """
    moto_api_backend.reset()
    moto_api_backend.set_transition("ecs::task", {"progression": "manual", "times": 10**9})


@contextlib.contextmanager
def start_moto(
    *, ecs: EcsControlPlane | None = None, faults: Faults | None = None
) -> Iterator[MotoAws]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one INFO line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    direct = f"http://{host}:{port}"
    front = AwsFront(
        direct, faults=faults, rules=RuleContext(lambda: aws.shared_client("ecs")), ecs=ecs
    )
    aws = MotoAws(direct_url=direct, server=server, front=front)
    try:
        _reset_moto()  # start each bed from an empty account
        with front:
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


@dataclass
class EcsTestBed:
    aws: MotoAws
    cluster: str
    network: dict[str, str]
    ecs: EcsControlPlane

    @property
    def faults(self) -> Faults:
        return self.aws.faults

    def provider_env(self, **extra: str) -> dict[str, str]:
        settings = {
            "ALPHASWARM_AWS_ECS_CLUSTER": self.cluster,
            "ALPHASWARM_AWS_SUBNETS": self.network["subnet"],
            "ALPHASWARM_AWS_SECURITY_GROUPS": self.network["security_group"],
            "ALPHASWARM_AWS_EXECUTION_ROLE_ARN": EXECUTION_ROLE,
        }
        return self.aws.env(**{**settings, **extra})


@contextlib.contextmanager
def ecs_test_bed(
    *,
    publish_metrics: bool = True,
    start_seconds: float = 0.3,
    stop_seconds: float = 0.3,
    crash_seconds: float = 0.3,
    log_flush_seconds: float = FLUSH_SECONDS,
    faults: Faults | None = None,
) -> Iterator[EcsTestBed]:
    holder: dict[str, MotoAws] = {}
    control = EcsControlPlane(
        lambda: holder["aws"].shared_client("ecs"),
        lambda: holder["aws"].shared_client("cloudwatch"),
        logs=AwsLogsDriver(
            lambda: holder["aws"].shared_client("logs"), flush_seconds=log_flush_seconds
        ),
        pullable={IMAGE},
        start_seconds=start_seconds,
        stop_seconds=stop_seconds,
        crash_seconds=crash_seconds,
        publish_metrics=publish_metrics,
    )
    with start_moto(ecs=control, faults=faults) as aws:
        holder["aws"] = aws
        network = make_network(aws)
        aws.client("ecs").create_cluster(clusterName=CLUSTER)
        with control:
            yield EcsTestBed(aws, CLUSTER, network, control)
