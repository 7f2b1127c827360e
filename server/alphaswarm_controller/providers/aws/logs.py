"""The CloudWatch Logs group a service's containers write to (the ``awslogs`` driver).

The controller creates the group before it registers a task definition that
names it (``logs:CreateLogGroup``; one that exists is fine), so the tasks'
execution role needs only ``logs:CreateLogStream`` and ``logs:PutLogEvents``.
Groups keep their events until an operator sets a retention period.
"""

from __future__ import annotations

from alphaswarm_core.providers.protocol import InfrastructureProviderError

from .clients import Clients


def ensure_log_group(clients: Clients, name: str) -> None:
    try:
        clients.call("logs", "CreateLogGroup", logGroupName=name)
    except InfrastructureProviderError as exc:
        if exc.metadata.get("aws_error_code") != "ResourceAlreadyExistsException":
            raise
