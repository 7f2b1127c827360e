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
* a custom ``progress_deadline`` is kept as one more service tag
  (``alphaswarm:progress-deadline``), so it costs a label when it is not the default;
* container output goes to CloudWatch Logs (``awslogs``, group
  ``/alphaswarm/<namespace>/<service_id>``): on Fargate the awslogs driver needs
  a task execution role (ECS refuses the task definition without one), so a
  Fargate spec without ``execution_role_arn`` is rejected.

Each registration is one revision of the service (revisions.py) and carries what it
needs to be read back as the spec it was made from: the container holds the image,
command and environment; the docker label ``alphaswarm.spec`` holds the rest of the
spec as given (labels, ports, resources and provider options, which ECS stores
converted: CPU units, host ports folded into the container port, options spread
over the service). The revision's own facts (change cause, what it rolled back,
whether it was automatic) are in the docker label ``alphaswarm.revision``: ECS tag
values cannot hold free text ("Maximum value length - 256", pattern
``[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*``: botocore ecs model, TagValue), while a docker
label takes any string, and a registration never changes, as a revision's facts don't.
Neither label holds anything the task definition does not show already or a secret:
config stays in SSM.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from alphaswarm_core.providers.models import DEFAULT_PROGRESS_DEADLINE_SECONDS
from alphaswarm_core.providers.protocol import (
    DeploymentSpec,
    FieldViolation,
    InvalidSpecError,
    PortSpec,
    Resources,
)

NAME_PREFIX = "alphaswarm_"
CONTAINER_NAME = "app"
SPEC_HASH_LABEL = "alphaswarm.spec-hash"
SPEC_LABEL = "alphaswarm.spec"
REVISION_LABEL = "alphaswarm.revision"
CONFIG_PATH_ENV = "ALPHASWARM_CONFIG_SSM_PATH"
LAUNCH_TYPES = ("FARGATE", "EC2")
MAX_TAGS = 50
OWN_TAGS = ("alphaswarm:namespace", "alphaswarm:service-id")
DEADLINE_TAG = "alphaswarm:progress-deadline"
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
class RevisionFacts:
    """What a revision records beside what it runs (the ``alphaswarm.revision`` label)."""

    change_cause: str = ""
    rollback_of: int = 0
    automatic: bool = False

    def label(self) -> str:
        facts: dict[str, Any] = {}
        if self.change_cause:
            facts["change_cause"] = self.change_cause
        if self.rollback_of:
            facts["rollback_of"] = self.rollback_of
        if self.automatic:
            facts["automatic"] = True
        return json.dumps(facts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


NO_FACTS = RevisionFacts()


def with_facts(registration: Mapping[str, Any], facts: RevisionFacts) -> dict[str, Any]:
    """A copy of ``registration`` labelled with ``facts`` (replacing any it had)."""
    args = copy.deepcopy(dict(registration))
    for container in args.get("containerDefinitions", []):
        labels = dict(container.get("dockerLabels") or {})
        labels.pop(REVISION_LABEL, None)
        if facts != NO_FACTS:
            labels[REVISION_LABEL] = facts.label()
        container["dockerLabels"] = labels
    return args


def _labels(task_definition: Mapping[str, Any]) -> Mapping[str, Any]:
    for container in task_definition.get("containerDefinitions", []):
        return dict(container.get("dockerLabels") or {})
    return {}


def _record(text: object) -> dict[str, Any]:
    """A JSON object from a label; {} for anything else (a label someone else wrote)."""
    try:
        value = json.loads(str(text))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def facts_of(task_definition: Mapping[str, Any]) -> RevisionFacts:
    facts = _record(_labels(task_definition).get(REVISION_LABEL, "{}"))
    cause, of = facts.get("change_cause", ""), facts.get("rollback_of", 0)
    return RevisionFacts(
        change_cause=cause if isinstance(cause, str) else "",
        rollback_of=of if isinstance(of, int) and of > 0 else 0,
        automatic=facts.get("automatic") is True,
    )


def same_family(arn: str, family: str) -> bool:
    """Whether a task definition ARN is of ``family`` (``familyPrefix`` matches prefixes)."""
    return arn.rsplit("/", 1)[-1].rpartition(":")[0] == family


def revision_number(arn: str) -> int:
    """The revision of a task definition ARN (``...:task-definition/family:7`` -> 7)."""
    number = arn.rsplit(":", 1)[-1]
    return int(number) if number.isdigit() else 0


def _spec_record(spec: DeploymentSpec) -> str:
    record = {
        "labels": dict(sorted(spec.labels.items())),
        "ports": [[p.container_port, p.host_port, p.protocol] for p in spec.ports],
        "resources": {"cpu": spec.resources.cpu, "memory": spec.resources.memory},
        "options": dict(sorted(spec.provider_options.items())),
    }
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _strings(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def spec_of(
    task_definition: Mapping[str, Any], namespace: str, service_id: str, *, replicas: int = 0
) -> DeploymentSpec:
    """The spec a (described) revision was registered from, at ``replicas``.

    Revisions registered before the ``alphaswarm.spec`` label read back with what ECS
    kept: labels from the task definition's tags, ports without host ports, resources
    as ECS sized them.
    """
    [container] = task_definition.get("containerDefinitions", [])[:1] or [{}]
    env = {
        str(item["name"]): str(item.get("value", ""))
        for item in container.get("environment") or []
        if item.get("name") != CONFIG_PATH_ENV
    }
    record = _record(_labels(task_definition).get(SPEC_LABEL, ""))
    if record:
        ports = tuple(
            PortSpec(int(port[0]), int(port[1]), str(port[2]))
            for port in record.get("ports") or []
            if isinstance(port, list) and len(port) == 3
        )
        sized = _strings(record.get("resources"))
        resources = Resources(cpu=sized.get("cpu", ""), memory=sized.get("memory", ""))
        labels = _strings(record.get("labels"))
        options = _strings(record.get("options"))
    else:
        ports = tuple(
            PortSpec(int(m["containerPort"]), 0, str(m.get("protocol", "tcp")))
            for m in container.get("portMappings") or []
        )
        resources = Resources(
            cpu=spec_cpu(int(task_definition["cpu"])) if task_definition.get("cpu") else "",
            memory=f"{task_definition['memory']}Mi" if task_definition.get("memory") else "",
        )
        labels = labels_from_tags(list(task_definition.get("tags") or []))
        options = {}
    return DeploymentSpec(
        service_id=service_id,
        namespace=namespace,
        image=str(container.get("image", "")),
        command=tuple(str(arg) for arg in container.get("command") or ()),
        env=env,
        replicas=replicas,
        labels=labels,
        ports=ports,
        resources=resources,
        provider_options=options,
    )


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
    """The task definition's: the provider's own and the labels."""
    service_tags: list[dict[str, str]] = field(default_factory=list)
    """The service's: ``tags`` and the rollout policy's."""
    auto_rollback: bool = False

    @property
    def deployment_configuration(self) -> dict[str, Any]:
        """Rolling updates with ECS's circuit breaker; its rollback is ``auto_rollback``."""
        return deployment_configuration(self.auto_rollback)

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
    own = len(OWN_TAGS) + (1 if _deadline_tag(spec) else 0)
    if len(spec.labels) + own > MAX_TAGS:
        violations.append(
            FieldViolation(
                "spec.labels",
                f"{len(spec.labels)} labels; ECS allows {MAX_TAGS} tags per resource and the "
                f"provider uses {own} (one of them for a progress_deadline other than the "
                f"default), so at most {MAX_TAGS - own} labels",
            )
        )
    return violations


def _deadline_tag(spec: DeploymentSpec) -> str:
    """The service tag's value for ``spec``'s progress deadline ("" for the default)."""
    if spec.progress_deadline_seconds == DEFAULT_PROGRESS_DEADLINE_SECONDS:
        return ""
    return f"{spec.progress_deadline_seconds:g}"


def deadline_of(tags: list[dict[str, str]]) -> float:
    """The progress deadline a service's tags give (the default when absent or bad)."""
    for tag in tags:
        if tag.get("key") == DEADLINE_TAG:
            try:
                seconds = float(tag.get("value", ""))
            except ValueError:
                break
            if seconds > 0:
                return seconds
    return DEFAULT_PROGRESS_DEADLINE_SECONDS


def deployment_configuration(auto_rollback: bool) -> dict[str, Any]:
    return {
        "deploymentCircuitBreaker": {"enable": True, "rollback": auto_rollback},
        "maximumPercent": 200,
        "minimumHealthyPercent": 100,
    }


def auto_rollback_of(service: Mapping[str, Any]) -> bool:
    configuration = service.get("deploymentConfiguration") or {}
    breaker = configuration.get("deploymentCircuitBreaker") or {}
    return bool(breaker.get("rollback"))


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
    container["dockerLabels"] = {SPEC_LABEL: _spec_record(spec)}
    spec_hash = hashlib.sha256(
        json.dumps(register, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()[:16]
    container["dockerLabels"][SPEC_HASH_LABEL] = spec_hash
    network = {
        "awsvpcConfiguration": {
            "subnets": subnets,
            "securityGroups": security_groups,
            "assignPublicIp": "ENABLED" if public_ip in ("true", "enabled") else "DISABLED",
        }
    }
    if not security_groups:
        del network["awsvpcConfiguration"]["securityGroups"]
    tags, service_tags = _tags(spec)
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
        service_tags=service_tags,
        auto_rollback=spec.auto_rollback,
    )


def _tags(spec: DeploymentSpec) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The task definition's tags (the provider's own, the labels) and the service's (those
    and the rollout policy's)."""
    tags = [
        {"key": OWN_TAGS[0], "value": spec.namespace},
        {"key": OWN_TAGS[1], "value": spec.service_id},
        *({"key": k, "value": v} for k, v in sorted(spec.labels.items())),
    ]
    deadline = _deadline_tag(spec)
    service_tags = [*tags, {"key": DEADLINE_TAG, "value": deadline}] if deadline else list(tags)
    return tags, service_tags


def labels_from_tags(tags: list[dict[str, str]]) -> dict[str, str]:
    return {
        tag["key"]: tag["value"]
        for tag in tags
        if not tag.get("key", "").startswith(("alphaswarm:", "aws:"))
    }
