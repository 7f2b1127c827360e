"""Provider-agnostic models, validated once at the edge.

Every provider receives already-validated values, so provider code can trust
names (DNS-1123 labels), bounded replica counts and bounded sizes. Validation
collects every violation with its field path, so a caller sees all that is wrong
in one INVALID_ARGUMENT instead of fixing fields one round-trip at a time.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .errors import FieldViolation, InvalidSpecError

DEFAULT_NAMESPACE = "default"

MAX_REPLICAS = 500
MAX_NAME_LENGTH = 63
MAX_IMAGE_LENGTH = 512
MAX_COMMAND_ARGS = 256
MAX_ARG_BYTES = 8 * 1024
MAX_ENV_ENTRIES = 256
MAX_ENV_KEY_LENGTH = 256
MAX_ENV_VALUE_BYTES = 32 * 1024
MAX_ENV_TOTAL_BYTES = 256 * 1024
MAX_LABELS = 64
MAX_LABEL_VALUE_LENGTH = 63
MAX_PORTS = 64
MAX_OPTIONS = 64
MAX_OPTION_KEY_LENGTH = 128
MAX_OPTION_VALUE_BYTES = 4 * 1024
MAX_CONFIG_KEYS = 512
MAX_CONFIG_VALUE_BYTES = 64 * 1024
MAX_CONFIG_TOTAL_BYTES = 512 * 1024
MAX_VERSION_LENGTH = 128

SECRET_PREFIX = "secret."
"""Config keys named ``secret.NAME`` are write-only through the API: reads show
``SECRET_MASK`` in their place, and replicas receive the value as ``NAME``."""
SECRET_MASK = "<secret>"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONFIG_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,253}$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_CPU = re.compile(r"^(\d+(\.\d{1,3})?|\d+m)$")
# Kubernetes quantity suffixes (k8s.io/apimachinery resource.Quantity): decimal SI is
# lowercase "k" then "M", "G", "T"; "K" is not a suffix there, and the API server fails
# to parse a limit written with it.
_MEMORY = re.compile(r"^(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_MEMORY_UNITS = {
    None: 1,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


class ProviderKind(enum.StrEnum):
    """The family of backend a provider drives. Third-party providers may use a plain string."""

    LOCAL = "local"
    DOCKER_COMPOSE = "docker_compose"
    KUBERNETES = "kubernetes"
    AWS = "aws"
    AZURE = "azure"
    GCP = "gcp"


class DeploymentState(enum.StrEnum):
    """Coarse state of a service, the same vocabulary on every backend."""

    PENDING = "pending"
    """Accepted; not every desired replica is running yet."""
    RUNNING = "running"
    """Every desired replica is ready."""
    DEGRADED = "degraded"
    """Some replicas are failing or restarting after having run."""
    STOPPED = "stopped"
    """No replica is desired (stopped, or scaled to zero); the definition is kept."""
    FAILED = "failed"
    """The backend gave up on the service; the message says why."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class PortSpec:
    """A container/process port, optionally published on the host."""

    container_port: int
    host_port: int = 0
    protocol: str = "tcp"


@dataclass(frozen=True, slots=True)
class Resources:
    """Limits in Kubernetes quantity syntax: cpu ``"500m"``/``"1.5"``, memory ``"256Mi"``."""

    cpu: str = ""
    memory: str = ""

    def cpu_millicores(self) -> int | None:
        if not self.cpu:
            return None
        if self.cpu.endswith("m"):
            return int(self.cpu[:-1])
        return round(float(self.cpu) * 1000)

    def memory_bytes(self) -> int | None:
        if not self.memory:
            return None
        match = _MEMORY.match(self.memory)
        if match is None:
            raise ValueError(f"not a memory quantity: {self.memory!r}")
        return int(match.group(1)) * _MEMORY_UNITS[match.group(2)]


@dataclass(frozen=True, slots=True)
class DeploymentSpec:
    """What a caller wants running: ``replicas`` copies of one image or command."""

    service_id: str
    namespace: str = DEFAULT_NAMESPACE
    image: str = ""
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    replicas: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[PortSpec, ...] = ()
    resources: Resources = field(default_factory=Resources)
    provider_options: Mapping[str, str] = field(default_factory=dict)

    def validate(self, prefix: str = "spec") -> DeploymentSpec:
        """Return self when valid; raise ``InvalidSpecError`` naming every bad field."""
        violations = self.violations(prefix)
        if violations:
            raise InvalidSpecError(violations)
        return self

    def violations(self, prefix: str = "spec") -> list[FieldViolation]:
        """Every bad field, with its path under ``prefix``."""
        violations: list[FieldViolation] = []
        check_name(violations, f"{prefix}.service_id", self.service_id)
        check_name(violations, f"{prefix}.namespace", self.namespace)
        check_replicas(violations, f"{prefix}.replicas", self.replicas)
        if not self.image and not self.command:
            violations.append(
                FieldViolation(f"{prefix}.image", "either an image or a command is required")
            )
        if len(self.image) > MAX_IMAGE_LENGTH or any(c.isspace() for c in self.image):
            violations.append(
                FieldViolation(
                    f"{prefix}.image", f"must be at most {MAX_IMAGE_LENGTH} chars, no whitespace"
                )
            )
        _check_command(violations, f"{prefix}.command", self.command)
        _check_env(violations, f"{prefix}.env", self.env)
        _check_labels(violations, f"{prefix}.labels", self.labels)
        _check_ports(violations, f"{prefix}.ports", self.ports)
        _check_resources(violations, f"{prefix}.resources", self.resources)
        _check_options(violations, f"{prefix}.provider_options", self.provider_options)
        return violations


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    """One replica as the backend reports it (process, container, pod, task...)."""

    instance_id: str
    state: str
    ready: bool
    restarts: int = 0
    message: str = ""


@dataclass(frozen=True, slots=True)
class DeploymentStatus:
    """Observed state of one service."""

    service_id: str
    namespace: str
    provider: str
    state: DeploymentState
    desired_replicas: int
    ready_replicas: int
    message: str = ""
    updated_at: datetime = field(default_factory=_utcnow)
    restarts: int = 0
    instances: tuple[InstanceStatus, ...] = ()
    image: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    """Result of a provider's credential/connectivity probe."""

    alias: str
    kind: str
    healthy: bool
    message: str = ""
    details: Mapping[str, str] = field(default_factory=dict)
    checked_at: datetime = field(default_factory=_utcnow)


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """A service's configuration data and an opaque version for optimistic concurrency."""

    service_id: str
    namespace: str
    data: Mapping[str, str]
    version: str


@dataclass(frozen=True, slots=True)
class ConfigMapPatch:
    """Keys to set and remove; ``expected_version`` empty means unconditional."""

    service_id: str
    namespace: str = DEFAULT_NAMESPACE
    set: Mapping[str, str] = field(default_factory=dict)
    remove: tuple[str, ...] = ()
    expected_version: str = ""

    def validate(self, prefix: str = "patch") -> ConfigMapPatch:
        """Return self when valid; raise ``InvalidSpecError`` naming every bad field."""
        violations = self.violations(prefix)
        if violations:
            raise InvalidSpecError(violations)
        return self

    def violations(self, prefix: str = "patch") -> list[FieldViolation]:
        """Every bad field, with its path under ``prefix``."""
        violations: list[FieldViolation] = []
        check_name(violations, f"{prefix}.service_id", self.service_id)
        check_name(violations, f"{prefix}.namespace", self.namespace)
        if not self.set and not self.remove:
            violations.append(FieldViolation(f"{prefix}.set", "set or remove at least one key"))
        _check_config(violations, f"{prefix}.set", self.set)
        for index, key in enumerate(self.remove):
            if not _CONFIG_KEY.match(key):
                violations.append(
                    FieldViolation(f"{prefix}.remove[{index}]", "not a valid config key")
                )
        both = set(self.set).intersection(self.remove)
        if both:
            violations.append(
                FieldViolation(f"{prefix}.remove", f"{len(both)} key(s) both set and removed")
            )
        if len(self.expected_version) > MAX_VERSION_LENGTH:
            violations.append(FieldViolation(f"{prefix}.expected_version", "too long"))
        return violations

    def applied_to(self, data: Mapping[str, str]) -> dict[str, str]:
        """The config data after this patch; checks the merged size bound too."""
        merged = {k: v for k, v in data.items() if k not in self.remove}
        merged.update(self.set)
        violations: list[FieldViolation] = []
        _check_config(violations, "patch.set", merged)
        if violations:
            raise InvalidSpecError(violations)
        return merged


@dataclass(frozen=True, slots=True)
class MetricSample:
    """One aggregated sample across a service's replicas.

    ``ok`` is False when the backend could not be read for this interval; the
    stream carries on and ``error`` says why (never a secret).
    """

    service_id: str
    namespace: str
    provider: str
    timestamp: datetime
    replicas: int
    cpu_percent: float = 0.0
    memory_bytes: int = 0
    network_rx_bytes: int = 0
    network_tx_bytes: int = 0
    ok: bool = True
    error: str = ""
    extra: Mapping[str, float] = field(default_factory=dict)


MAX_LOG_LINE_BYTES = 16 * 1024
"""A log line longer than this is cut there (``LogEntry.truncated``)."""
MAX_TAIL_LINES = 10_000
"""The most retained lines per replica a StreamLogs call sends before following."""


class LogStreamKind(enum.StrEnum):
    """Which output of a replica a line came from."""

    STDOUT = "stdout"
    STDERR = "stderr"
    UNSPECIFIED = ""


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One line a replica wrote, without its newline."""

    instance_id: str
    time: datetime
    text: str
    stream: LogStreamKind = LogStreamKind.UNSPECIFIED
    truncated: bool = False

    @classmethod
    def bounded(
        cls,
        instance_id: str,
        time: datetime,
        raw: str | bytes,
        stream: LogStreamKind = LogStreamKind.UNSPECIFIED,
    ) -> LogEntry:
        """An entry from a raw line: newline stripped, undecodable bytes replaced, and
        cut at ``MAX_LOG_LINE_BYTES`` (marked ``truncated``)."""
        data = raw if isinstance(raw, bytes) else raw.encode()
        data = data.rstrip(b"\r\n")
        truncated = len(data) > MAX_LOG_LINE_BYTES
        text = data[:MAX_LOG_LINE_BYTES].decode("utf-8", "replace")
        return cls(instance_id, time, text, stream, truncated)


@dataclass(frozen=True, slots=True)
class LogQuery:
    """What a StreamLogs call asks for (validated)."""

    follow: bool = False
    tail_lines: int = 0
    """The last N lines per replica; 0 = every retained line (up to MAX_TAIL_LINES)."""
    since: datetime | None = None
    instance_id: str = ""

    @property
    def tail(self) -> int:
        """How many retained lines per replica to send at most."""
        return self.tail_lines or MAX_TAIL_LINES

    def wants(self, entry: LogEntry) -> bool:
        """Whether ``entry`` passes the instance and time filters."""
        if self.instance_id and entry.instance_id != self.instance_id:
            return False
        return self.since is None or entry.time >= self.since


class EventKind(enum.StrEnum):
    """What happened to a deployment, in a namespace-wide watch."""

    ADDED = "added"
    MODIFIED = "modified"
    DELETED = "deleted"
    SNAPSHOT_DONE = "snapshot_done"
    """Every deployment that existed when the watch began was sent as ADDED."""


@dataclass(frozen=True, slots=True)
class DeploymentEvent:
    kind: EventKind
    status: DeploymentStatus | None = None
    """None only for SNAPSHOT_DONE."""


def is_secret_key(key: str) -> bool:
    return key.startswith(SECRET_PREFIX)


def config_environment(data: Mapping[str, str]) -> dict[str, str]:
    """Config as replica environment variables: ``secret.NAME`` is delivered as ``NAME``."""
    return {key.removeprefix(SECRET_PREFIX): value for key, value in data.items()}


def masked_config(data: Mapping[str, str]) -> dict[str, str]:
    """Config as callers may see it: the values of secret keys replaced by the mask."""
    return {key: SECRET_MASK if is_secret_key(key) else value for key, value in data.items()}


# -- field checks, shared by the models and by request validation ------------------------------


def check_name(violations: list[FieldViolation], path: str, value: str) -> None:
    """A DNS-1123 label: what every backend accepts as a name."""
    if not value:
        violations.append(FieldViolation(path, "is required"))
    elif len(value) > MAX_NAME_LENGTH or not _DNS1123_LABEL.match(value):
        violations.append(
            FieldViolation(
                path,
                "must be a DNS-1123 label: at most 63 lowercase letters, digits or '-', "
                "starting and ending with a letter or digit",
            )
        )


_ALIAS = re.compile(r"[a-z][a-z0-9_]{0,62}")


def check_alias(violations: list[FieldViolation], path: str, value: str) -> None:
    """A provider alias: a lowercase letter, then up to 62 lowercase letters, digits or '_'."""
    if not _ALIAS.fullmatch(value):
        violations.append(
            FieldViolation(
                path, "a provider alias: lowercase letters, digits or '_', starting with a letter"
            )
        )


def check_replicas(violations: list[FieldViolation], path: str, value: int) -> None:
    if not 0 <= value <= MAX_REPLICAS:
        violations.append(FieldViolation(path, f"must be between 0 and {MAX_REPLICAS}"))


def validate_service_ref(service_id: str, namespace: str) -> None:
    """Validate the (service_id, namespace) pair that most requests carry."""
    violations: list[FieldViolation] = []
    check_name(violations, "service_id", service_id)
    check_name(violations, "namespace", namespace)
    if violations:
        raise InvalidSpecError(violations)


def _has_nul(value: str) -> bool:
    return "\x00" in value


def _item(path: str, key: str) -> str:
    """``path['key']`` with the key shortened: errors must stay small whatever was sent."""
    shown = key if len(key) <= 64 else key[:61] + "..."
    return f"{path}[{shown!r}]"


def _check_command(violations: list[FieldViolation], path: str, command: Sequence[str]) -> None:
    if len(command) > MAX_COMMAND_ARGS:
        violations.append(FieldViolation(path, f"at most {MAX_COMMAND_ARGS} arguments"))
        return
    if command and not command[0]:
        violations.append(FieldViolation(f"{path}[0]", "the program must not be empty"))
    for index, arg in enumerate(command):
        if _has_nul(arg) or len(arg.encode()) > MAX_ARG_BYTES:
            violations.append(
                FieldViolation(f"{path}[{index}]", f"no NUL bytes, at most {MAX_ARG_BYTES} bytes")
            )


def _check_env(violations: list[FieldViolation], path: str, env: Mapping[str, str]) -> None:
    if len(env) > MAX_ENV_ENTRIES:
        violations.append(FieldViolation(path, f"at most {MAX_ENV_ENTRIES} entries"))
        return
    total = 0
    for key, value in env.items():
        total += len(key) + len(value.encode())
        if len(key) > MAX_ENV_KEY_LENGTH or not _ENV_KEY.match(key):
            violations.append(
                FieldViolation(_item(path, key), "not a valid environment variable name")
            )
        elif _has_nul(value) or len(value.encode()) > MAX_ENV_VALUE_BYTES:
            violations.append(
                FieldViolation(
                    _item(path, key), f"no NUL bytes, at most {MAX_ENV_VALUE_BYTES} bytes"
                )
            )
    if total > MAX_ENV_TOTAL_BYTES:
        violations.append(FieldViolation(path, f"at most {MAX_ENV_TOTAL_BYTES} bytes in all"))


def _check_labels(violations: list[FieldViolation], path: str, labels: Mapping[str, str]) -> None:
    if len(labels) > MAX_LABELS:
        violations.append(FieldViolation(path, f"at most {MAX_LABELS} labels"))
        return
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (prefix and not _LABEL_PREFIX.match(prefix)) or not _LABEL_NAME.match(name):
            violations.append(
                FieldViolation(_item(path, key), "not a valid label key ([prefix/]name)")
            )
        elif len(value) > MAX_LABEL_VALUE_LENGTH or not _LABEL_VALUE.match(value):
            violations.append(
                FieldViolation(
                    _item(path, key),
                    "label values are at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends",
                )
            )


def _check_ports(violations: list[FieldViolation], path: str, ports: Sequence[PortSpec]) -> None:
    if len(ports) > MAX_PORTS:
        violations.append(FieldViolation(path, f"at most {MAX_PORTS} ports"))
        return
    for index, port in enumerate(ports):
        if not 1 <= port.container_port <= 65535:
            violations.append(
                FieldViolation(f"{path}[{index}].container_port", "must be between 1 and 65535")
            )
        if not 0 <= port.host_port <= 65535:
            violations.append(
                FieldViolation(f"{path}[{index}].host_port", "must be between 0 and 65535")
            )
        if port.protocol not in ("tcp", "udp"):
            violations.append(FieldViolation(f"{path}[{index}].protocol", "must be tcp or udp"))


def _check_resources(violations: list[FieldViolation], path: str, resources: Resources) -> None:
    if resources.cpu and (not _CPU.match(resources.cpu) or resources.cpu_millicores() == 0):
        violations.append(
            FieldViolation(f"{path}.cpu", "a positive CPU quantity such as '500m' or '1.5'")
        )
    if resources.memory and (not _MEMORY.match(resources.memory) or not resources.memory_bytes()):
        violations.append(
            FieldViolation(f"{path}.memory", "a positive memory quantity such as '256Mi' or '1Gi'")
        )


def _check_options(violations: list[FieldViolation], path: str, options: Mapping[str, str]) -> None:
    if len(options) > MAX_OPTIONS:
        violations.append(FieldViolation(path, f"at most {MAX_OPTIONS} options"))
        return
    for key, value in options.items():
        if not key or len(key) > MAX_OPTION_KEY_LENGTH or _has_nul(key):
            violations.append(FieldViolation(_item(path, key), "not a valid option key"))
        elif _has_nul(value) or len(value.encode()) > MAX_OPTION_VALUE_BYTES:
            violations.append(
                FieldViolation(
                    _item(path, key), f"no NUL bytes, at most {MAX_OPTION_VALUE_BYTES} bytes"
                )
            )


def _check_config(violations: list[FieldViolation], path: str, data: Mapping[str, str]) -> None:
    if len(data) > MAX_CONFIG_KEYS:
        violations.append(FieldViolation(path, f"at most {MAX_CONFIG_KEYS} keys"))
        return
    total = 0
    for key, value in data.items():
        total += len(key) + len(value.encode())
        if not _CONFIG_KEY.match(key):
            violations.append(
                FieldViolation(_item(path, key), "config keys are 1-253 of [A-Za-z0-9_.-]")
            )
        elif _has_nul(value) or len(value.encode()) > MAX_CONFIG_VALUE_BYTES:
            violations.append(
                FieldViolation(
                    _item(path, key), f"no NUL bytes, at most {MAX_CONFIG_VALUE_BYTES} bytes"
                )
            )
    if total > MAX_CONFIG_TOTAL_BYTES:
        violations.append(FieldViolation(path, f"at most {MAX_CONFIG_TOTAL_BYTES} bytes in all"))
