"""Async Python client and ``alphaswarm`` CLI for the alphaswarm ProviderService.

    async with AlphaswarmClient("127.0.0.1:50051") as client:
        status = await client.start_deployment(
            service_id="web", command=["sleep", "300"], replicas=2
        )

Methods return the generated proto messages; failed calls raise the
exceptions of :mod:`alphaswarm_client.errors`, with the server's rich details.
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
    Unauthenticated,
    Unavailable,
    Unimplemented,
    from_rpc_error,
)

__all__ = [
    "DEFAULT_TIMEOUT",
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
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "from_rpc_error",
]
