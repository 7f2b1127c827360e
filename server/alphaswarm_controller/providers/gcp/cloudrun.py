"""DeploymentSpec <-> Cloud Run v2 Service: names, limits, the template, and status.

A service of the provider is one Cloud Run service named from (namespace,
service_id) — readable prefix plus a hash, so any pair fits Cloud Run's 49
character rule and two pairs never collide — labelled with both ids. Replicas
are the service-level ``scaling.manual_instance_count`` (manual scaling mode),
so scaling never creates a revision; only template changes (image, command,
env, ports, limits, labels and the spec record, the config secret version) do, each
numbered by the controller (``revisions``).

Cloud Run reports no per-instance list. With manual scaling, a reconciled
service whose Ready condition succeeded and whose latest ready revision is the
latest created one serves exactly ``manual_instance_count`` instances, so that
is what ``ready_replicas`` reports; ``instances`` are named after the serving
revision (``<revision>-<n>``), which is why a new revision shows new instances.

A Cloud Run service serves requests: Cloud Run sets ``PORT`` (the spec's one port, else
8080) and fails the revision unless the container listens there, so a spec without
ports must still listen on ``$PORT``; CPU, memory and what they imply are in ``limits``.
"""

from __future__ import annotations

import enum
import hashlib
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from google.cloud import run_v2

from alphaswarm_core.providers.protocol import (
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    FieldViolation,
    InstanceStatus,
    InvalidSpecError,
    Resources,
)

from . import limits
from .revisions import (
    POLICY_KEYS,
    SPEC_KEY,
    RevisionFacts,
    number_of,
    policy_annotations,
    spec_record,
    with_facts,
)

MANAGED_BY = ("managed-by", "alphaswarm")
NAMESPACE_LABEL = "alphaswarm-namespace"
SERVICE_LABEL = "alphaswarm-service"
OWN_LABELS = frozenset({MANAGED_BY[0], NAMESPACE_LABEL, SERVICE_LABEL})
CONFIG_ENV = "ALPHASWARM_CONFIG"
"""Env var holding the service's config (JSON), a reference to its Secret Manager secret."""
RESERVED_ENV = frozenset({"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION", CONFIG_ENV})
CONTAINER_NAME = "app"

MAX_LABELS = 64
_NAME_LIMIT = 49


class Keep(enum.Enum):
    """``converge``'s ``ref`` when the service keeps the config reference it has."""

    CONFIG = "config"


HAS_MANUAL_SCALING = "manual_instance_count" in run_v2.ServiceScaling.meta.fields
_COND = run_v2.Condition.State


def cloud_run_name(namespace: str, service_id: str) -> str:
    """A valid Cloud Run service id (``^[a-z][-a-z0-9]{0,47}[a-z0-9]$``) unique per pair."""
    digest = hashlib.sha256(f"{namespace}/{service_id}".encode()).hexdigest()[:6]
    readable = f"{namespace}-{service_id}"
    if not readable[0].isalpha():
        readable = f"s{readable}"
    return f"{readable[: _NAME_LIMIT - 7].rstrip('-')}-{digest}"


def validate_spec(spec: DeploymentSpec) -> None:
    """What Cloud Run would reject, as field violations, before any API call."""
    violations: list[FieldViolation] = []
    if not spec.image:
        violations.append(
            FieldViolation("spec.image", "Cloud Run runs container images: an image is required")
        )
    violations += _port_violations(spec)
    for key in spec.env:
        if key in RESERVED_ENV:
            violations.append(
                FieldViolation(f"spec.env[{key!r}]", "reserved by Cloud Run or the controller")
            )
    violations += _label_violations(spec.labels)
    violations += limits.violations(spec.resources)
    # Cloud Run mode reads no option today: an option given is one the caller believes in.
    violations += [
        FieldViolation(f"spec.provider_options[{key!r}]", "unknown option; Cloud Run takes none")
        for key in spec.provider_options
    ]
    if violations:
        raise InvalidSpecError(violations)


def _port_violations(spec: DeploymentSpec) -> list[FieldViolation]:
    found = []
    if len(spec.ports) > 1:
        found.append(FieldViolation("spec.ports", "Cloud Run routes requests to one port"))
    for index, port in enumerate(spec.ports):
        if port.protocol != "tcp":
            found.append(FieldViolation(f"spec.ports[{index}].protocol", "Cloud Run serves tcp"))
        if port.host_port:
            found.append(
                FieldViolation(
                    f"spec.ports[{index}].host_port",
                    "must be 0: Cloud Run serves the port at the service URL",
                )
            )
    return found


def _label_text_ok(text: str, *, first_letter: bool) -> bool:
    """Google Cloud label rules (https://cloud.google.com/resource-manager/docs/labels-overview):
    lowercase letters (any script), digits, ``_`` and ``-``, at most 63 characters and
    128 bytes; a key starts with a lowercase letter."""
    if len(text) > 63 or len(text.encode()) > 128:
        return False
    for index, char in enumerate(text):
        kind = unicodedata.category(char)
        letter = kind in ("Ll", "Lo")
        if index == 0 and first_letter and not letter:
            return False
        if not (letter or kind.startswith("N") or char in "_-"):
            return False
    return True


def _label_violations(labels: Mapping[str, str]) -> list[FieldViolation]:
    found = []
    if len(labels) + len(OWN_LABELS) > MAX_LABELS:
        found.append(
            FieldViolation("spec.labels", f"at most {MAX_LABELS - len(OWN_LABELS)} labels")
        )
    for key, value in labels.items():
        if key in OWN_LABELS:
            found.append(FieldViolation(f"spec.labels[{key!r}]", "reserved by the controller"))
        elif not key or not _label_text_ok(key, first_letter=True):
            found.append(
                FieldViolation(
                    f"spec.labels[{key[:64]!r}]",
                    "Google Cloud label keys are lowercase letters, digits, '_' or '-', "
                    "starting with a letter",
                )
            )
        elif not _label_text_ok(value, first_letter=False):
            found.append(
                FieldViolation(
                    f"spec.labels[{key!r}]",
                    "Google Cloud label values are lowercase letters, digits, '_' or '-'",
                )
            )
    return found


def build_container(spec: DeploymentSpec, config_ref: run_v2.EnvVar | None) -> run_v2.Container:
    env = [run_v2.EnvVar(name=k, value=v) for k, v in sorted(spec.env.items())]
    if config_ref is not None:
        env.append(run_v2.EnvVar(config_ref))
    instance = limits.shape(spec.resources)
    return run_v2.Container(
        name=CONTAINER_NAME,
        image=spec.image,
        command=list(spec.command[:1]),
        args=list(spec.command[1:]),
        env=env,
        ports=[run_v2.ContainerPort(container_port=p.container_port) for p in spec.ports],
        resources=run_v2.ResourceRequirements(
            limits={"cpu": instance.cpu_text, "memory": instance.memory_text},
            cpu_idle=instance.request_based_billing,
        ),
    )


def build_template(
    spec: DeploymentSpec, config_ref: run_v2.EnvVar | None, service_account: str
) -> run_v2.RevisionTemplate:
    """The template of ``spec`` without revision facts (``revisions.with_facts`` adds them)."""
    instance = limits.shape(spec.resources)
    return run_v2.RevisionTemplate(
        annotations={SPEC_KEY: spec_record(spec)},
        containers=[build_container(spec, config_ref)],
        max_instance_request_concurrency=instance.concurrency,
        execution_environment=instance.execution_environment,
        service_account=service_account,
    )


def own_labels(spec: DeploymentSpec) -> dict[str, str]:
    return {
        **spec.labels,
        MANAGED_BY[0]: MANAGED_BY[1],
        NAMESPACE_LABEL: spec.namespace,
        SERVICE_LABEL: spec.service_id,
    }


def build_service(
    spec: DeploymentSpec, service_account: str = "", facts: RevisionFacts | None = None
) -> run_v2.Service:
    """A new service running ``spec`` as revision ``facts`` (1 unless given)."""
    template = build_template(spec, None, service_account)
    template.annotations = with_facts(template.annotations, facts or RevisionFacts(1))
    service = run_v2.Service(
        labels=own_labels(spec),
        annotations=policy_annotations(spec),
        template=template,
        traffic=[
            run_v2.TrafficTarget(
                type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST,
                percent=100,
            )
        ],
    )
    set_instance_count(service, spec.replicas)
    return service


def set_instance_count(service: run_v2.Service, count: int) -> None:
    if HAS_MANUAL_SCALING:
        service.scaling = run_v2.ServiceScaling(
            scaling_mode=run_v2.ServiceScaling.ScalingMode.MANUAL, manual_instance_count=count
        )
    else:  # older run_v2 without manual scaling: pin the revision's instance range
        service.template.scaling = run_v2.RevisionScaling(
            min_instance_count=count, max_instance_count=max(count, 1)
        )


def instance_count(service: run_v2.Service) -> int:
    if HAS_MANUAL_SCALING:
        return int(service.scaling.manual_instance_count)
    return int(service.template.scaling.min_instance_count)


def config_ref(service: run_v2.Service) -> run_v2.EnvVar | None:
    return template_config_ref(service.template.containers)


def template_config_ref(containers: Sequence[run_v2.Container]) -> run_v2.EnvVar | None:
    """The config reference among a template's (or a revision's) ``containers``."""
    for container in containers:
        for var in container.env:
            if var.name == CONFIG_ENV:
                return run_v2.EnvVar(var)
    return None


def pinned_version(containers: Sequence[run_v2.Container]) -> tuple[str, str] | None:
    """(secret, version) of the config a template or revision runs with (None: none)."""
    ref = template_config_ref(containers)
    if ref is None:
        return None
    selector = ref.value_source.secret_key_ref
    return str(selector.secret), str(selector.version)


def pins_newer(service: run_v2.Service, ref: run_v2.EnvVar | None) -> bool:
    """Whether ``service`` already runs a newer version of ``ref``'s secret. Config
    versions only move forward, so a write whose pin comes after a later write's must
    leave the later one (else the service would run an older config than GetConfig shows)."""
    pinned = pinned_version(service.template.containers)
    if ref is None or pinned is None:
        return False
    selector = ref.value_source.secret_key_ref
    secret, version = pinned
    return (
        secret == selector.secret
        and version.isdigit()
        and selector.version.isdigit()
        and int(version) > int(selector.version)
    )


def make_config_ref(secret: str, version: str) -> run_v2.EnvVar:
    return run_v2.EnvVar(
        name=CONFIG_ENV,
        value_source=run_v2.EnvVarSource(
            secret_key_ref=run_v2.SecretKeySelector(secret=secret, version=version)
        ),
    )


def _quantity(kind: str, text: str) -> int | None:
    if not text:
        return None
    try:
        if kind == "cpu":
            return Resources(cpu=text).cpu_millicores()
        return Resources(memory=text).memory_bytes()
    except ValueError:
        return None


def template_key(
    template: run_v2.RevisionTemplate, *, environment: bool = True, identity: bool = True
) -> tuple[object, ...]:
    """What the provider owns of a template, normalised (server defaults aside).

    ``environment`` and ``identity`` say whether the execution environment and the service
    account are the provider's: it sets the first only where Cloud Run requires the first
    generation, and the second only when ALPHASWARM_GCP_SERVICE_ACCOUNT is set; otherwise
    they are left to Cloud Run (or to whoever set them) and not compared."""
    containers = tuple(
        (
            c.image,
            tuple(c.command),
            tuple(c.args),
            tuple(
                (
                    v.name,
                    v.value,
                    v.value_source.secret_key_ref.secret,
                    v.value_source.secret_key_ref.version,
                )
                for v in sorted(c.env, key=lambda v: str(v.name))
            ),
            tuple(p.container_port for p in c.ports),
            _quantity("cpu", c.resources.limits.get("cpu", "")),
            _quantity("memory", c.resources.limits.get("memory", "")),
            bool(c.resources.cpu_idle),
        )
        for c in template.containers
    )
    return (
        containers,
        int(template.max_instance_request_concurrency),
        str(template.service_account) if identity else None,
        int(template.execution_environment) if environment else None,
        str(template.annotations.get(SPEC_KEY, "")),
    )


def converge(
    existing: run_v2.Service,
    spec: DeploymentSpec,
    service_account: str = "",
    *,
    cause: str = "",
    ref: run_v2.EnvVar | Keep | None = Keep.CONFIG,
    restores: RevisionFacts | None = None,
) -> run_v2.Service | None:
    """The service updated to ``spec``, or None if it holds. A changed template is the
    next revision (its number one more than the template's, with ``cause``); ``ref`` is
    the config reference to run with (``Keep.CONFIG``: the service's). ``restores``: a
    rollback, always a new revision, with these facts (number aside)."""
    updated = run_v2.Service(existing)
    changed = False
    desired = build_template(
        spec, config_ref(existing) if isinstance(ref, Keep) else ref, service_account
    )
    owned = {
        "environment": desired.execution_environment != limits.ANY_ENVIRONMENT,
        "identity": bool(service_account),
    }
    if restores or template_key(desired, **owned) != template_key(existing.template, **owned):
        # Only what the provider owns changes; the rest of the template (a timeout or a
        # VPC connector set with gcloud) is kept.
        template = run_v2.RevisionTemplate(existing.template)
        template.revision = ""  # a named revision cannot be reused for new settings
        template.containers = desired.containers
        template.max_instance_request_concurrency = desired.max_instance_request_concurrency
        if owned["environment"]:
            template.execution_environment = desired.execution_environment
        if owned["identity"]:
            template.service_account = desired.service_account
        number = number_of(existing.template) + 1
        facts = replace(restores, number=number) if restores else RevisionFacts(number, cause)
        annotations = {**existing.template.annotations, **desired.annotations}
        template.annotations = with_facts(annotations, facts)
        updated.template = template
        changed = True
    if dict(existing.labels) != own_labels(spec):
        updated.labels = own_labels(spec)
        changed = True
    policy = policy_annotations(spec)
    if {k: v for k, v in existing.annotations.items() if k in POLICY_KEYS} != policy:
        updated.annotations = {**existing.annotations, **policy}
        changed = True
    if instance_count(existing) != spec.replicas or (
        HAS_MANUAL_SCALING
        and existing.scaling.scaling_mode != run_v2.ServiceScaling.ScalingMode.MANUAL
    ):
        set_instance_count(updated, spec.replicas)
        changed = True
    return updated if changed else None


def serving_revision(service: run_v2.Service) -> str:
    """The full name of the revision that takes (most of) the traffic: the provider routes
    100 % to LATEST, which serves ``latest_ready_revision``; a split set by someone else is
    read from ``traffic_statuses`` ("Detailed status information for corresponding traffic
    targets", service.proto). "" when none serves."""
    best = max(service.traffic_statuses, key=lambda t: int(t.percent), default=None)
    if best is not None and best.percent > 0 and best.revision:
        return f"{service.name}/revisions/{best.revision}"
    return str(service.latest_ready_revision)


def owner(service: run_v2.Service) -> tuple[str, str] | None:
    labels = service.labels
    if labels.get(MANAGED_BY[0]) != MANAGED_BY[1]:
        return None
    namespace, service_id = labels.get(NAMESPACE_LABEL), labels.get(SERVICE_LABEL)
    if not namespace or not service_id:
        return None
    return str(namespace), str(service_id)


def limits_of(service: run_v2.Service) -> tuple[float, int]:
    """(CPU cores, memory bytes) of one instance of the service's template."""
    container = service.template.containers[0] if service.template.containers else None
    raw = container.resources.limits if container is not None else {}
    cpu = _quantity("cpu", raw.get("cpu", "")) or limits.DEFAULT_CPU_MILLI
    memory = _quantity("memory", raw.get("memory", "")) or limits.DEFAULT_MEMORY
    return cpu / 1000, memory


def to_status(service: run_v2.Service, alias: str) -> DeploymentStatus:
    namespace, service_id = owner(service) or ("", service.name.rsplit("/", 1)[-1])
    desired = instance_count(service)
    condition = service.terminal_condition
    ready_revision = service.latest_ready_revision.rsplit("/", 1)[-1]
    serving = ready_revision and any(
        t.revision == ready_revision and t.percent > 0 for t in service.traffic_statuses
    )
    settled = (
        not service.reconciling
        and condition.state == _COND.CONDITION_SUCCEEDED
        and service.latest_ready_revision == service.latest_created_revision
    )
    message = str(condition.message)
    if condition.state == _COND.CONDITION_FAILED:
        # A failed rollout leaves the previous ready revision serving, if there is one.
        state = DeploymentState.DEGRADED if serving and desired else DeploymentState.FAILED
        ready = desired if serving else 0
    elif desired == 0:
        state, ready = DeploymentState.STOPPED, 0
    elif settled and serving:
        state, ready = DeploymentState.RUNNING, desired
    else:
        state, ready = DeploymentState.PENDING, 0
        message = message or "Cloud Run is reconciling the service"
    container = service.template.containers[0] if service.template.containers else None
    changed: object = service.update_time or service.create_time
    created: object = service.create_time
    return DeploymentStatus(
        service_id=service_id,
        namespace=namespace,
        provider=alias,
        state=state,
        desired_replicas=desired,
        ready_replicas=ready,
        message=message,
        instances=tuple(
            InstanceStatus(f"{ready_revision}-{n}", "serving", True) for n in range(ready)
        ),
        image=container.image if container is not None else "",
        labels={k: v for k, v in service.labels.items() if k not in OWN_LABELS},
        updated_at=datetime.now(UTC),
        created_at=created if isinstance(created, datetime) else None,
        changed_at=changed if isinstance(changed, datetime) else None,
    )
