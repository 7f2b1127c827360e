"""Azure SDK exceptions -> the provider error hierarchy (and so gRPC codes).

ARM reports errors as ``{"error": {"code", "message"}}``; azure-core exposes the
code as ``HttpResponseError.error.code``. ARM messages name resources and
operations, never credentials, so they are passed on; credential errors are
replaced by a fixed text naming where credentials come from.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)

from alphaswarm_core.providers.protocol import (
    BackendConflictError,
    BackendPermissionDenied,
    BackendQuotaExceeded,
    BackendRejectedError,
    BackendTimeoutError,
    BackendUnavailableError,
    InfrastructureProviderError,
    InfrastructureProviderUnavailable,
    ResourceNotFoundError,
)
from alphaswarm_core.providers.reasons import ErrorReason

CREDENTIAL_SOURCES = (
    "no Azure credential found: set AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET "
    "(service principal), or run where a managed identity is assigned, or use workload "
    "identity (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE), or sign in "
    "with `az login`"
)
CREDENTIAL_ENV = "AZURE_CLIENT_ID,AZURE_TENANT_ID,AZURE_CLIENT_SECRET,AZURE_FEDERATED_TOKEN_FILE"
QUOTA_CODES = frozenset(
    {
        "containergroupquotareached",
        "quotaexceeded",
        "resourcerequestsexceedquota",
        "standardcoresquotaexceeded",
        "operationnotallowed",
        "skunotavailable",
        "serviceunavailable_capacity",
    }
)


def _code(error: HttpResponseError) -> str:
    detail = getattr(error, "error", None)
    return str(getattr(detail, "code", "") or "")


def _message(error: HttpResponseError) -> str:
    detail = getattr(error, "error", None)
    return str(getattr(detail, "message", "") or error.reason or "request failed")


def _retry_after(error: HttpResponseError) -> float:
    headers = getattr(error.response, "headers", None) or {}
    value = str(headers.get("Retry-After", ""))
    try:
        return max(float(value), 0.0)
    except ValueError:
        return 5.0


def credentials_missing(alias: str) -> InfrastructureProviderUnavailable:
    return InfrastructureProviderUnavailable(
        CREDENTIAL_SOURCES,
        reason=ErrorReason.CREDENTIALS_MISSING,
        metadata={"provider": alias, "env": CREDENTIAL_ENV},
    )


def translate(error: Exception, *, alias: str, resource_group: str) -> Exception:
    """The provider error for an SDK exception (other exceptions pass through)."""
    meta = {"provider": alias}
    if isinstance(error, ClientAuthenticationError) and error.status_code is None:
        return credentials_missing(alias)
    if isinstance(error, (ServiceRequestTimeoutError, ServiceResponseTimeoutError)):
        return BackendTimeoutError("Azure Resource Manager did not answer in time", metadata=meta)
    if isinstance(error, (ServiceRequestError, ServiceResponseError)):
        return BackendUnavailableError(
            "cannot reach Azure Resource Manager; check ALPHASWARM_AZURE_ARM_ENDPOINT and the "
            "network",
            metadata=meta,
        )
    if not isinstance(error, HttpResponseError):
        return error
    status, code, message = error.status_code or 0, _code(error), _message(error)
    lowered = code.lower()
    if status == 401:
        return InfrastructureProviderUnavailable(
            f"Azure rejected the credential ({code or 'Unauthorized'}); {CREDENTIAL_SOURCES}",
            reason=ErrorReason.CREDENTIALS_INVALID,
            metadata={**meta, "env": CREDENTIAL_ENV},
        )
    if status == 403 or lowered in ("authorizationfailed", "linkedauthorizationfailed"):
        return BackendPermissionDenied(
            f"{message} The controller's identity needs the Contributor role on the resource "
            f"group {resource_group!r} (ALPHASWARM_AZURE_RESOURCE_GROUP).",
            metadata={**meta, "role": "Contributor", "resource_group": resource_group},
        )
    if status == 429:
        return BackendUnavailableError(
            f"Azure Resource Manager is throttling requests ({code or 'TooManyRequests'})",
            retry_after_seconds=_retry_after(error),
            reason=ErrorReason.BACKEND_THROTTLED,
            metadata=meta,
        )
    if lowered in QUOTA_CODES or "quota" in lowered:
        return BackendQuotaExceeded(f"Azure quota: {message}", metadata={**meta, "code": code})
    if lowered == "resourcegroupnotfound":
        return ResourceNotFoundError(
            f"{message} Set ALPHASWARM_AZURE_RESOURCE_GROUP to an existing resource group.",
            metadata={**meta, "resource_group": resource_group},
        )
    if status >= 500:
        return BackendUnavailableError(
            f"Azure Resource Manager failed ({code or status}): {message}",
            retry_after_seconds=_retry_after(error) or 1.0,
            metadata=meta,
        )
    if status == 409:
        return BackendConflictError(f"{message} ({code})", metadata={**meta, "code": code})
    if status == 404:
        return ResourceNotFoundError(f"{message} ({code})", metadata={**meta, "code": code})
    return BackendRejectedError(
        f"Azure rejected the request ({code or status}): {message}",
        metadata={**meta, "code": code},
    )


def is_not_found(error: Exception) -> bool:
    return (
        isinstance(error, HttpResponseError)
        and error.status_code == 404
        and (_code(error).lower() != "resourcegroupnotfound")
    )


@contextlib.contextmanager
def azure_errors(*, alias: str, resource_group: str) -> Iterator[None]:
    """Translate SDK exceptions raised inside the block."""
    try:
        yield
    except InfrastructureProviderError:
        raise
    except Exception as error:
        translated = translate(error, alias=alias, resource_group=resource_group)
        if translated is error:
            raise
        raise translated from error
