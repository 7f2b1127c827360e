"""Translation between wire messages and the provider-agnostic models.

Request translation also validates (through the models), so a servicer method
that converts its request has rejected bad input before any backend call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_core.call import CallContext, Caller
from alphaswarm_core.providers.errors import FieldViolation, InvalidSpecError, RevisionNotFound
from alphaswarm_core.providers.models import (
    DEFAULT_NAMESPACE,
    DEFAULT_PROGRESS_DEADLINE_SECONDS,
    MAX_CHANGE_CAUSE_LENGTH,
    MAX_TAIL_LINES,
    SECRET_MASK,
    ChangeRequest,
    ConfigMapPatch,
    DeploymentEvent,
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    EventKind,
    LogEntry,
    LogQuery,
    LogStreamKind,
    MetricSample,
    Plan,
    PlanAction,
    PortSpec,
    ProviderHealth,
    Resources,
    Revision,
    Rollout,
    RolloutState,
    ServiceConfig,
    check_replicas,
    masked_config,
)
from alphaswarm_core.providers.registry import ProviderDescription

MIN_INTERVAL_SECONDS = 0.1
MAX_INTERVAL_SECONDS = 3600.0
DEFAULT_INTERVAL_SECONDS = 10.0

_STATES = {
    DeploymentState.PENDING: types.DEPLOYMENT_STATE_PENDING,
    DeploymentState.RUNNING: types.DEPLOYMENT_STATE_RUNNING,
    DeploymentState.DEGRADED: types.DEPLOYMENT_STATE_DEGRADED,
    DeploymentState.STOPPED: types.DEPLOYMENT_STATE_STOPPED,
    DeploymentState.FAILED: types.DEPLOYMENT_STATE_FAILED,
}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)


def set_time(stamp: Timestamp, value: datetime) -> None:
    """``stamp`` = ``value`` (naive = UTC), exactly as ``Timestamp.FromDatetime`` sets it,
    in integer arithmetic: FromDatetime goes through a time tuple, at four times the cost,
    and every status carries five or more times."""
    since = value - (_NAIVE_EPOCH if value.tzinfo is None else _EPOCH)
    stamp.seconds = since.days * 86_400 + since.seconds
    stamp.nanos = since.microseconds * 1000


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    set_time(stamp, value)
    return stamp


ADMIN_ROLE = 3
"""Only admins see a health probe's details (paths, pids, versions): they help an
attacker as much as an operator."""


def spec_from_proto(message: types.DeploymentSpec, namespace: str) -> DeploymentSpec:
    """The validated spec; ``namespace`` is the call's resolved one."""
    return _spec(message, namespace).validate()


def _spec(message: types.DeploymentSpec, namespace: str) -> DeploymentSpec:
    return DeploymentSpec(
        service_id=message.service_id,
        namespace=namespace,
        image=message.image,
        command=tuple(message.command),
        env=dict(message.env),
        replicas=message.replicas,
        labels=dict(message.labels),
        ports=tuple(
            PortSpec(p.container_port, p.host_port, p.protocol or "tcp") for p in message.ports
        ),
        resources=Resources(cpu=message.resources.cpu, memory=message.resources.memory),
        provider_options=dict(message.provider_options),
        progress_deadline_seconds=(
            message.progress_deadline.ToTimedelta().total_seconds()
            if message.HasField("progress_deadline")
            else DEFAULT_PROGRESS_DEADLINE_SECONDS
        ),
        auto_rollback=message.auto_rollback,
    )


def spec_to_proto(spec: DeploymentSpec) -> types.DeploymentSpec:
    message = types.DeploymentSpec(
        service_id=spec.service_id,
        namespace=spec.namespace,
        image=spec.image,
        command=list(spec.command),
        env=dict(spec.env),
        replicas=spec.replicas,
        labels=dict(spec.labels),
        ports=[
            types.PortSpec(
                container_port=p.container_port, host_port=p.host_port, protocol=p.protocol
            )
            for p in spec.ports
        ],
        resources=types.Resources(cpu=spec.resources.cpu, memory=spec.resources.memory),
        provider_options=dict(spec.provider_options),
        auto_rollback=spec.auto_rollback,
    )
    message.progress_deadline.FromTimedelta(timedelta(seconds=spec.progress_deadline_seconds))
    return message


def change_from_proto(expected_revision: int, change_cause: str) -> ChangeRequest:
    """A mutating request's expected_revision and change_cause, validated."""
    violations: list[FieldViolation] = []
    if expected_revision < -1:
        violations.append(
            FieldViolation("expected_revision", "0 (any), -1 (absent) or a revision number")
        )
    if len(change_cause) > MAX_CHANGE_CAUSE_LENGTH or not change_cause.isprintable():
        violations.append(
            FieldViolation(
                "change_cause", f"at most {MAX_CHANGE_CAUSE_LENGTH} printable characters"
            )
        )
    if violations:
        raise InvalidSpecError(violations)
    return ChangeRequest(expected_revision, change_cause)


def rollback_target(history: Sequence[Revision], to_revision: int, call: CallContext) -> Revision:
    """The revision a rollback restores: ``to_revision``, or (0) the one before the newest."""
    if to_revision < 0:
        raise InvalidSpecError.single("to_revision", "0 (the previous one) or a revision number")
    ordered = sorted(history, key=lambda r: -r.number)
    if to_revision == 0:
        if len(ordered) < 2:
            raise RevisionNotFound(call.service_id, call.namespace, 0)
        return ordered[1]
    for revision in ordered:
        if revision.number == to_revision:
            return revision
    raise RevisionNotFound(call.service_id, call.namespace, to_revision)


def plan_to_proto(plan: Plan) -> types.Plan:
    return types.Plan(
        revision=plan.revision,
        action=_PLAN_ACTIONS[plan.action],
        changes=[
            types.FieldChange(path=c.path, old_value=c.old, new_value=c.new) for c in plan.changes
        ],
    )


def revision_to_proto(revision: Revision) -> types.Revision:
    message = types.Revision(
        number=revision.number,
        spec=spec_to_proto(revision.spec),
        config_version=revision.config_version,
        created_at=_timestamp(revision.created_at),
        change_cause=revision.change_cause,
        rollback_of=revision.rollback_of,
        automatic=revision.automatic,
    )
    message.spec.ClearField("replicas")  # not part of a revision
    return message


def patch_from_proto(message: types.ConfigMapPatch, namespace: str) -> ConfigMapPatch:
    """The validated patch; ``namespace`` is the call's resolved one."""
    return _patch(message, namespace).validate()


def _patch(message: types.ConfigMapPatch, namespace: str) -> ConfigMapPatch:
    return ConfigMapPatch(
        service_id=message.service_id,
        namespace=namespace,
        set=dict(message.set),
        remove=tuple(message.remove),
        expected_version=message.expected_version,
    )


def target_violations(field: str, message: Any) -> list[FieldViolation]:
    """Every bad field of a request's target message (``spec``, ``patch``), so that one
    INVALID_ARGUMENT names all that is wrong, not only the names."""
    namespace = message.namespace or DEFAULT_NAMESPACE
    if isinstance(message, types.DeploymentSpec):
        return _spec(message, namespace).violations(field)
    if isinstance(message, types.ConfigMapPatch):
        return _patch(message, namespace).violations(field)
    return []


def interval_seconds(message: Duration, present: bool) -> float:
    if not present:
        return DEFAULT_INTERVAL_SECONDS
    seconds = message.seconds + message.nanos / 1e9
    if not MIN_INTERVAL_SECONDS <= seconds <= MAX_INTERVAL_SECONDS:
        raise InvalidSpecError.single(
            "interval",
            f"must be between {MIN_INTERVAL_SECONDS} s and {MAX_INTERVAL_SECONDS:.0f} s",
        )
    return seconds


OPERATOR_ROLE = 2
"""Env values of a read-back spec are shown to callers who may set them."""


def status_to_proto(
    status: DeploymentStatus, caller: Caller | None = None
) -> types.DeploymentStatus:
    """The wire status; with ``caller`` the spec too (env values masked below operator),
    without it (lists, watches) the spec is left out to keep those messages lean."""
    message = types.DeploymentStatus()
    fill_status(message, status, caller)
    return message


def fill_status(
    message: types.DeploymentStatus, status: DeploymentStatus, caller: Caller | None = None
) -> None:
    """``status_to_proto`` written into an empty ``message`` (a response's own field):
    building a message and copying it in would do the work twice."""
    message.service_id = status.service_id
    message.namespace = status.namespace
    message.provider = status.provider
    message.state = _STATES[status.state]
    message.desired_replicas = status.desired_replicas
    message.ready_replicas = status.ready_replicas
    message.message = status.message
    set_time(message.updated_at, status.updated_at)
    message.restarts = status.restarts
    add_instance = message.instances.add
    for i in status.instances:
        instance = add_instance(
            instance_id=i.instance_id,
            state=i.state,
            ready=i.ready,
            restarts=i.restarts,
            message=i.message,
        )
        if i.started_at:
            set_time(instance.started_at, i.started_at)
    message.image = status.image
    if status.labels:
        message.labels.update(status.labels)
    if status.created_at:
        set_time(message.created_at, status.created_at)
    if status.changed_at:
        set_time(message.changed_at, status.changed_at)
    message.revision = status.revision
    message.observed_revision = status.observed_revision
    if status.rollout:
        _fill_rollout(message.rollout, status.rollout)
    add_condition = message.conditions.add
    for c in status.conditions:
        condition = add_condition(
            type=c.type,
            status=_CONDITION_STATUS[c.status],
            reason=c.reason,
            message=c.message,
        )
        set_time(condition.last_transition_time, c.last_transition_time)
    if caller is not None and status.spec is not None:
        spec = spec_to_proto(status.spec)
        if caller.role < OPERATOR_ROLE:
            # The keys first: a protobuf map written while it is iterated skips entries,
            # and a skipped entry is a value shown to a viewer.
            for key in list(spec.env):
                spec.env[key] = SECRET_MASK
        message.spec.CopyFrom(spec)


def _fill_rollout(message: types.Rollout, rollout: Rollout) -> None:
    message.state = _ROLLOUT_STATES[rollout.state]
    message.reason = rollout.reason
    message.message = rollout.message
    set_time(message.started_at, rollout.started_at)
    if rollout.finished_at is not None:
        set_time(message.finished_at, rollout.finished_at)


def health_to_proto(health: ProviderHealth, caller: Caller) -> types.ProviderHealth:
    return types.ProviderHealth(
        alias=health.alias,
        kind=health.kind,
        healthy=health.healthy,
        message=health.message,
        details=dict(health.details) if caller.role >= ADMIN_ROLE else {},
        checked_at=_timestamp(health.checked_at),
    )


def provider_info_to_proto(description: ProviderDescription) -> types.ProviderInfo:
    return types.ProviderInfo(
        alias=description.alias,
        kind=description.kind,
        is_default=description.is_default,
        installed=description.installed,
        install_hint=description.install_hint,
        origin=description.origin,
        capabilities=description.capabilities,
    )


def config_to_proto(config: ServiceConfig) -> types.ServiceConfig:
    """Secret keys leave the server masked, whatever the provider returned."""
    return types.ServiceConfig(
        service_id=config.service_id,
        namespace=config.namespace,
        data=masked_config(config.data),
        version=config.version,
    )


def sample_to_proto(sample: MetricSample) -> types.MetricSample:
    return types.MetricSample(
        service_id=sample.service_id,
        namespace=sample.namespace,
        provider=sample.provider,
        timestamp=_timestamp(sample.timestamp),
        replicas=sample.replicas,
        cpu_percent=sample.cpu_percent,
        memory_bytes=sample.memory_bytes,
        network_rx_bytes=sample.network_rx_bytes,
        network_tx_bytes=sample.network_tx_bytes,
        ok=sample.ok,
        error=sample.error,
        extra=dict(sample.extra),
    )


_ROLLOUT_STATES = {
    RolloutState.IN_PROGRESS: types.ROLLOUT_STATE_IN_PROGRESS,
    RolloutState.SUCCEEDED: types.ROLLOUT_STATE_SUCCEEDED,
    RolloutState.FAILED: types.ROLLOUT_STATE_FAILED,
}
_CONDITION_STATUS = {
    True: types.CONDITION_STATUS_TRUE,
    False: types.CONDITION_STATUS_FALSE,
    None: types.CONDITION_STATUS_UNKNOWN,
}
_PLAN_ACTIONS = {
    PlanAction.NOTHING: types.PLAN_ACTION_NOTHING,
    PlanAction.CREATE: types.PLAN_ACTION_CREATE,
    PlanAction.IN_PLACE: types.PLAN_ACTION_IN_PLACE,
    PlanAction.ROLLING_RESTART: types.PLAN_ACTION_ROLLING_RESTART,
    PlanAction.REPLACE: types.PLAN_ACTION_REPLACE,
}
_LOG_STREAMS = {
    LogStreamKind.STDOUT: types.LOG_STREAM_STDOUT,
    LogStreamKind.STDERR: types.LOG_STREAM_STDERR,
    LogStreamKind.UNSPECIFIED: types.LOG_STREAM_UNSPECIFIED,
}
_EVENTS = {
    EventKind.ADDED: types.DEPLOYMENT_EVENT_ADDED,
    EventKind.MODIFIED: types.DEPLOYMENT_EVENT_MODIFIED,
    EventKind.DELETED: types.DEPLOYMENT_EVENT_DELETED,
    EventKind.SNAPSHOT_DONE: types.DEPLOYMENT_EVENT_INITIAL_SNAPSHOT_DONE,
}
# Replica ids are the backend's (pid, container, pod, task or revision instance names;
# ``<service>-<n>@<pid>`` on local).
MAX_INSTANCE_ID_LENGTH = 253
_INSTANCE_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:/@-]{{0,{MAX_INSTANCE_ID_LENGTH - 1}}}")


def log_query_from_proto(request: pb.StreamLogsRequest) -> LogQuery:
    violations: list[FieldViolation] = []
    if not 0 <= request.tail_lines <= MAX_TAIL_LINES:
        violations.append(FieldViolation("tail_lines", f"must be between 0 and {MAX_TAIL_LINES}"))
    if request.instance_id and not _INSTANCE_ID.fullmatch(request.instance_id):
        violations.append(FieldViolation("instance_id", "not a replica id"))
    since = None
    if request.HasField("since"):
        try:
            since = request.since.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError):
            violations.append(FieldViolation("since", "not a valid time"))
    if violations:
        raise InvalidSpecError(violations)
    return LogQuery(request.follow, request.tail_lines, since, request.instance_id)


def log_entry_to_proto(entry: LogEntry) -> types.LogEntry:
    return types.LogEntry(
        instance_id=entry.instance_id,
        time=_timestamp(entry.time),
        stream=_LOG_STREAMS[entry.stream],
        text=entry.text,
        truncated=entry.truncated,
    )


def event_to_proto(event: DeploymentEvent) -> pb.WatchDeploymentsResponse:
    response = pb.WatchDeploymentsResponse(event=_EVENTS[event.kind])
    if event.status is not None:
        fill_status(response.status, event.status)
    return response


def replicas(value: int) -> int:
    violations: list[FieldViolation] = []
    check_replicas(violations, "replicas", value)
    if violations:
        raise InvalidSpecError(violations)
    return value
