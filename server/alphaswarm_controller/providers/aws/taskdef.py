"""DeploymentSpec -> ECS task definition and service networking, without any AWS call.

Everything ECS cannot express is rejected here, naming the spec field, before
the provider talks to AWS, so a bad spec never leaves a half-registered
revision behind.

Names: a service ``web`` in namespace ``shop`` is the ECS service (and task
definition family) ``alphaswarm_shop_web``. ``_`` cannot occur in a DNS-1123
label, so the name maps back to exactly one (namespace, service_id), and the
prefix keeps list_deployments off services this controller did not create.

Rules checked here, each as ECS documents it (ECS API reference, botocore ecs
2014-11-13 model):

* tags: at most 50 per resource (CreateService ``tags``: "Maximum number of
  tags per resource - 50"; ``aws:`` tags do not count); the provider adds its
  own ``OWN_TAGS``, so labels get the rest;
* ``assign_public_ip`` only with Fargate: tasks of the EC2 launch type in awsvpc
  mode get no public address and ECS refuses ``assignPublicIp=ENABLED`` for them
  ("Assign public IP is not supported for this launch type");
* container output goes to CloudWatch Logs (``awslogs``, group
  ``/alphaswarm/<namespace>/<service_id>``): on Fargate the awslogs driver needs
  a task execution role (ECS refuses the task definition without one), so a
  Fargate spec without ``execution_role_arn`` is rejected.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from alphaswarm_core.providers.protocol import DeploymentSpec, FieldViolation, InvalidSpecError

NAME_PREFIX = "alphaswarm_"
CONTAINER_NAME = "app"
SPEC_HASH_LABEL = "alphaswarm.spec-hash"
CONFIG_PATH_ENV = "ALPHASWARM_CONFIG_SSM_PATH"
LAUNCH_TYPES = ("FARGATE", "EC2")
MAX_TAGS = 50
OWN_TAGS = ("alphaswarm:namespace", "alphaswarm:service-id")
LOG_STREAM_PREFIX = "alphaswarm"

#: Fargate's valid task sizes: CPU units -> allowed memory (MiB).
FARGATE_SIZES: Mapping[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4096 + 1, 1024)),
    1024: tuple(range(2048, 8192 + 1, 1024)),
    2048: tuple(range(4096, 16384 + 1, 1024)),
    4096: tuple(range(8192, 30720 + 1, 1024)),
    8192: tuple(range(16384, 61440 + 1, 4096)),
    16384: tuple(range(32768, 122880 + 1, 8192)),
}
DEFAULT_CPU_UNITS = 256
DEFAULT_MEMORY_MIB = 512
EC2_MIN_MEMORY_MIB = 6

#: provider_options keys this provider understands (and the setting each defaults from).
OPTION_SETTINGS: Mapping[str, str] = {
    "launch_type": "LAUNCH_TYPE",
    "subnets": "SUBNETS",
    "security_groups": "SECURITY_GROUPS",
    "assign_public_ip": "ASSIGN_PUBLIC_IP",
    "execution_role_arn": "EXECUTION_ROLE_ARN",
    "task_role_arn": "TASK_ROLE_ARN",
    "platform_version": "PLATFORM_VERSION",
}


def service_name(namespace: str, service_id: str) -> str:
    return f"{NAME_PREFIX}{namespace}_{service_id}"


def parse_service_name(name: str) -> tuple[str, str] | None:
    """(namespace, service_id) of an ECS service this controller created, else None."""
    name = name.rsplit("/", 1)[-1]
    if not name.startswith(NAME_PREFIX):
        return None
    parts = name[len(NAME_PREFIX) :].split("_")
    if len(parts) != 2 or not all(parts):
        return None
    return parts[0], parts[1]


def log_group(namespace: str, service_id: str) -> str:
    return f"/alphaswarm/{namespace}/{service_id}"


def config_path_of(task_definition: Mapping[str, Any]) -> str:
    """The config generation a (described) task definition's tasks read, "" if none."""
    for container in task_definition.get("containerDefinitions", []):
        for item in container.get("environment") or []:
            if item.get("name") == CONFIG_PATH_ENV:
                return str(item.get("value", ""))
    return ""


def spec_hash_of(task_definition: Mapping[str, Any]) -> str:
    for container in task_definition.get("containerDefinitions", []):
        labels = container.get("dockerLabels") or {}
        if SPEC_HASH_LABEL in labels:
            return str(labels[SPEC_HASH_LABEL])
    return ""


#: RegisterTaskDefinition's request members that DescribeTaskDefinition returns too
#: (what a copy of a revision must carry; the rest of a description is ECS's own).
REGISTER_FIELDS = (
    "family",
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "containerDefinitions",
    "volumes",
    "placementConstraints",
    "requiresCompatibilities",
    "cpu",
    "memory",
    "pidMode",
    "ipcMode",
    "proxyConfiguration",
    "inferenceAccelerators",
    "ephemeralStorage",
    "runtimePlatform",
)


def with_config_path(registration: Mapping[str, Any], path: str) -> dict[str, Any]:
    """A copy of ``registration`` whose containers read config generation ``path``."""
    args = copy.deepcopy({k: v for k, v in registration.items() if k in REGISTER_FIELDS})
    for container in args.get("containerDefinitions", []):
        environment = [
            item for item in container.get("environment") or [] if item["name"] != CONFIG_PATH_ENV
        ]
        environment.append({"name": CONFIG_PATH_ENV, "value": path})
        container["environment"] = sorted(environment, key=lambda item: str(item["name"]))
    return args


@dataclass(frozen=True, slots=True)
class EcsPlan:
    """What ``start`` registers and creates for one spec."""

    family: str
    service_name: str
    launch_type: str
    register_args: dict[str, Any]
    """The task definition without ``ALPHASWARM_CONFIG_SSM_PATH`` (see ``registration``)."""
    network: dict[str, Any]
    spec_hash: str
    log_group: str
    platform_version: str = ""
    tags: list[dict[str, str]] = field(default_factory=list)

    def registration(self, config_path: str) -> dict[str, Any]:
        """RegisterTaskDefinition's arguments for tasks reading config at ``config_path``."""
        return with_config_path(self.register_args, config_path)


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def cpu_units(spec: DeploymentSpec) -> int | None:
    millicores = spec.resources.cpu_millicores()
    return None if millicores is None else round(millicores * 1024 / 1000)


def memory_mib(spec: DeploymentSpec, violations: list[FieldViolation]) -> int | None:
    size = spec.resources.memory_bytes()
    if size is None:
        return None
    if size % (1024 * 1024):
        violations.append(
            FieldViolation(
                "spec.resources.memory", "ECS sizes memory in whole MiB (e.g. '512Mi', '1Gi')"
            )
        )
        return None
    return size // (1024 * 1024)


def _fargate_size(
    cpu: int | None, memory: int | None, violations: list[FieldViolation]
) -> tuple[int, int]:
    if cpu is None and memory is None:
        return DEFAULT_CPU_UNITS, DEFAULT_MEMORY_MIB
    if cpu is not None and cpu not in FARGATE_SIZES:
        allowed = ", ".join(f"{units * 1000 // 1024}m" for units in FARGATE_SIZES)
        violations.append(
            FieldViolation("spec.resources.cpu", f"Fargate runs tasks with cpu one of {allowed}")
        )
        return DEFAULT_CPU_UNITS, DEFAULT_MEMORY_MIB
    if cpu is None:
        assert memory is not None
        fits = [units for units, sizes in FARGATE_SIZES.items() if memory in sizes]
        if not fits:
            violations.append(
                FieldViolation(
                    "spec.resources.memory",
                    f"Fargate has no task size with {memory}Mi of memory",
                )
            )
            return DEFAULT_CPU_UNITS, DEFAULT_MEMORY_MIB
        return min(fits), memory
    if memory is None:
        return cpu, FARGATE_SIZES[cpu][0]
    if memory not in FARGATE_SIZES[cpu]:
        sizes = FARGATE_SIZES[cpu]
        violations.append(
            FieldViolation(
                "spec.resources.memory",
                f"Fargate pairs cpu {spec_cpu(cpu)} with memory {sizes[0]}Mi-{sizes[-1]}Mi "
                f"in steps of {sizes[1] - sizes[0] if len(sizes) > 1 else sizes[0]}Mi, "
                f"not {memory}Mi",
            )
        )
    return cpu, memory


def spec_cpu(units: int) -> str:
    return f"{units * 1000 // 1024}m"


def _option(spec: DeploymentSpec, settings: Mapping[str, str], key: str, default: str = "") -> str:
    value = spec.provider_options.get(key)
    if value is None:
        value = settings.get(OPTION_SETTINGS[key], default)
    return value.strip()


def _spec_limits(spec: DeploymentSpec) -> list[FieldViolation]:
    violations = []
    if CONFIG_PATH_ENV in spec.env:
        violations.append(
            FieldViolation(
                f"spec.env[{CONFIG_PATH_ENV!r}]",
                "set by the provider: it names the config generation the tasks read",
            )
        )
    if len(spec.labels) + len(OWN_TAGS) > MAX_TAGS:
        violations.append(
            FieldViolation(
                "spec.labels",
                f"{len(spec.labels)} labels; ECS allows {MAX_TAGS} tags per resource and the "
                f"provider uses {len(OWN_TAGS)}, so at most {MAX_TAGS - len(OWN_TAGS)} labels",
            )
        )
    return violations


def _launch_type_rules(
    launch_type: str, public_ip: str, execution_role: str
) -> list[FieldViolation]:
    violations = []
    if public_ip in ("true", "enabled") and launch_type == "EC2":
        violations.append(
            FieldViolation(
                "spec.provider_options['assign_public_ip']",
                "ECS assigns public IPs to Fargate tasks only; the EC2 launch type in awsvpc "
                "mode cannot have one (set it false, or use FARGATE)",
            )
        )
    if launch_type == "FARGATE" and not execution_role:
        violations.append(
            FieldViolation(
                "spec.provider_options['execution_role_arn']",
                "Fargate tasks send their output to CloudWatch Logs (awslogs), which needs a "
                "task execution role: give it here or in ALPHASWARM_AWS_EXECUTION_ROLE_ARN",
            )
        )
    return violations


def plan_for(spec: DeploymentSpec, settings: Mapping[str, str], region: str) -> EcsPlan:
    """Derive the ECS plan for ``spec``; ``settings`` maps setting suffixes (``SUBNETS``)
    to values. Raises ``InvalidSpecError`` naming every field ECS cannot express."""
    violations = _spec_limits(spec)
    for key in spec.provider_options:
        if key not in OPTION_SETTINGS:
            violations.append(
                FieldViolation(
                    f"spec.provider_options[{key!r}]",
                    f"unknown option for aws; known: {', '.join(sorted(OPTION_SETTINGS))}",
                )
            )
    if not spec.image:
        violations.append(FieldViolation("spec.image", "ECS runs container images; set an image"))
    launch_type = _option(spec, settings, "launch_type", "FARGATE").upper()
    if launch_type not in LAUNCH_TYPES:
        violations.append(
            FieldViolation("spec.provider_options['launch_type']", "must be FARGATE or EC2")
        )
    subnets = _csv(_option(spec, settings, "subnets"))
    if not subnets:
        violations.append(
            FieldViolation(
                "spec.provider_options['subnets']",
                "tasks use awsvpc networking: give subnets here or in ALPHASWARM_AWS_SUBNETS",
            )
        )
    security_groups = _csv(_option(spec, settings, "security_groups"))
    public_ip = _option(spec, settings, "assign_public_ip", "false").lower()
    if public_ip not in ("true", "false", "enabled", "disabled"):
        violations.append(
            FieldViolation("spec.provider_options['assign_public_ip']", "must be true or false")
        )
    violations.extend(
        _launch_type_rules(launch_type, public_ip, _option(spec, settings, "execution_role_arn"))
    )

    cpu = cpu_units(spec)
    memory = memory_mib(spec, violations)
    if launch_type == "EC2":
        cpu = cpu if cpu is not None else DEFAULT_CPU_UNITS
        memory = memory if memory is not None else DEFAULT_MEMORY_MIB
        if memory < EC2_MIN_MEMORY_MIB:
            violations.append(
                FieldViolation("spec.resources.memory", "ECS needs at least 6Mi per container")
            )
    else:
        cpu, memory = _fargate_size(cpu, memory, violations)

    port_mappings = []
    for index, port in enumerate(spec.ports):
        if port.host_port not in (0, port.container_port):
            violations.append(
                FieldViolation(
                    f"spec.ports[{index}].host_port",
                    "awsvpc tasks publish the container port itself; host_port must be 0 "
                    "or equal container_port",
                )
            )
        port_mappings.append({"containerPort": port.container_port, "protocol": port.protocol})
    if violations:
        raise InvalidSpecError(violations)

    name = service_name(spec.namespace, spec.service_id)
    logs = log_group(spec.namespace, spec.service_id)
    environment = dict(spec.env)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "essential": True,
        "cpu": cpu,
        "memory": memory,
        "environment": [{"name": k, "value": v} for k, v in sorted(environment.items())],
        "portMappings": port_mappings,
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": logs,
                "awslogs-region": region,
                "awslogs-stream-prefix": LOG_STREAM_PREFIX,
            },
        },
    }
    if spec.command:
        container["command"] = list(spec.command)
    register: dict[str, Any] = {
        "family": name,
        "networkMode": "awsvpc",
        "requiresCompatibilities": [launch_type],
        "cpu": str(cpu),
        "memory": str(memory),
        "containerDefinitions": [container],
    }
    for key, arg in (("execution_role_arn", "executionRoleArn"), ("task_role_arn", "taskRoleArn")):
        value = _option(spec, settings, key)
        if value:
            register[arg] = value
    spec_hash = hashlib.sha256(
        json.dumps(register, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:16]
    container["dockerLabels"] = {SPEC_HASH_LABEL: spec_hash}
    network = {
        "awsvpcConfiguration": {
            "subnets": subnets,
            "securityGroups": security_groups,
            "assignPublicIp": "ENABLED" if public_ip in ("true", "enabled") else "DISABLED",
        }
    }
    if not security_groups:
        del network["awsvpcConfiguration"]["securityGroups"]
    tags = [
        {"key": OWN_TAGS[0], "value": spec.namespace},
        {"key": OWN_TAGS[1], "value": spec.service_id},
        *({"key": k, "value": v} for k, v in sorted(spec.labels.items())),
    ]
    return EcsPlan(
        family=name,
        service_name=name,
        launch_type=launch_type,
        register_args=register,
        network=network,
        spec_hash=spec_hash,
        log_group=logs,
        platform_version=_option(spec, settings, "platform_version")
        if launch_type == "FARGATE"
        else "",
        tags=tags,
    )


def labels_from_tags(tags: list[dict[str, str]]) -> dict[str, str]:
    return {
        tag["key"]: tag["value"]
        for tag in tags
        if not tag.get("key", "").startswith(("alphaswarm:", "aws:"))
    }
