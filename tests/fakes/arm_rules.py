"""What Azure Container Instances refuses in a container group PUT, with its error codes.

Each rule cites where it comes from. Sources:

* SPEC: the containerinstance OpenAPI document the SDK is generated from,
  Azure/azure-rest-api-specs ``specification/containerinstance/ContainerInstance.Management/
  resource-manager/Microsoft.ContainerInstance/stable/2023-05-01/containerInstance.json``
  (api-version 2023-05-01, what azure-mgmt-containerinstance 10.1 sends): required
  properties and enums.
* QUOTAS: "Resource availability & quota limits for ACI",
  learn.microsoft.com/azure/container-instances/container-instances-resource-and-quota-limits:
  4 CPU cores and 16 GB per standard Linux container group, 60 containers per
  group, 5 ports per IP address.
* NAMING: "Naming rules and restrictions for Azure resources",
  learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules
  (Microsoft.ContainerInstance/containerGroups: 1-63 lowercase letters, digits and
  hyphens, no hyphen at either end, no consecutive hyphens).
* TAGS: "Use tags to organize your Azure resources", Limitations,
  learn.microsoft.com/azure/azure-resource-manager/management/tag-resources:
  50 tags per resource, names up to 512 and values up to 256 characters, names
  without ``< > % & \\ ? /``.
* Service messages quoted in public reports where the documentation says
  nothing: memory "should be times of 0.1 GB" (Azure/azure-cli#7355);
  variable names start with a letter or '_' then letters, digits or '_'
  (Azure/aci-deploy#29, dots refused: Azure/azure-rest-api-specs#19173); "One
  and only one property of 'value' and 'secureValue' can be specified in an
  environment variable", code InvalidEnvironmentVariable (mage-ai/mage-ai#4872);
  container names 1-63 lowercase characters (MicrosoftDocs/azure-docs#57266);
  codes InvalidOsType and ResourceRequestsNotSpecified
  (MicrosoftLearning/mslearn-azure-developer#67); ResourceLimitsLessThanRequests
  (virtual-kubelet/virtual-kubelet#143). Where no report shows the code ACI
  uses, the code here is descriptive and the status (400) is what ARM sends for
  an invalid request body.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

GROUP_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # NAMING
CONTAINER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # azure-docs#57266
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # aci-deploy#29
MAX_TAGS = 50  # TAGS
MAX_TAG_NAME = 512  # TAGS
MAX_TAG_VALUE = 256  # TAGS
TAG_NAME_FORBIDDEN = set("<>%&\\?/")  # TAGS
MAX_CONTAINERS = 60  # QUOTAS
MAX_IP_PORTS = 5  # QUOTAS
MAX_GROUP_CPU = Decimal(4)  # QUOTAS (standard Linux group)
MAX_GROUP_MEMORY_GB = Decimal(16)  # QUOTAS (standard Linux group)
MEMORY_STEP_GB = Decimal("0.1")  # azure-cli#7355
OS_TYPES = ("Windows", "Linux")  # SPEC OperatingSystemTypes
RESTART_POLICIES = ("Always", "OnFailure", "Never")  # SPEC ContainerGroupRestartPolicy
PROTOCOLS = ("TCP", "UDP")  # SPEC ContainerNetworkProtocol / ContainerGroupNetworkProtocol
IP_TYPES = ("Public", "Private")  # SPEC ContainerGroupIpAddressType


class ArmError(Exception):
    """An ARM error response: status, ``error.code``, ``error.message``, extra headers."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def bad(code: str, message: str) -> ArmError:
    return ArmError(400, code, message)


def _number(value: Any) -> Decimal | None:
    """A JSON number as ARM reads it (exactly: 0.3 is 0.3, not 0.299...)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def validate_group(name: str, body: Any) -> None:
    """Raise the ArmError ACI answers a PUT of ``body`` as group ``name`` with."""
    if len(name) > 63 or "--" in name or not GROUP_NAME.fullmatch(name):
        raise bad(
            "InvalidContainerGroupName",
            f"The container group name '{name}' is invalid. The container group name must "
            "contain no more than 63 characters and only lowercase alphanumeric characters "
            "and '-', and it cannot start or end with '-' and cannot have '--'.",
        )
    if not isinstance(body, dict):
        raise bad("InvalidRequestContent", "The request content was invalid.")
    if not body.get("location"):
        # A tracked resource's location is required (ARM's TrackedResource).
        raise bad("LocationRequired", "The location property is required for this definition.")
    _validate_tags(body.get("tags") or {})
    props = body.get("properties")
    if not isinstance(props, dict):
        raise bad("InvalidRequestContent", "The 'properties' of the container group are required.")
    if props.get("osType") not in OS_TYPES:  # SPEC: osType required
        raise bad(
            "InvalidOsType",
            f"The 'osType' for container group '{name}' is invalid. "
            "The value must be one of 'Windows,Linux'.",
        )
    policy = props.get("restartPolicy")
    if policy is not None and policy not in RESTART_POLICIES:
        raise bad(
            "InvalidRestartPolicy",
            f"The restart policy '{policy}' is invalid; one of {', '.join(RESTART_POLICIES)}.",
        )
    containers = props.get("containers")
    if not isinstance(containers, list) or not containers:  # SPEC: containers required
        raise bad(
            "ContainerGroupMissingContainers",
            f"The container group '{name}' must have at least one container.",
        )
    if len(containers) > MAX_CONTAINERS:
        raise bad(
            "ContainerGroupContainersExceedLimit",
            f"The container group '{name}' has {len(containers)} containers; "
            f"at most {MAX_CONTAINERS} are allowed.",
        )
    seen: set[str] = set()
    total_cpu, total_memory = Decimal(0), Decimal(0)
    for container in containers:
        cpu, memory = _validate_container(name, container, seen)
        total_cpu += cpu
        total_memory += memory
    if total_cpu > MAX_GROUP_CPU or total_memory > MAX_GROUP_MEMORY_GB:
        raise bad(
            "ContainerGroupResourceRequestsExceedLimit",
            f"The container group '{name}' requests {total_cpu} CPU and {total_memory} GB; "
            f"a standard Linux container group allows at most {MAX_GROUP_CPU} CPU and "
            f"{MAX_GROUP_MEMORY_GB} GB.",
        )
    _validate_ip(name, props.get("ipAddress"))


def _validate_tags(tags: Any) -> None:
    if not isinstance(tags, dict):
        raise bad("InvalidTag", "Tags must be an object of names to string values.")
    if len(tags) > MAX_TAGS:
        raise bad(
            "InvalidTagCount", f"At most {MAX_TAGS} tags are allowed; {len(tags)} were given."
        )
    for key, value in tags.items():
        if TAG_NAME_FORBIDDEN.intersection(key):
            raise bad("InvalidTagNameCharacters", f"The tag name '{key}' has invalid characters.")
        if not key or len(key) > MAX_TAG_NAME:
            raise bad("InvalidTagNameLength", f"Tag names are 1 to {MAX_TAG_NAME} characters.")
        if not isinstance(value, str) or len(value) > MAX_TAG_VALUE:
            raise bad(
                "InvalidTagValueLength",
                f"The value of tag '{key}' must be a string of at most {MAX_TAG_VALUE} characters.",
            )


def _validate_container(group: str, container: Any, seen: set[str]) -> tuple[Decimal, Decimal]:
    cname = container.get("name") if isinstance(container, dict) else None
    if not isinstance(cname, str) or not CONTAINER_NAME.fullmatch(cname):
        raise bad(
            "InvalidContainerName",
            f"The container name '{cname}' in container group '{group}' is invalid. It must "
            "contain no more than 63 lowercase alphanumeric characters or '-', and cannot "
            "start or end with '-'.",
        )
    if cname in seen:
        raise bad(
            "DuplicateContainerName",
            f"The container name '{cname}' appears more than once in container group '{group}'.",
        )
    seen.add(cname)
    props = container.get("properties") or {}
    if not props.get("image"):  # SPEC: image required
        raise bad(
            "InvalidContainerImage",
            f"The image of container '{cname}' in container group '{group}' is required.",
        )
    cpu, memory = _validate_resources(group, cname, props.get("resources"))
    for variable in props.get("environmentVariables") or []:
        _validate_variable(group, cname, variable)
    for port in props.get("ports") or []:
        _validate_port(group, cname, port)
    return cpu, memory


def _validate_resources(group: str, cname: str, resources: Any) -> tuple[Decimal, Decimal]:
    requests = (resources or {}).get("requests") if isinstance(resources, dict) else None
    memory = _number((requests or {}).get("memoryInGB"))
    cpu = _number((requests or {}).get("cpu"))
    if memory is None or cpu is None:  # SPEC: ResourceRequests requires memoryInGB and cpu
        raise bad(
            "ResourceRequestsNotSpecified",
            f"The resource requests are not specified in container '{cname}' of container "
            f"group '{group}'. Both memory and CPU requests are required since API version "
            "'2017-07-01-preview'.",
        )
    if memory <= 0 or memory % MEMORY_STEP_GB != 0:
        raise bad(
            "InvalidMemoryRequirement",
            f"The memory requirement is '{memory}' in container '{cname}' of container group "
            f"'{group}'. The memory requirement should be times of 0.1 GB.",
        )
    if cpu <= 0:
        raise bad(
            "InvalidCpuRequirement",
            f"The CPU requirement '{cpu}' in container '{cname}' of container group '{group}' "
            "must be greater than 0.",
        )
    if cpu > MAX_GROUP_CPU or memory > MAX_GROUP_MEMORY_GB:
        raise bad(
            "ContainerResourceRequestsExceedLimit",
            f"The container '{cname}' requests {cpu} CPU and {memory} GB; a container may "
            f"request at most {MAX_GROUP_CPU} CPU and {MAX_GROUP_MEMORY_GB} GB.",
        )
    limits = resources.get("limits") if isinstance(resources, dict) else None
    if isinstance(limits, dict):
        for key, requested in (("memoryInGB", memory), ("cpu", cpu)):
            limit = _number(limits.get(key))
            if limit is not None and limit < requested:
                raise bad(
                    "ResourceLimitsLessThanRequests",
                    f"The resource requirement in container '{cname}' of container group "
                    f"'{group}' is invalid. The '{key}' limit value must be greater than or "
                    "equal to the request value.",
                )
    return cpu, memory


def _validate_variable(group: str, cname: str, variable: Any) -> None:
    vname = variable.get("name") if isinstance(variable, dict) else None
    if not isinstance(vname, str) or not VARIABLE_NAME.fullmatch(vname):  # SPEC: name required
        raise bad(
            "InvalidEnvironmentVariableName",
            f"The environment variable name in container '{cname}' of container group "
            f"'{group}' is invalid. A valid environment variable name must start with "
            "alphabetic character or '_', followed by a string of alphanumeric characters "
            "or '_' (e.g. 'my_name', or 'MY_NAME', or 'MyName').",
        )
    given = [key for key in ("value", "secureValue") if variable.get(key) is not None]
    if len(given) != 1:
        raise bad(
            "InvalidEnvironmentVariable",
            f"The environment variable '{vname}' in container '{cname}' of container group "
            f"'{group}' is invalid. One and only one property of 'value' and 'secureValue' "
            "can be specified in an environment variable.",
        )
    if not isinstance(variable[given[0]], str):
        raise bad("InvalidEnvironmentVariable", f"The value of '{vname}' must be a string.")


def _validate_port(group: str, cname: str, port: Any) -> None:
    number = port.get("port") if isinstance(port, dict) else None
    protocol = (port.get("protocol") if isinstance(port, dict) else None) or "TCP"
    if not isinstance(number, int) or not 1 <= number <= 65535 or protocol not in PROTOCOLS:
        raise bad(
            "InvalidContainerPort",
            f"The port '{number}/{protocol}' of container '{cname}' in container group "
            f"'{group}' is invalid: a port number from 1 to 65535, protocol TCP or UDP.",
        )


def _validate_ip(group: str, ip: Any) -> None:
    if ip is None:
        return
    if not isinstance(ip, dict) or ip.get("type") not in IP_TYPES or "ports" not in ip:
        raise bad(  # SPEC: IpAddress requires ports and type
            "InvalidIpAddress",
            f"The IP address of container group '{group}' needs 'ports' and a 'type' "
            "(Public or Private).",
        )
    ports = ip.get("ports") or []
    if len(ports) > MAX_IP_PORTS:
        raise bad(
            "IpAddressPortsExceedLimit",
            f"The IP address of container group '{group}' exposes {len(ports)} ports; "
            f"at most {MAX_IP_PORTS} are allowed.",
        )
    for port in ports:
        _validate_port(group, "(ip address)", port)
