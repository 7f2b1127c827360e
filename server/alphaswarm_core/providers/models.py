"""Provider-agnostic models, validated once at the edge.

Every provider receives already-validated values, so provider code can trust
names (DNS-1123 labels), bounded replica counts and bounded sizes. Validation
collects every violation with its field path, so a caller sees all that is wrong
in one INVALID_ARGUMENT instead of fixing fields one round-trip at a time.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from .errors import FieldViolation, InvalidSpecError

DEFAULT_NAMESPACE = "default"

MAX_REPLICAS = 500
MAX_NAME_LENGTH = 63
MAX_ALIAS_LENGTH = 63
MAX_IMAGE_LENGTH = 512
MAX_COMMAND_ARGS = 256
MAX_ARG_BYTES = 8 * 1024
MAX_ENV_ENTRIES = 256
MAX_ENV_KEY_LENGTH = 256
MAX_ENV_VALUE_BYTES = 32 * 1024
MAX_ENV_TOTAL_BYTES = 256 * 1024
MAX_LABELS = 64
MAX_LABEL_NAME_LENGTH = 63
MAX_LABEL_PREFIX_LENGTH = 253
"""A label key's optional prefix is a DNS-1123 subdomain (Kubernetes' qualified names)."""
MAX_LABEL_VALUE_LENGTH = 63
MAX_PORTS = 64
MIN_PORT = 1
MAX_PORT = 65535
MAX_OPTIONS = 64
MAX_OPTION_KEY_LENGTH = 128
MAX_OPTION_VALUE_BYTES = 4 * 1024
MAX_CONFIG_KEYS = 512
MAX_CONFIG_KEY_LENGTH = 253
MAX_CONFIG_VALUE_BYTES = 64 * 1024
MAX_CONFIG_TOTAL_BYTES = 512 * 1024
MAX_VERSION_LENGTH = 128
MAX_CHANGE_CAUSE_LENGTH = 1024
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600.0
MIN_PROGRESS_DEADLINE_SECONDS = 1.0
MAX_PROGRESS_DEADLINE_SECONDS = 3600.0
MAX_QUANTITY_LENGTH = 32
MAX_CPU_MILLICORES = 1_000_000
"""1000 cores: more than any single machine or task a backend offers today."""
MAX_MEMORY_BYTES = 1024**5
"""1 PiB."""

SECRET_PREFIX = "secret."
"""Config keys named ``secret.NAME`` are write-only through the API: reads show
``SECRET_MASK`` in their place, and replicas receive the value as ``NAME``."""
SECRET_MASK = "<secret>"

# Every pattern is applied with ``fullmatch``: ``re.match`` with ``$`` accepts a trailing
# newline ("web\n"), which would name a second deployment that prints like the first.
# Character classes are spelled out in ASCII: ``\d`` would also match other scripts' digits.
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_ALIAS = re.compile(r"[a-z][a-z0-9_]{0,62}")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONFIG_KEY = re.compile(rf"[A-Za-z0-9_.-]{{1,{MAX_CONFIG_KEY_LENGTH}}}")
_OPTION_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]*")
_LABEL_NAME = re.compile(
    rf"[A-Za-z0-9]([-A-Za-z0-9_.]{{0,{MAX_LABEL_NAME_LENGTH - 2}}}[A-Za-z0-9])?"
)
# A DNS-1123 subdomain: dot-separated DNS-1123 labels ("a..b" and "a.-b" are not one).
_LABEL_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_CPU = re.compile(r"(?P<whole>[0-9]+)(\.(?P<fraction>[0-9]{1,3}))?|(?P<milli>[0-9]+)m")
# Kubernetes quantity suffixes (k8s.io/apimachinery resource.Quantity): decimal SI is
# lowercase "k" then "M", "G", "T", "P"; "K" is not a suffix there, and the API server
# fails to parse a limit written with it.
_MEMORY = re.compile(r"(?P<number>[0-9]+)(?P<unit>Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?")
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
    "P": 1000**5,
    "Pi": 1024**5,
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
        """The CPU limit in millicores; ValueError when it is not a bounded quantity."""
        return parse_cpu_millicores(self.cpu) if self.cpu else None

    def memory_bytes(self) -> int | None:
        """The memory limit in bytes; ValueError when it is not a bounded quantity."""
        return parse_memory_bytes(self.memory) if self.memory else None


def parse_cpu_millicores(text: str) -> int:
    """``"500m"`` -> 500, ``"1.5"`` -> 1500; at most ``MAX_CPU_MILLICORES``.

    Exact integer arithmetic (no float): a string of 309 nines must be refused,
    not overflow into infinity.
    """
    match = _CPU.fullmatch(text) if len(text) <= MAX_QUANTITY_LENGTH else None
    if match is None:
        raise ValueError(f"not a CPU quantity: {_shown(text)}")
    if match["milli"] is not None:
        millicores = int(match["milli"])
    else:
        millicores = int(match["whole"]) * 1000 + int((match["fraction"] or "0").ljust(3, "0"))
    if millicores > MAX_CPU_MILLICORES:
        raise ValueError(f"CPU quantity above {MAX_CPU_MILLICORES // 1000} cores: {_shown(text)}")
    return millicores


def parse_memory_bytes(text: str) -> int:
    """``"256Mi"`` -> 268435456; at most ``MAX_MEMORY_BYTES``."""
    match = _MEMORY.fullmatch(text) if len(text) <= MAX_QUANTITY_LENGTH else None
    if match is None:
        raise ValueError(f"not a memory quantity: {_shown(text)}")
    size = int(match["number"]) * _MEMORY_UNITS[match["unit"]]
    if size > MAX_MEMORY_BYTES:
        raise ValueError(f"memory quantity above 1Pi: {_shown(text)}")
    return size


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
    progress_deadline_seconds: float = DEFAULT_PROGRESS_DEADLINE_SECONDS
    """A rollout without progress for this long is FAILED (PROGRESS_DEADLINE_EXCEEDED)."""
    auto_rollback: bool = False
    """When a rollout of this spec fails, roll back to the previous revision at once."""

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
        if (
            len(self.image) > MAX_IMAGE_LENGTH
            or any(c.isspace() for c in self.image)
            or has_control_characters(self.image)
        ):
            violations.append(
                FieldViolation(
                    f"{prefix}.image",
                    f"at most {MAX_IMAGE_LENGTH} chars, no whitespace or control characters",
                )
            )
        _check_command(violations, f"{prefix}.command", self.command)
        _check_env(violations, f"{prefix}.env", self.env)
        _check_labels(violations, f"{prefix}.labels", self.labels)
        _check_ports(violations, f"{prefix}.ports", self.ports)
        _check_resources(violations, f"{prefix}.resources", self.resources)
        _check_options(violations, f"{prefix}.provider_options", self.provider_options)
        deadline = self.progress_deadline_seconds
        if not (MIN_PROGRESS_DEADLINE_SECONDS <= deadline <= MAX_PROGRESS_DEADLINE_SECONDS):
            violations.append(
                FieldViolation(
                    f"{prefix}.progress_deadline",
                    f"must be between {MIN_PROGRESS_DEADLINE_SECONDS:g} s and "
                    f"{MAX_PROGRESS_DEADLINE_SECONDS:g} s",
                )
            )
        return violations

    def runs_as(self, other: DeploymentSpec) -> bool:
        """Whether ``other`` runs the same thing: equal but for the replica count and the
        rollout policy (a change of either is no new revision)."""
        return replace(self, replicas=0, progress_deadline_seconds=0, auto_rollback=False) == (
            replace(other, replicas=0, progress_deadline_seconds=0, auto_rollback=False)
        )


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    """One replica as the backend reports it (process, container, pod, task...)."""

    instance_id: str
    state: str
    ready: bool
    restarts: int = 0
    message: str = ""
    started_at: datetime | None = None
    """When the replica's current process/container/pod started, as the backend says."""


@dataclass(frozen=True, slots=True)
class DeploymentStatus:
    """Observed state of one service.

    ``updated_at`` is when this status was observed (the provider's read of the
    backend), ``created_at`` when the service was first created and ``changed_at``
    when its spec or config last changed, where the backend records them. ``spec``
    is what runs, read back from what the provider stored, where it can.
    """

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
    created_at: datetime | None = None
    changed_at: datetime | None = None
    spec: DeploymentSpec | None = None
    revision: int = 0
    """The desired revision (0: the provider keeps no revisions)."""
    observed_revision: int = 0
    """The revision the replicas run now."""
    rollout: Rollout | None = None
    conditions: tuple[Condition, ...] = ()


class RolloutState(enum.StrEnum):
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Rollout:
    """How the change to a service's desired revision is going."""

    state: RolloutState
    started_at: datetime
    reason: str = ""
    """When FAILED (or stuck): an ErrorReason name (IMAGE_PULL_FAILED, CRASH_LOOP, ...)."""
    message: str = ""
    finished_at: datetime | None = None

    @property
    def done(self) -> bool:
        return self.state is not RolloutState.IN_PROGRESS


@dataclass(frozen=True, slots=True)
class Condition:
    """One aspect of a service's state, in the Kubernetes style."""

    type: str
    """``Available`` or ``Progressing``."""
    status: bool | None
    """True, False, or None (unknown)."""
    last_transition_time: datetime
    reason: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class Revision:
    """One version of what a service runs: the spec (replicas aside) and the config."""

    number: int
    spec: DeploymentSpec
    config: Mapping[str, str]
    """The config data it ran with, secrets included: never sent to callers as is."""
    config_version: str
    created_at: datetime
    change_cause: str = ""
    rollback_of: int = 0
    automatic: bool = False


@dataclass(frozen=True, slots=True)
class ChangeRequest:
    """What a caller said about a change beside the change itself."""

    expected_revision: int = 0
    """0: unconditional; -1: the service must not exist yet; else its current revision."""
    change_cause: str = ""


NO_CHANGE_REQUEST = ChangeRequest()


class PlanAction(enum.StrEnum):
    NOTHING = "nothing"
    CREATE = "create"
    IN_PLACE = "in_place"
    ROLLING_RESTART = "rolling_restart"
    REPLACE = "replace"


@dataclass(frozen=True, slots=True)
class FieldChange:
    path: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Plan:
    """What a change would do, computed without changing anything."""

    revision: int
    """The revision it was computed against (0: the service does not exist)."""
    action: PlanAction
    changes: tuple[FieldChange, ...] = ()


@dataclass(frozen=True, slots=True)
class Definition:
    """What a service is meant to run now: its desired spec, config and revision."""

    spec: DeploymentSpec
    config: Mapping[str, str]
    config_version: str
    revision: int


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
            # Only the charset: a key stored before the secret-name rule can still be removed.
            if not _CONFIG_KEY.fullmatch(key):
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
    elif not is_name(value):
        violations.append(
            FieldViolation(
                path,
                "must be a DNS-1123 label: at most 63 lowercase letters, digits or '-', "
                "starting and ending with a letter or digit",
            )
        )


def is_name(value: str) -> bool:
    """Whether ``value`` is a DNS-1123 label of at most ``MAX_NAME_LENGTH`` characters."""
    return len(value) <= MAX_NAME_LENGTH and _DNS1123_LABEL.fullmatch(value) is not None


ALIAS_RULE = "1-63 lowercase letters, digits or '_', starting with a letter"


def is_alias(value: str) -> bool:
    """Whether ``value`` is a well-formed provider alias (registered or not).

    Aliases become parts of setting names (``ALPHASWARM_<ALIAS>_*``), metric
    labels and log lines, hence the narrow charset.
    """
    return len(value) <= MAX_ALIAS_LENGTH and _ALIAS.fullmatch(value) is not None


def check_alias(violations: list[FieldViolation], path: str, value: str) -> None:
    """A provider alias. Empty is not one: resolve the server's default before checking."""
    if not value:
        violations.append(FieldViolation(path, "is required"))
    elif not is_alias(value):
        violations.append(FieldViolation(path, f"must be a provider alias: {ALIAS_RULE}"))


def validate_alias(value: str, path: str = "provider") -> str:
    """``value`` when it is a well-formed alias, else ``InvalidSpecError`` naming ``path``."""
    violations: list[FieldViolation] = []
    check_alias(violations, path, value)
    if violations:
        raise InvalidSpecError(violations)
    return value


def check_replicas(violations: list[FieldViolation], path: str, value: int) -> None:
    if not 0 <= value <= MAX_REPLICAS:
        violations.append(FieldViolation(path, f"must be between 0 and {MAX_REPLICAS}"))


def check_config_key(violations: list[FieldViolation], path: str, key: str) -> None:
    """1 to ``MAX_CONFIG_KEY_LENGTH`` of ``[A-Za-z0-9_.-]``; ``secret.NAME`` needs NAME to
    be an environment variable name, since replicas receive the value as ``NAME``."""
    if not _CONFIG_KEY.fullmatch(key):
        violations.append(
            FieldViolation(path, f"config keys are 1-{MAX_CONFIG_KEY_LENGTH} of [A-Za-z0-9_.-]")
        )
    elif is_secret_key(key) and not _ENV_KEY.fullmatch(key.removeprefix(SECRET_PREFIX)):
        violations.append(
            FieldViolation(
                path,
                f"'{SECRET_PREFIX}NAME' needs NAME to be an environment variable name "
                "([A-Za-z_][A-Za-z0-9_]*): replicas receive the value as NAME",
            )
        )


def validate_service_ref(service_id: str, namespace: str) -> None:
    """Validate the (service_id, namespace) pair that most requests carry."""
    violations: list[FieldViolation] = []
    check_name(violations, "service_id", service_id)
    check_name(violations, "namespace", namespace)
    if violations:
        raise InvalidSpecError(violations)


def _has_nul(value: str) -> bool:
    return "\x00" in value


def has_control_characters(value: str) -> bool:
    """Any C0/C1 control, or a Unicode line/paragraph separator or format character
    (bidi overrides): none of them belongs in a name, key or image reference."""
    return any(unicodedata.category(c) in _CONTROL_CATEGORIES for c in value)


_CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def _shown(value: str, limit: int = 64) -> str:
    """``value`` quoted for a message, shortened: errors must stay small whatever was sent."""
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


def _item(path: str, key: str) -> str:
    """``path['key']`` with the key shortened: errors must stay small whatever was sent."""
    return f"{path}[{_shown(key)}]"


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
        if len(key) > MAX_ENV_KEY_LENGTH or not _ENV_KEY.fullmatch(key):
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
        prefix, slash, name = key.rpartition("/")
        # "/app" has an empty prefix, which Kubernetes refuses: a slash needs a prefix.
        bad_prefix = slash and (
            len(prefix) > MAX_LABEL_PREFIX_LENGTH or not _LABEL_PREFIX.fullmatch(prefix)
        )
        if bad_prefix or not _LABEL_NAME.fullmatch(name):
            violations.append(
                FieldViolation(_item(path, key), "not a valid label key ([prefix/]name)")
            )
        elif len(value) > MAX_LABEL_VALUE_LENGTH or not _LABEL_VALUE.fullmatch(value):
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
        if not MIN_PORT <= port.container_port <= MAX_PORT:
            violations.append(
                FieldViolation(
                    f"{path}[{index}].container_port", f"must be between {MIN_PORT} and {MAX_PORT}"
                )
            )
        if not 0 <= port.host_port <= MAX_PORT:
            violations.append(
                FieldViolation(f"{path}[{index}].host_port", f"must be between 0 and {MAX_PORT}")
            )
        if port.protocol not in ("tcp", "udp"):
            violations.append(FieldViolation(f"{path}[{index}].protocol", "must be tcp or udp"))


def _positive(parse: Callable[[str], int], quantity: str) -> bool:
    """Whether ``quantity`` parses to more than zero."""
    try:
        return parse(quantity) > 0
    except ValueError:
        return False


def _check_resources(violations: list[FieldViolation], path: str, resources: Resources) -> None:
    if resources.cpu and not _positive(parse_cpu_millicores, resources.cpu):
        violations.append(
            FieldViolation(
                f"{path}.cpu",
                "a positive CPU quantity such as '500m' or '1.5' (at most 3 decimals), "
                f"at most {MAX_CPU_MILLICORES // 1000} cores",
            )
        )
    if resources.memory and not _positive(parse_memory_bytes, resources.memory):
        violations.append(
            FieldViolation(
                f"{path}.memory",
                "a positive memory quantity such as '256Mi' or '1Gi' "
                "(units K, M, G, T, P, Ki, Mi, Gi, Ti, Pi), at most 1Pi",
            )
        )


def _check_options(violations: list[FieldViolation], path: str, options: Mapping[str, str]) -> None:
    if len(options) > MAX_OPTIONS:
        violations.append(FieldViolation(path, f"at most {MAX_OPTIONS} options"))
        return
    for key, value in options.items():
        if len(key) > MAX_OPTION_KEY_LENGTH or not _OPTION_KEY.fullmatch(key):
            violations.append(
                FieldViolation(
                    _item(path, key),
                    f"option keys are 1-{MAX_OPTION_KEY_LENGTH} of [A-Za-z0-9_./-], "
                    "not starting with '.', '/' or '-'",
                )
            )
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
        before = len(violations)
        check_config_key(violations, _item(path, key), key)
        if len(violations) > before:
            continue
        if _has_nul(value) or len(value.encode()) > MAX_CONFIG_VALUE_BYTES:
            violations.append(
                FieldViolation(
                    _item(path, key), f"no NUL bytes, at most {MAX_CONFIG_VALUE_BYTES} bytes"
                )
            )
    if total > MAX_CONFIG_TOTAL_BYTES:
        violations.append(FieldViolation(path, f"at most {MAX_CONFIG_TOTAL_BYTES} bytes in all"))
