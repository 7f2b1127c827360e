"""Async Python client and ``alphaswarm`` CLI for the alphaswarm ProviderService.

    async with AlphaswarmClient("127.0.0.1:50051") as client:
        status = await client.start_deployment(
            service_id="web", command=["sleep", "300"], replicas=2
        )

Methods return the generated proto messages; failed calls raise the
exceptions of :mod:`alphaswarm_client.errors`, with the server's rich details.
``SyncAlphaswarmClient`` offers the same methods to code without an event loop;
``RetryPolicy`` says which failed calls are retried.
"""

from alphaswarm_client.client import DEFAULT_TIMEOUT, AlphaswarmClient
from alphaswarm_client.errors import (
    Aborted,
    AlphaswarmError,
    AlreadyExists,
    Cancelled,
    ConfigVersionConflict,
    DeadlineExceeded,
    DeploymentNotFound,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProviderNotFound,
    ResourceExhausted,
    ResourceInfo,
    RevisionConflict,
    RevisionNotFound,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    from_rpc_error,
)
from alphaswarm_client.retry import NO_RETRY, RetryPolicy
from alphaswarm_client.sync import SyncAlphaswarmClient

__all__ = [
    "DEFAULT_TIMEOUT",
    "NO_RETRY",
    "Aborted",
    "AlphaswarmClient",
    "AlphaswarmError",
    "AlreadyExists",
    "Cancelled",
    "ConfigVersionConflict",
    "DeadlineExceeded",
    "DeploymentNotFound",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ProviderNotFound",
    "ResourceExhausted",
    "ResourceInfo",
    "RetryPolicy",
    "RevisionConflict",
    "RevisionNotFound",
    "SyncAlphaswarmClient",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "from_rpc_error",
]
