"""What Cloud Run v2 refuses in a Service, and the defaults it fills in: the emulator's rules.

Written from the service's documentation, independently of the provider's own checks (a
shared mistake would hide itself). Sources, cited per rule below:

* [proto] googleapis google/cloud/run/v2/service.proto, revision_template.proto,
  k8s.min.proto (field comments and field_behavior);
* [cpu] https://cloud.google.com/run/docs/configuring/services/cpu ("vCPU and memory
  table", requirements below 1 vCPU);
* [memory] https://cloud.google.com/run/docs/configuring/services/memory-limits;
* [concurrency] https://cloud.google.com/run/docs/about-concurrency (maximum 1000);
* [env] https://cloud.google.com/run/docs/configuring/services/environment-variables
  (reserved names of the container runtime contract, 1000 variables, 32 KiB values);
* [labels] gcp_common.check_labels;
* [annotations] Service.annotations and RevisionTemplate.annotations: they "follow
  Kubernetes annotations' namespacing, limits, and rules" and the ``run.googleapis.com``,
  ``cloud.googleapis.com``, ``serving.knative.dev`` and ``autoscaling.knative.dev``
  namespaces "will be rejected" (a service's "in new resources"); Kubernetes' rules are
  k8s.io/apimachinery ``ValidateAnnotations``: each key a qualified name (an optional
  DNS-1123 subdomain prefix of at most 253 characters and ``/``, then a name of at most
  63 of ``[A-Za-z0-9-_.]`` starting and ending alphanumeric), all keys and values at
  most 256 KiB together (``TotalAnnotationSizeLimitB``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import grpc
from google.cloud import run_v2
from google.protobuf import duration_pb2

from .gcp_common import EmulatorError, check_labels, invalid

MI = 2**20
GI = 2**30
# [proto] CreateServiceRequest.service_id: "must begin with letter, and cannot end with
# hyphen; must contain fewer than 50 characters"; lowercase letters, digits and hyphens.
SERVICE_ID = re.compile(r"[a-z]([-a-z0-9]{0,47}[a-z0-9])?")
# [proto] "Format: projects/{project}/locations/{location}".
PARENT = re.compile(r"projects/([a-z0-9][-a-z0-9.:]*)/locations/([a-z]+-[a-z]+[0-9]+)")
SERVICE_NAME = re.compile(PARENT.pattern + r"/services/" + SERVICE_ID.pattern)
# [proto] Revision: "projects/{project}/locations/{location}/services/{service}/revisions/
# {revision}"; a revision name is a DNS label (at most 63 characters).
REVISION_NAME = re.compile(SERVICE_NAME.pattern + r"/revisions/[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
SERVICE_ACCOUNT = re.compile(r"[^@\s]+@[^@\s]+\.gserviceaccount\.com")
# [env] The container runtime contract's variables "are reserved and cannot be set".
RESERVED_ENV = frozenset({"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"})
MAX_ENV = 1000
MAX_ENV_VALUE = 32768  # [proto] EnvVar.value: "the maximum length is 32768 bytes"
MAX_CONCURRENCY = 1000  # [concurrency]
MAX_CONTAINERS = 10  # [proto] sidecars: at most 10 containers per instance
WHOLE_CPU_MEMORY = {  # [cpu] the vCPU and memory table: millicores -> (least, most) memory
    1000: (128 * MI, 4 * GI),
    2000: (128 * MI, 8 * GI),
    4000: (2 * GI, 16 * GI),
    6000: (4 * GI, 24 * GI),
    8000: (4 * GI, 32 * GI),
}
DEFAULT_CPU = "1000m"  # what Cloud Run reports for a container without limits
DEFAULT_MEMORY = "512Mi"  # [memory] "By default, the memory allocated ... is 512 MiB"
DEFAULT_TIMEOUT_SECONDS = 300  # [proto] RevisionTemplate.timeout, 5 minutes by default
RESERVED_NAMESPACES = (  # [annotations]
    "run.googleapis.com",
    "cloud.googleapis.com",
    "serving.knative.dev",
    "autoscaling.knative.dev",
)
MAX_ANNOTATION_BYTES = 256 * 1024  # [annotations] TotalAnnotationSizeLimitB
_QUALIFIED_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_GEN2 = run_v2.ExecutionEnvironment.EXECUTION_ENVIRONMENT_GEN2
_CPU = re.compile(r"(\d+(?:\.\d+)?)(m?)")
_MEMORY = re.compile(r"(\d+)(Ki|Mi|Gi|Ti|K|M|G|T)?")
_UNITS = {None: 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_UNITS |= {"Ki": 2**10, "Mi": MI, "Gi": GI, "Ti": 2**40}


def cpu_millis(text: str) -> int:
    match = _CPU.fullmatch(text)
    if match is None:
        raise invalid(f"spec.template.containers.resources.limits.cpu: invalid value {text!r}")
    value = float(match.group(1))
    millis = value if match.group(2) else value * 1000
    if millis != int(millis):
        # [cpu] fractions "in increments of 0.001"
        raise invalid(f"CPU {text!r} is not a multiple of 0.001")
    return int(millis)


def memory_bytes(text: str) -> int:
    match = _MEMORY.fullmatch(text)
    if match is None:
        raise invalid(f"spec.template.containers.resources.limits.memory: invalid value {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def check_service_id(service_id: str) -> None:
    if not SERVICE_ID.fullmatch(service_id):
        raise invalid(
            f"service_id {service_id[:60]!r}: must begin with a letter, contain only lowercase "
            "letters, digits and hyphens, not end with a hyphen, and be under 50 characters"
        )


def _reserved(prefix: str) -> bool:
    """A reserved namespace, or a subdomain of one (a stricter reading than the proto's
    "namespaces": an emulator that accepted what Cloud Run rejects would hide a bug)."""
    return any(prefix == ns or prefix.endswith(f".{ns}") for ns in RESERVED_NAMESPACES)


def check_annotations(
    annotations: Mapping[str, str], where: str, *, reserved_allowed: bool = False
) -> None:
    """[annotations] Kubernetes' key rules and size limit; Cloud Run's reserved namespaces."""
    items = list(annotations.items())
    total = 0
    for key, value in items:
        prefix, slash, name = str(key).rpartition("/")
        if (slash and (not prefix or len(prefix) > 253 or not _SUBDOMAIN.fullmatch(prefix))) or (
            not _QUALIFIED_NAME.fullmatch(name)
        ):
            raise invalid(f"{where}: invalid annotation key {str(key)[:80]!r}")
        if slash and _reserved(prefix) and not reserved_allowed:
            raise invalid(
                f"{where}: annotation {key!r}: the {prefix} namespace is not supported by "
                "Cloud Run API v2"
            )
        total += len(str(key).encode()) + len(str(value).encode())
    if total > MAX_ANNOTATION_BYTES:
        raise invalid(f"{where}: annotations are {total} bytes, at most {MAX_ANNOTATION_BYTES}")


def check_service(service: run_v2.Service, *, creating: bool = True) -> None:
    """Raise INVALID_ARGUMENT for what Cloud Run refuses in a created or updated Service."""
    # [proto] Service.labels: Google Cloud label rules; the run.googleapis.com,
    # cloud.googleapis.com, serving.knative.dev, autoscaling.knative.dev namespaces are
    # rejected (their '/' already breaks the key rule).
    check_labels(service.labels.items(), "service.labels")
    # [annotations] a service's reserved namespaces are "rejected in new resources".
    check_annotations(service.annotations, "service.annotations", reserved_allowed=not creating)
    if "template" not in service:
        raise invalid("service.template: required")  # [proto] field_behavior REQUIRED
    _check_template(service.template)
    scaling = service.scaling
    if scaling.manual_instance_count < 0 or scaling.min_instance_count < 0:
        raise invalid("service.scaling: instance counts must be non-negative")
    if service.traffic and sum(t.percent for t in service.traffic) != 100:
        raise invalid("service.traffic: percentages must add up to 100")


def _check_template(template: run_v2.RevisionTemplate) -> None:
    # [proto] RevisionTemplate.labels: label rules, reserved namespaces rejected;
    # .annotations: [annotations], reserved namespaces rejected in every request.
    check_labels(template.labels.items(), "template.labels")
    check_annotations(template.annotations, "template.annotations")
    containers = template.containers
    if not containers:
        raise invalid("template.containers: at least one container is required")
    if len(containers) > MAX_CONTAINERS:
        raise invalid(f"template.containers: at most {MAX_CONTAINERS} containers")
    # [proto] Container.ports: "Only a single port can be specified"; with sidecars, only
    # the ingress container has one.
    if sum(len(c.ports) for c in containers) > 1:
        raise invalid("template.containers.ports: only one container port may be specified")
    if template.service_account and not SERVICE_ACCOUNT.fullmatch(template.service_account):
        raise invalid(f"template.service_account {template.service_account!r} is not one")
    concurrency = template.max_instance_request_concurrency
    if not 0 <= concurrency <= MAX_CONCURRENCY:
        raise invalid(f"max_instance_request_concurrency must be 0 to {MAX_CONCURRENCY}")
    total_cpu = 0
    total_memory = 0
    for container in containers:
        _check_container(container)
        limits = container.resources.limits
        total_cpu += cpu_millis(limits.get("cpu", DEFAULT_CPU))
        total_memory += memory_bytes(limits.get("memory", DEFAULT_MEMORY))
    all_idle = all(c.resources.cpu_idle for c in containers)
    _check_instance(template, total_cpu, total_memory, all_idle=all_idle)


def _check_container(container: run_v2.Container) -> None:
    if not container.image:
        raise invalid("template.containers.image: required")  # [proto] REQUIRED
    for port in container.ports:
        if not 0 < port.container_port < 65536:  # [proto] "0 < container_port < 65536"
            raise invalid(f"container_port {port.container_port}: must be 1 to 65535")
        if port.name not in ("", "http1", "h2c"):  # [proto] "Allowed values are http1 and h2c"
            raise invalid(f"ports.name {port.name!r}: must be http1 or h2c")
    if len(container.env) > MAX_ENV:
        raise invalid(f"template.containers.env: at most {MAX_ENV} variables")
    seen: set[str] = set()
    for var in container.env:
        if not var.name or "=" in var.name:
            raise invalid(f"env name {var.name!r}: must be non-empty, without '='")
        if var.name in RESERVED_ENV:
            raise invalid(f"env {var.name}: reserved by the container runtime contract")
        if var.name in seen:
            raise invalid(f"env {var.name}: duplicate name")
        seen.add(var.name)
        if len(var.value.encode()) > MAX_ENV_VALUE:
            raise invalid(f"env {var.name}: value longer than {MAX_ENV_VALUE} bytes")
        if "value_source" in var and not var.value_source.secret_key_ref.secret:
            raise invalid(f"env {var.name}: secret_key_ref.secret is required")
    for key in container.resources.limits:
        if key not in ("cpu", "memory", "nvidia.com/gpu"):  # [proto] ResourceRequirements
            raise invalid(f"resources.limits[{key!r}]: only cpu, memory, nvidia.com/gpu")


def _check_instance(
    template: run_v2.RevisionTemplate, cpu: int, memory: int, *, all_idle: bool
) -> None:
    environment = template.execution_environment
    # [cpu] "between 0.08 and 1 ... Values greater than 1 must be integer values", max 8.
    if not (80 <= cpu < 1000 or cpu in WHOLE_CPU_MEMORY):
        raise invalid(
            f"Invalid value specified for cpu: {cpu}m. CPU must be between 0.08 and 1, "
            "or 1, 2, 4, 6 or 8"
        )
    # [memory] 128 MiB (first generation) or 512 MiB (second generation) to 32 GiB.
    least_memory = 512 * MI if environment == _GEN2 else 128 * MI
    if not least_memory <= memory <= 32 * GI:
        raise invalid(f"Invalid value specified for memory: {memory} bytes")
    if cpu in WHOLE_CPU_MEMORY:
        least, most = WHOLE_CPU_MEMORY[cpu]
        if not least <= memory <= most:
            raise invalid(
                f"Invalid value specified for memory. For {cpu // 1000} CPU, memory must be "
                f"between {least // MI}Mi and {most // MI}Mi inclusive."
            )
        return
    # [cpu] below 1 vCPU: memory > 512 MiB needs >= 0.5 vCPU, > 1 GiB needs 1 vCPU;
    # "Maximum concurrency must be set to 1"; request-based billing (k8s.min.proto
    # cpu_idle: "the caller must explicitly set this field to true" once resources are
    # set); "You must use the first generation execution environment".
    if memory > 1 * GI or (memory > 512 * MI and cpu < 500):
        raise invalid(
            f"Invalid value specified for memory. For {cpu}m CPU, memory must be at most "
            f"{'1Gi' if cpu >= 500 else '512Mi'}."
        )
    if template.max_instance_request_concurrency > 1:
        raise invalid(
            "Invalid value specified for container concurrency. Total cpu < 1 is not "
            "supported with concurrency > 1."
        )
    if not all_idle:
        raise invalid(
            "Invalid value specified for cpu. Total cpu < 1 is only supported with "
            "request-based billing (cpu_idle)."
        )
    if environment == _GEN2:
        raise invalid("Total cpu < 1 is only supported in the first generation environment.")


def fill_defaults(service: run_v2.Service) -> None:
    """What Cloud Run reports for fields left unset ([proto] comments)."""
    template = service.template
    cpu = 0
    for container in template.containers:
        limits = container.resources.limits
        limits.setdefault("cpu", DEFAULT_CPU)
        limits.setdefault("memory", DEFAULT_MEMORY)
        cpu += cpu_millis(container.resources.limits["cpu"])
    if not template.max_instance_request_concurrency:
        # [proto] "defaults to 80 when requested CPU >= 1 and defaults to 1 when < 1"
        template.max_instance_request_concurrency = 80 if cpu >= 1000 else 1
    if "timeout" not in template:
        template.timeout = duration_pb2.Duration(seconds=DEFAULT_TIMEOUT_SECONDS)
    if not service.traffic:
        # [proto] Service.traffic: "defaults to 100% traffic to the latest Ready Revision"
        service.traffic = [
            run_v2.TrafficTarget(
                type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST,
                percent=100,
            )
        ]


def page_start(token: str) -> int:
    """The offset a page token of this emulator stands for (opaque to clients)."""
    try:
        start = int(token or 0)
    except ValueError:
        raise invalid(f"invalid page_token {token[:40]!r}") from None
    if start < 0:
        raise invalid(f"invalid page_token {token[:40]!r}")
    return start


def not_found(name: str) -> EmulatorError:
    return EmulatorError(grpc.StatusCode.NOT_FOUND, f"Resource '{name}' does not exist.")
