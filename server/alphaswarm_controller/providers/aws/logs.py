"""The CloudWatch Logs group a service's containers write to (the ``awslogs`` driver), and
the names in it.

One group per service, ``/alphaswarm/<namespace>/<service_id>``; one stream per task,
``alphaswarm/app/<task-id>``: the driver names a task's stream
``<awslogs-stream-prefix>/<container-name>/<ecs-task-id>`` (ECS developer guide,
"Using the awslogs log driver"), and the task definitions set the prefix ``alphaswarm``
on the one container ``app``.

Every start makes sure the group exists, before it registers a task definition that
names it: a task whose group is missing cannot start (the driver does not create it),
so start restores one an operator deleted. It reads first (DescribeLogGroups; "The
results are ASCII-sorted by log group name", so the group, if it exists, is the first
one with its name as prefix) and creates the group only when it is missing, so an
unchanged start writes nothing. The tasks' execution role then needs only
``logs:CreateLogStream`` and ``logs:PutLogEvents``. A group it creates gets the
retention ``ALPHASWARM_AWS_LOG_RETENTION_DAYS`` (default 30 days; ``0`` keeps events until
the group is deleted): CloudWatch keeps events for ever by default (CreateLogGroup: "by
default the log events in the log group do not expire"), which costs storage for as
long as the service lives. A group that exists already keeps the retention an operator
gave it. ``delete`` removes the group with the service.
"""

from __future__ import annotations

import logging
import re

from alphaswarm_core.providers.protocol import InfrastructureProviderError

from .clients import Clients
from .taskdef import CONTAINER_NAME, LOG_STREAM_PREFIX

log = logging.getLogger(__name__)

#: PutRetentionPolicy ``retentionInDays``: "Possible values are: 1, 3, 5, 7, 14, 30, 60,
#: 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, and 3653"
#: (botocore logs 2014-03-28 model, shape ``Days``).
RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
    2922, 3288, 3653,
)  # fmt: skip
DEFAULT_RETENTION_DAYS = 30
NO_EXPIRY = 0

#: An ECS task id: 32 hex digits in the current ARN format, a UUID in the older one.
TASK_ID = re.compile(r"[0-9a-f]{32}|[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}")
_STREAM = re.compile(
    rf"{re.escape(LOG_STREAM_PREFIX)}/{re.escape(CONTAINER_NAME)}/(?P<task>{TASK_ID.pattern})"
)


def stream_of(task_id: str) -> str:
    """The log stream the awslogs driver writes task ``task_id``'s output to."""
    return f"{LOG_STREAM_PREFIX}/{CONTAINER_NAME}/{task_id}"


def task_of(stream: str) -> str | None:
    """The task id a stream of the service's group belongs to; None for any other stream."""
    match = _STREAM.fullmatch(stream)
    return match["task"] if match else None


def _code(error: InfrastructureProviderError) -> str:
    return str(error.metadata.get("aws_error_code", ""))


def log_group_exists(clients: Clients, name: str) -> bool:
    found = clients.call("logs", "DescribeLogGroups", logGroupNamePrefix=name, limit=1)
    return any(group.get("logGroupName") == name for group in found.get("logGroups", []))


def ensure_log_group(clients: Clients, name: str, retention_days: int) -> None:
    """Create group ``name`` (with ``retention_days``, 0 = no expiry) unless it exists.

    A group created here whose retention cannot be set is deleted again, so a failed
    start leaves no group without the retention the next start would not set either.
    """
    if log_group_exists(clients, name):
        return
    try:
        clients.call("logs", "CreateLogGroup", logGroupName=name)
    except InfrastructureProviderError as exc:
        if _code(exc) != "ResourceAlreadyExistsException":
            raise
        return
    if retention_days == NO_EXPIRY:
        return
    try:
        clients.call(
            "logs", "PutRetentionPolicy", logGroupName=name, retentionInDays=retention_days
        )
    except BaseException:
        delete_log_group_quietly(clients, name)
        raise


def delete_log_group(clients: Clients, name: str) -> bool:
    """Delete group ``name`` and every event in it; False when there was none."""
    try:
        clients.call("logs", "DeleteLogGroup", logGroupName=name)
    except InfrastructureProviderError as exc:
        if _code(exc) == "ResourceNotFoundException":
            return False
        raise
    return True


def delete_log_group_quietly(clients: Clients, name: str) -> None:
    try:
        delete_log_group(clients, name)
    except InfrastructureProviderError as exc:
        log.warning("could not delete log group %s again: %s", name, exc.message)
