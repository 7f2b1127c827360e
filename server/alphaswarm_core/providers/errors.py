"""The error hierarchy every provider raises.

Each class carries a stable machine-readable ``reason`` and the name of the gRPC
status code it maps to. The names are gRPC's, but this module does not import
grpc: the controller's single error-mapping layer turns them into statuses with
rich details, and library users can catch them without a server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid request field: a dotted path (``spec.env``) and what is wrong."""

    field: str
    description: str


class InfrastructureProviderError(Exception):
    """Root of every error a provider raises on purpose.

    ``message`` is shown to callers, so it must never contain a secret.
    ``metadata`` becomes ``google.rpc.ErrorInfo.metadata`` on the wire.
    """

    code: str = "INTERNAL"
    reason: str = "PROVIDER_ERROR"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})

    def __str__(self) -> str:
        return self.message


class InvalidSpecError(InfrastructureProviderError):
    """A request field is invalid; nothing was changed."""

    code = "INVALID_ARGUMENT"
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: Iterable[FieldViolation], *, message: str | None = None) -> None:
        self.violations = tuple(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(message or f"invalid request: {summary}")

    @classmethod
    def single(cls, field: str, description: str) -> InvalidSpecError:
        return cls([FieldViolation(field, description)])


class ProviderNotFoundError(InfrastructureProviderError):
    """No provider is registered under the requested alias."""

    code = "NOT_FOUND"
    reason = "PROVIDER_NOT_FOUND"

    def __init__(self, alias: str, known: Iterable[str]) -> None:
        self.alias = alias
        self.known = tuple(sorted(known))
        super().__init__(
            f"unknown provider {alias!r}; known providers: {', '.join(self.known)}",
            metadata={"alias": alias, "known_aliases": ",".join(self.known)},
        )


class DeploymentNotFoundError(InfrastructureProviderError):
    """The provider knows no service of that id in that namespace."""

    code = "NOT_FOUND"
    reason = "DEPLOYMENT_NOT_FOUND"

    def __init__(self, service_id: str, namespace: str) -> None:
        self.service_id = service_id
        self.namespace = namespace
        super().__init__(
            f"deployment {namespace}/{service_id} not found",
            metadata={"service_id": service_id, "namespace": namespace},
        )


class ConfigVersionConflict(InfrastructureProviderError):
    """``expected_version`` no longer matches; the caller must re-read and retry."""

    code = "ABORTED"
    reason = "CONFIG_VERSION_CONFLICT"

    def __init__(self, service_id: str, namespace: str, *, expected: str, actual: str) -> None:
        super().__init__(
            f"config of {namespace}/{service_id} is at version {actual!r}, "
            f"not the expected {expected!r}; read it again and retry",
            metadata={"expected_version": expected, "current_version": actual},
        )


class InfrastructureProviderUnavailable(InfrastructureProviderError):
    """The provider cannot do this here: its reason says why.

    ``SDK_MISSING`` and ``CREDENTIALS_MISSING`` (and other set-up problems) map
    to FAILED_PRECONDITION; the ``CapabilityUnsupported`` subclass maps to
    UNIMPLEMENTED.
    """

    code = "FAILED_PRECONDITION"
    reason = "PROVIDER_UNAVAILABLE"


class CapabilityUnsupported(InfrastructureProviderUnavailable):
    """The backend has no such operation (e.g. config on a backend without one)."""

    code = "UNIMPLEMENTED"
    reason = "CAPABILITY_UNSUPPORTED"

    def __init__(self, alias: str, capability: str, detail: str = "") -> None:
        text = f"provider {alias!r} does not support {capability}"
        super().__init__(
            f"{text}: {detail}" if detail else text,
            metadata={"capability": capability},
        )


class BackendUnavailableError(InfrastructureProviderError):
    """A transient backend failure; the same call may succeed later."""

    code = "UNAVAILABLE"
    reason = "BACKEND_UNAVAILABLE"

    def __init__(
        self,
        message: str,
        *,
        retry_after_seconds: float = 1.0,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after_seconds = retry_after_seconds


class BackendTimeoutError(InfrastructureProviderError):
    """A backend call did not finish within the caller's deadline or its own timeout."""

    code = "DEADLINE_EXCEEDED"
    reason = "BACKEND_TIMEOUT"


class BackendPermissionDenied(InfrastructureProviderError):
    """The controller's own credentials lack a permission the operation needs."""

    code = "PERMISSION_DENIED"
    reason = "BACKEND_PERMISSION_DENIED"


class BackendQuotaExceeded(InfrastructureProviderError):
    """The backend refused for lack of quota or capacity."""

    code = "RESOURCE_EXHAUSTED"
    reason = "BACKEND_QUOTA_EXCEEDED"


class BackendConflictError(InfrastructureProviderError):
    """The backend's state moved under us (concurrent writer); retry after re-reading."""

    code = "ABORTED"
    reason = "BACKEND_CONFLICT"


class BackendRejectedError(InfrastructureProviderError):
    """The backend refused the request for a reason the caller can fix (bad image, port taken)."""

    code = "FAILED_PRECONDITION"
    reason = "BACKEND_REJECTED"


class ResourceNotFoundError(InfrastructureProviderError):
    """Something the spec refers to does not exist on the backend (an image, a namespace)."""

    code = "NOT_FOUND"
    reason = "BACKEND_RESOURCE_NOT_FOUND"
