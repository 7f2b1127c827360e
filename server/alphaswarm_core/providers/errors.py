"""The error hierarchy every provider raises.

Each error carries a ``reason`` from the catalogue (``reasons.ErrorReason``, generated
from protos/alphaswarm/provider/v1/error_reason.proto) and its ``code`` is the one
gRPC status code the catalogue gives that reason, so a reason never travels with two
codes. The classes exist to be caught and to supply a default reason. This module
does not import grpc: the controller's single error-mapping layer turns errors into
statuses with rich details, and library users can catch them without a server.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .reasons import STATUS_CODE, ErrorReason

PROVIDER_REASON_KEY = "provider_reason"
"""Metadata key that keeps a reason a provider raised which is not in the catalogue."""


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid request field: a dotted path (``spec.env``) and what is wrong."""

    field: str
    description: str


class InfrastructureProviderError(Exception):
    """Root of every error a provider raises on purpose.

    ``message`` is shown to callers, so it must never contain a secret.
    ``metadata`` becomes ``google.rpc.ErrorInfo.metadata`` on the wire. ``reason``
    defaults to the class's; a reason outside the catalogue (a third-party provider's
    own word) is kept in metadata ``provider_reason`` and the class's reason is sent.
    """

    reason: ErrorReason = ErrorReason.PROVIDER_ERROR

    def __init__(
        self,
        message: str,
        *,
        reason: ErrorReason | str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})
        if reason is not None:
            if reason in ErrorReason.__members__:
                self.reason = ErrorReason(reason)
            else:
                self.metadata[PROVIDER_REASON_KEY] = str(reason)

    @property
    def code(self) -> str:
        """The gRPC status code name that carries this error's reason."""
        return STATUS_CODE[self.reason]

    def __str__(self) -> str:
        return self.message


class InvalidSpecError(InfrastructureProviderError):
    """A request field is invalid; nothing was changed."""

    reason = ErrorReason.INVALID_ARGUMENT

    def __init__(self, violations: Iterable[FieldViolation], *, message: str | None = None) -> None:
        self.violations = tuple(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(message or f"invalid request: {summary}")

    @classmethod
    def single(cls, field: str, description: str) -> InvalidSpecError:
        return cls([FieldViolation(field, description)])


class ProviderNotFoundError(InfrastructureProviderError):
    """No provider is registered under the requested alias."""

    reason = ErrorReason.PROVIDER_NOT_FOUND

    def __init__(self, alias: str, known: Iterable[str]) -> None:
        self.alias = alias
        self.known = tuple(sorted(known))
        super().__init__(
            f"unknown provider {alias!r}; known providers: {', '.join(self.known)}",
            metadata={"alias": alias, "known_aliases": ",".join(self.known)},
        )


class DeploymentNotFoundError(InfrastructureProviderError):
    """The provider knows no service of that id in that namespace."""

    reason = ErrorReason.DEPLOYMENT_NOT_FOUND

    def __init__(self, service_id: str, namespace: str) -> None:
        self.service_id = service_id
        self.namespace = namespace
        super().__init__(
            f"deployment {namespace}/{service_id} not found",
            metadata={"service_id": service_id, "namespace": namespace},
        )


class ConfigVersionConflict(InfrastructureProviderError):
    """``expected_version`` no longer matches; the caller must re-read and retry."""

    reason = ErrorReason.CONFIG_VERSION_CONFLICT

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

    reason = ErrorReason.PROVIDER_UNAVAILABLE


class SettingInvalid(InfrastructureProviderUnavailable):
    """A server setting (an environment variable) is missing or invalid: the operator's
    to fix, so FAILED_PRECONDITION naming the variable, never the caller's INVALID_ARGUMENT."""

    reason = ErrorReason.SETTING_INVALID

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting} {problem}", metadata={"setting": setting})
        self.setting = setting


class CapabilityUnsupported(InfrastructureProviderUnavailable):
    """The backend has no such operation (e.g. config on a backend without one)."""

    reason = ErrorReason.CAPABILITY_UNSUPPORTED

    def __init__(self, alias: str, capability: str, detail: str = "") -> None:
        text = f"provider {alias!r} does not support {capability}"
        super().__init__(
            f"{text}: {detail}" if detail else text,
            metadata={"capability": capability},
        )


class BackendUnavailableError(InfrastructureProviderError):
    """A transient backend failure; the same call may succeed later."""

    reason = ErrorReason.BACKEND_UNAVAILABLE

    def __init__(
        self,
        message: str,
        *,
        retry_after_seconds: float = 1.0,
        reason: ErrorReason | str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after_seconds = retry_after_seconds


class BackendTimeoutError(InfrastructureProviderError):
    """A backend call did not finish within the caller's deadline or its own timeout."""

    reason = ErrorReason.BACKEND_TIMEOUT


class BackendPermissionDenied(InfrastructureProviderError):
    """The controller's own credentials lack a permission the operation needs."""

    reason = ErrorReason.BACKEND_PERMISSION_DENIED


class BackendQuotaExceeded(InfrastructureProviderError):
    """The backend refused for lack of quota or capacity."""

    reason = ErrorReason.BACKEND_QUOTA_EXCEEDED


class BackendConflictError(InfrastructureProviderError):
    """The backend's state moved under us (concurrent writer); retry after re-reading."""

    reason = ErrorReason.BACKEND_CONFLICT


class BackendRejectedError(InfrastructureProviderError):
    """The backend refused the request for a reason the caller can fix (bad image, port taken)."""

    reason = ErrorReason.BACKEND_REJECTED


class ResourceNotFoundError(InfrastructureProviderError):
    """Something the spec refers to does not exist on the backend (an image, a namespace)."""

    reason = ErrorReason.BACKEND_RESOURCE_NOT_FOUND


class RevisionConflict(InfrastructureProviderError):
    """The service is not at the caller's ``expected_revision``; nothing changed."""

    reason = ErrorReason.REVISION_CONFLICT

    def __init__(
        self,
        service_id: str,
        namespace: str,
        *,
        expected: int,
        actual: int,
        config_live: bool = False,
    ) -> None:
        self.service_id, self.namespace = service_id, namespace
        self.expected, self.actual = expected, actual
        now = f"at revision {actual}" if actual else "absent"
        wanted = "absent" if expected == -1 else f"at revision {expected}"
        message = f"{namespace}/{service_id} is {now}, not {wanted} as expected; plan again"
        metadata = {"expected_revision": str(expected), "current_revision": str(actual)}
        if config_live:
            # The one exception to "nothing changed": the change had written the config,
            # and another writer built on it before it could be put back.
            message += (
                "; the config this change wrote could not be put back (it was changed again "
                "since) and is live: read it before retrying"
            )
            metadata["config_put_back"] = "false"
        super().__init__(message, metadata=metadata)

    def with_config_live(self) -> RevisionConflict:
        """This conflict, saying the config the change wrote stays (see __init__)."""
        return RevisionConflict(
            self.service_id,
            self.namespace,
            expected=self.expected,
            actual=self.actual,
            config_live=True,
        )

    @staticmethod
    def check(service_id: str, namespace: str, expected: int, actual: int) -> None:
        """Raise unless ``actual`` (0: absent) satisfies ``expected`` (0: anything)."""
        if expected and expected != (actual or -1):
            raise RevisionConflict(service_id, namespace, expected=expected, actual=actual)


class RevisionNotFound(InfrastructureProviderError):
    """The service has no such revision (never had, or it left the bounded history)."""

    reason = ErrorReason.REVISION_NOT_FOUND

    def __init__(self, service_id: str, namespace: str, revision: int) -> None:
        super().__init__(
            f"{namespace}/{service_id} has no revision {revision} in its history",
            metadata={"revision": str(revision)},
        )
