"""Google API errors -> the provider error hierarchy, naming the IAM role a denial needs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from google.api_core import exceptions as gexc

from alphaswarm_core.providers.protocol import (
    BackendConflictError,
    BackendPermissionDenied,
    BackendQuotaExceeded,
    BackendRejectedError,
    BackendTimeoutError,
    BackendUnavailableError,
    InfrastructureProviderError,
    InfrastructureProviderUnavailable,
    InvalidSpecError,
    ResourceNotFoundError,
)
from alphaswarm_core.providers.reasons import ErrorReason

from .retry import MAX_DELAY, is_rate_limit

#: The least-privileged predefined role that covers what the provider does with each API.
ROLES = {
    "run": "roles/run.developer",
    "secretmanager": "roles/secretmanager.admin",
    "monitoring": "roles/monitoring.viewer",
    "logging": "roles/logging.viewer",
    "container": "roles/container.developer",
}

API_NAMES = {
    "run": "Cloud Run",
    "secretmanager": "Secret Manager",
    "monitoring": "Cloud Monitoring",
    "logging": "Cloud Logging",
    "container": "GKE",
}

CREDENTIALS_HELP = (
    "no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a service-account "
    "key file, run on GKE/Cloud Run with Workload Identity (the metadata server), or run "
    "`gcloud auth application-default login`"
)


def credentials_missing(detail: str = "") -> InfrastructureProviderUnavailable:
    message = f"{CREDENTIALS_HELP} ({detail})" if detail else CREDENTIALS_HELP
    return InfrastructureProviderUnavailable(
        message,
        reason=ErrorReason.CREDENTIALS_MISSING,
        metadata={"env": "GOOGLE_APPLICATION_CREDENTIALS", "alternative": "Workload Identity"},
    )


def _operation_error(exc: BaseException) -> BaseException:
    """A failed long-running operation surfaces as a bare GoogleAPICallError carrying the
    operation's google.rpc.Status; give it the class its status code stands for."""
    if type(exc) is gexc.GoogleAPICallError and exc.errors:
        status = exc.errors[0]
        code, message = getattr(status, "code", None), getattr(status, "message", "")
        if isinstance(code, int) and code:
            mapped: BaseException = gexc.from_grpc_status(  # type: ignore[no-untyped-call]
                code, message or str(exc)
            )
            return mapped
    return exc


def translate(exc: BaseException, api: str) -> InfrastructureProviderError:
    """Map one Google API exception raised while using ``api`` (a key of ``ROLES``)."""
    name = API_NAMES[api]
    if isinstance(exc, gexc.RetryError):
        # The retry policy ran out of time (the caller's deadline, or the per-call cap)
        # while the API kept failing transiently.
        last = getattr(exc.cause, "message", None) or str(exc.cause or exc)
        return BackendTimeoutError(f"{name} did not answer in time (last error: {last})")
    exc = _operation_error(exc)
    detail = getattr(exc, "message", None) or str(exc)
    if isinstance(exc, gexc.PermissionDenied):
        role = ROLES[api]
        return BackendPermissionDenied(
            f"{name} denied the request; the controller's service account needs {role}: {detail}",
            metadata={"role": role, "api": api},
        )
    if isinstance(exc, gexc.Unauthenticated):
        return InfrastructureProviderUnavailable(
            f"{name} rejected the controller's Google credentials: {detail}",
            reason=ErrorReason.CREDENTIALS_INVALID,
            metadata={"env": "GOOGLE_APPLICATION_CREDENTIALS"},
        )
    if isinstance(exc, gexc.NotFound):
        return ResourceNotFoundError(f"{name}: {detail}")
    if isinstance(exc, gexc.InvalidArgument):
        return InvalidSpecError.single("spec", f"{name} rejected the request: {detail}")
    if isinstance(exc, gexc.Aborted | gexc.AlreadyExists | gexc.Conflict):
        return BackendConflictError(f"{name}: concurrent change, read again and retry: {detail}")
    if isinstance(exc, gexc.FailedPrecondition):
        return BackendRejectedError(f"{name} refused: {detail}")
    if is_rate_limit(exc):
        return BackendUnavailableError(
            f"{name} is throttling the controller's requests: {detail}",
            retry_after_seconds=MAX_DELAY,
            reason=ErrorReason.BACKEND_THROTTLED,
        )
    if isinstance(exc, gexc.ResourceExhausted | gexc.TooManyRequests):
        return BackendQuotaExceeded(f"{name} quota exhausted: {detail}")
    if isinstance(exc, gexc.DeadlineExceeded | TimeoutError | asyncio.TimeoutError):
        return BackendTimeoutError(f"{name} did not answer in time")
    if isinstance(exc, gexc.ServiceUnavailable | gexc.InternalServerError | gexc.Unknown):
        return BackendUnavailableError(f"{name} is unavailable: {detail}")
    return InfrastructureProviderError(f"{name} call failed: {type(exc).__name__}: {detail}")


@contextlib.contextmanager
def api_errors(api: str) -> Iterator[None]:
    """Translate Google API errors (and timeouts) raised in the block; ours pass through."""
    try:
        yield
    except InfrastructureProviderError:
        raise
    except (gexc.GoogleAPIError, TimeoutError) as exc:
        raise translate(exc, api) from exc
