"""Translation between DeploymentSpec and Azure Container Instances container groups.

A replica is one container group named ``<namespace>-<service>-<ordinal>``. Its
tags say which service it belongs to, so one listing of the resource group finds
every replica of every service. No SDK call happens here: checks that ARM would
make (name rules, resource limits, tag rules) run before any request, so a bad
spec fails with INVALID_ARGUMENT naming the field and leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from azure.mgmt.containerinstance import models as aci

from alphaswarm_core.providers.protocol import (
    DeploymentSpec,
    FieldViolation,
    InvalidSpecError,
)

TAG_MANAGED = "alphaswarm-managed"
TAG_SERVICE = "alphaswarm-service"
TAG_NAMESPACE = "alphaswarm-namespace"
TAG_ORDINAL = "alphaswarm-ordinal"
TAG_SPEC_HASH = "alphaswarm-spec-hash"
TAG_CONFIG_VERSION = "alphaswarm-config-version"
TAG_INSTANCE = "alphaswarm-instance"
TAG_STOPPED = "alphaswarm-stopped"
TAG_SIZING = "alphaswarm-sizing"
"""Set when the requested memory was rounded up to ACI's 0.1 GB step; says how."""
TAG_REVISION = "alphaswarm-revision"
"""The revision the group runs, when the provider keeps revisions (``revision_record``)."""
RESERVED_TAG_PREFIX = "alphaswarm-"
RESERVED_TAGS = 10

MAX_GROUP_NAME = 63
MAX_TAGS = 50
MAX_TAG_NAME = 512
MAX_TAG_VALUE = 256
# Standard Linux container groups: at most 4 CPU cores and 16 GB of memory per group
# (learn.microsoft.com/azure/container-instances/container-instances-resource-and-quota-limits).
MIN_CPU_MILLICORES = 100
MAX_CPU_MILLICORES = 4000
GIB = 1024**3
MEMORY_STEPS_PER_GB = 10
"""ACI takes memory in 0.1 GB steps ("The memory requirement should be times of 0.1 GB")."""
MAX_MEMORY_STEPS = 160
DEFAULT_CPU = 1.0
DEFAULT_MEMORY_GB = 1.5
RESTART_POLICIES = ("Always", "OnFailure", "Never")
OPTION_RESTART_POLICY = "restart_policy"
_TAG_FORBIDDEN = set("<>%&\\?/")
_GROUP_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def group_name(namespace: str, service_id: str, ordinal: int) -> str:
    return f"{namespace}-{service_id}-{ordinal}"


def check_group_names(
    namespace: str, service_id: str, replicas: int, field: str = "spec.service_id"
) -> None:
    """ACI group names: at most 63 of [a-z0-9-], no leading/trailing or doubled '-'."""
    longest = group_name(namespace, service_id, max(replicas - 1, 0))
    if len(longest) > MAX_GROUP_NAME or "--" in longest or not _GROUP_NAME.fullmatch(longest):
        raise InvalidSpecError.single(
            field,
            f"Azure Container Instances names each replica '<namespace>-<service>-<n>' "
            f"('{longest}'), which must be at most {MAX_GROUP_NAME} characters of [a-z0-9-] "
            "without '--': shorten the namespace or service id",
        )


def spec_hash(spec: DeploymentSpec) -> str:
    """A digest of everything that, when changed, needs the replicas recreated."""
    canonical = {
        "image": spec.image,
        "command": list(spec.command),
        "env": dict(sorted(spec.env.items())),
        "labels": dict(sorted(spec.labels.items())),
        "ports": [[p.container_port, p.host_port, p.protocol] for p in spec.ports],
        "cpu": spec.resources.cpu,
        "memory": spec.resources.memory,
        "restart": spec.provider_options.get(OPTION_RESTART_POLICY, ""),
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()[:16]


def new_instance_token() -> str:
    """Tells a recreated group from its predecessor of the same name."""
    return secrets.token_hex(4)


@dataclass(frozen=True, slots=True)
class Sizing:
    cpu: float
    memory_gb: float
    note: str = ""
    """How the request was adjusted to what ACI accepts ("" when it was not)."""


def memory_steps(size_bytes: int) -> int:
    """``size_bytes`` in ACI's 0.1 GB steps (1 GB = 1 GiB here), rounded up so a
    replica never gets less than it asked for (256Mi -> 3 steps, 0.3 GB)."""
    return -(-size_bytes * MEMORY_STEPS_PER_GB // GIB)


def sizing(spec: DeploymentSpec) -> Sizing:
    """CPU cores and memory GB that ACI accepts for ``spec``, or InvalidSpecError."""
    violations: list[FieldViolation] = []
    cpu = DEFAULT_CPU
    millicores = spec.resources.cpu_millicores()
    if millicores is not None:
        if not MIN_CPU_MILLICORES <= millicores <= MAX_CPU_MILLICORES:
            violations.append(
                FieldViolation(
                    "spec.resources.cpu",
                    "Azure Container Instances allows 0.1 to 4 CPU cores per container group",
                )
            )
        cpu = millicores / 1000
    memory = DEFAULT_MEMORY_GB
    note = ""
    size = spec.resources.memory_bytes()
    if size is not None:
        steps = memory_steps(size)
        memory = steps / MEMORY_STEPS_PER_GB
        if not 1 <= steps <= MAX_MEMORY_STEPS:
            violations.append(
                FieldViolation(
                    "spec.resources.memory",
                    "Azure Container Instances allows 0.1 to 16 GB of memory per container group",
                )
            )
        elif steps * GIB != size * MEMORY_STEPS_PER_GB:
            note = (
                f"memory {spec.resources.memory} rounded up to {memory:g} GB "
                "(Azure Container Instances allocates memory in 0.1 GB steps)"
            )
    if violations:
        raise InvalidSpecError(violations)
    return Sizing(cpu, memory, note)


def check_spec(spec: DeploymentSpec) -> Sizing:
    """Everything ARM would reject about ``spec``, as field violations, before any call."""
    violations: list[FieldViolation] = []
    if not spec.image:
        violations.append(
            FieldViolation("spec.image", "Azure Container Instances runs container images")
        )
    for index, port in enumerate(spec.ports):
        if port.host_port not in (0, port.container_port):
            violations.append(
                FieldViolation(
                    f"spec.ports[{index}].host_port",
                    "Azure Container Instances cannot remap ports: use 0 or the container port",
                )
            )
    if len(spec.labels) > MAX_TAGS - RESERVED_TAGS:
        violations.append(
            FieldViolation("spec.labels", f"at most {MAX_TAGS - RESERVED_TAGS} labels on Azure")
        )
    for key in spec.labels:
        if _TAG_FORBIDDEN.intersection(key) or key.startswith(RESERVED_TAG_PREFIX):
            violations.append(
                FieldViolation(
                    f"spec.labels[{key!r}]",
                    "Azure tag names cannot contain < > % & \\ ? / nor start with 'alphaswarm-'",
                )
            )
    for key in spec.provider_options:
        if key != OPTION_RESTART_POLICY:
            violations.append(
                FieldViolation(
                    f"spec.provider_options[{key!r}]",
                    f"unknown option; the aci mode accepts {OPTION_RESTART_POLICY}",
                )
            )
    policy = spec.provider_options.get(OPTION_RESTART_POLICY)
    if policy is not None and policy not in RESTART_POLICIES:
        violations.append(
            FieldViolation(
                f"spec.provider_options[{OPTION_RESTART_POLICY!r}]",
                f"one of {', '.join(RESTART_POLICIES)}",
            )
        )
    try:
        size = sizing(spec)
    except InvalidSpecError as error:
        violations.extend(error.violations)
        size = Sizing(DEFAULT_CPU, DEFAULT_MEMORY_GB)
    try:
        check_group_names(spec.namespace, spec.service_id, spec.replicas)
    except InvalidSpecError as error:
        violations.extend(error.violations)
    if violations:
        raise InvalidSpecError(violations)
    return size


def build_group(
    spec: DeploymentSpec,
    *,
    ordinal: int,
    location: str,
    environment: Iterable[aci.EnvironmentVariable],
    config_version: str,
    revision: int = 0,
) -> aci.ContainerGroup:
    """The container group for replica ``ordinal`` of ``spec`` (spec checked already);
    ``revision`` (0: none kept) goes into its ``alphaswarm-revision`` tag."""
    size = sizing(spec)
    ports = [
        aci.ContainerPort(port=p.container_port, protocol=p.protocol.upper()) for p in spec.ports
    ]
    public = [
        aci.Port(port=p.container_port, protocol=p.protocol.upper())
        for p in spec.ports
        if p.host_port
    ]
    container = aci.Container(
        name=spec.service_id,
        image=spec.image,
        command=list(spec.command) or None,
        environment_variables=list(environment),
        ports=ports or None,
        resources=aci.ResourceRequirements(
            requests=aci.ResourceRequests(memory_in_gb=size.memory_gb, cpu=size.cpu)
        ),
    )
    tags = dict(spec.labels)
    tags.update(
        {
            TAG_MANAGED: "true",
            TAG_SERVICE: spec.service_id,
            TAG_NAMESPACE: spec.namespace,
            TAG_ORDINAL: str(ordinal),
            TAG_SPEC_HASH: spec_hash(spec),
            TAG_CONFIG_VERSION: config_version,
            TAG_INSTANCE: new_instance_token(),
        }
    )
    if size.note:
        tags[TAG_SIZING] = size.note
    if revision:
        tags[TAG_REVISION] = str(revision)
    return aci.ContainerGroup(
        location=location,
        tags=tags,
        containers=[container],
        os_type="Linux",
        restart_policy=spec.provider_options.get(OPTION_RESTART_POLICY, "Always"),
        ip_address=aci.IpAddress(ports=public, type="Public") if public else None,
    )


def clone_group(
    template: aci.ContainerGroup,
    *,
    ordinal: int,
    environment: Iterable[aci.EnvironmentVariable] | None = None,
    config_version: str | None = None,
) -> aci.ContainerGroup:
    """A new replica shaped like ``template`` (another replica of the same service)."""
    tags = dict(template.tags or {})
    tags.pop(TAG_STOPPED, None)
    tags[TAG_ORDINAL] = str(ordinal)
    tags[TAG_INSTANCE] = new_instance_token()
    if config_version is not None:
        tags[TAG_CONFIG_VERSION] = config_version
    containers = []
    for container in template.containers:
        containers.append(
            aci.Container(
                name=container.name,
                image=container.image,
                command=container.command,
                ports=container.ports,
                resources=container.resources,
                environment_variables=(
                    list(environment)
                    if environment is not None
                    else container.environment_variables
                ),
            )
        )
    return aci.ContainerGroup(
        location=template.location,
        tags=tags,
        containers=containers,
        os_type=template.os_type,
        restart_policy=template.restart_policy,
        ip_address=(
            aci.IpAddress(ports=template.ip_address.ports, type=template.ip_address.type)
            if template.ip_address is not None
            else None
        ),
    )


# -- reading groups back ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Replica:
    """One listed container group that belongs to a service."""

    name: str
    namespace: str
    service_id: str
    ordinal: int
    group: aci.ContainerGroup

    @property
    def tags(self) -> Mapping[str, str]:
        return self.group.tags or {}

    @property
    def stopped(self) -> bool:
        return self.tags.get(TAG_STOPPED) == "true"

    @property
    def spec_hash(self) -> str:
        return self.tags.get(TAG_SPEC_HASH, "")

    @property
    def config_version(self) -> int:
        value = self.tags.get(TAG_CONFIG_VERSION, "0")
        return int(value) if value.isdigit() else 0

    @property
    def instance_id(self) -> str:
        return f"{self.name}/{self.tags.get(TAG_INSTANCE, '')}"

    @property
    def deleting(self) -> bool:
        return (self.group.provisioning_state or "").lower() == "deleting"


def as_replica(group: aci.ContainerGroup) -> Replica | None:
    """The replica a listed group stands for, or None when alphaswarm did not create it."""
    tags = group.tags or {}
    if tags.get(TAG_MANAGED) != "true" or group.name is None:
        return None
    ordinal = tags.get(TAG_ORDINAL, "")
    if not ordinal.isdigit() or TAG_SERVICE not in tags or TAG_NAMESPACE not in tags:
        return None
    return Replica(group.name, tags[TAG_NAMESPACE], tags[TAG_SERVICE], int(ordinal), group)


def group_replicas(
    groups: Iterable[aci.ContainerGroup], namespace: str | None = None
) -> dict[tuple[str, str], list[Replica]]:
    """(namespace, service) -> its replicas by ordinal, from one listing."""
    found: dict[tuple[str, str], list[Replica]] = {}
    for group in groups:
        replica = as_replica(group)
        if replica is None or replica.deleting:
            continue
        if namespace is not None and replica.namespace != namespace:
            continue
        found.setdefault((replica.namespace, replica.service_id), []).append(replica)
    for replicas in found.values():
        replicas.sort(key=lambda r: r.ordinal)
    return found
