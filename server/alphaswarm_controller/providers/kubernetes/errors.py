"""Kubernetes API failures -> the provider error hierarchy.

The API server answers with a ``Status`` body whose ``reason`` and
``details.kind`` say what failed; connection problems surface from urllib3.
Messages name the endpoint and the config source (KUBECONFIG, context,
namespace), never a token.
"""

from __future__ import annotations

import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from alphaswarm_core.providers.errors import (
    BackendConflictError,
    BackendPermissionDenied,
    BackendRejectedError,
    BackendUnavailableError,
    DeploymentNotFoundError,
    FieldViolation,
    InfrastructureProviderError,
    InfrastructureProviderUnavailable,
    InvalidSpecError,
    ResourceNotFoundError,
)
from alphaswarm_core.providers.reasons import ErrorReason

#: What a caller of the controller should wait before retrying an unreachable cluster.
UNREACHABLE_RETRY_SECONDS = 5.0
#: Metadata key of an error answered with a Retry-After header: the seconds it asked for.
SERVER_RETRY_AFTER = "retry_after"

TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    urllib3.exceptions.HTTPError,
    ConnectionError,
    socket.timeout,
    TimeoutError,
)


@dataclass(frozen=True, slots=True)
class Target:
    """What a call was about, to pick the error class and message."""

    service_id: str = ""
    namespace: str = ""
    what: str = ""
    """Short action phrase, e.g. ``apply Deployment``."""


def status_body(exc: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(exc: ApiException, default: float) -> float:
    headers = exc.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return max(1.0, float(value)) if value else default
    except ValueError:
        return default


def translate_api_error(
    exc: ApiException, target: Target, *, alias: str, source: str
) -> InfrastructureProviderError:
    body = status_body(exc)
    message = str(body.get("message") or exc.reason or "no message")[:500]
    details = body.get("details") or {}
    code = int(exc.status or 0)
    doing = f" ({target.what})" if target.what else ""
    meta = {"provider": alias, "http_status": str(code)}
    if code == 401:
        return InfrastructureProviderUnavailable(
            f"the Kubernetes API rejected the controller's credentials{doing}; check {source}",
            reason=ErrorReason.CREDENTIALS_INVALID,
            metadata=meta,
        )
    if code == 403:
        return BackendPermissionDenied(
            f"Kubernetes RBAC denied the request{doing}: {message}", metadata=meta
        )
    if code == 404:
        if details.get("kind") == "namespaces":
            namespace = str(details.get("name") or target.namespace)
            return ResourceNotFoundError(
                f"namespace {namespace!r} does not exist; create it or set "
                "ALPHASWARM_KUBERNETES_CREATE_NAMESPACES=true",
                metadata={**meta, "namespace": namespace},
            )
        if target.service_id:
            return DeploymentNotFoundError(target.service_id, target.namespace)
        return ResourceNotFoundError(f"not found{doing}: {message}", metadata=meta)
    if code in (409, 410):
        return BackendConflictError(
            f"the object changed concurrently{doing}: {message}; read it again and retry",
            metadata={**meta, "k8s_reason": str(body.get("reason", ""))},
        )
    if code == 422 and body.get("reason") == "Invalid":
        # The server validated the object built from the caller's request and refused a
        # field of it: the caller's input, INVALID_ARGUMENT naming the request field.
        return InvalidSpecError(
            _violations(details, message),
            message=f"the Kubernetes API rejected the request{doing}: {message}",
        )
    if code in (400, 415, 422):
        return BackendRejectedError(
            f"the Kubernetes API rejected the request{doing}: {message}", metadata=meta
        )
    if code == 429 or code >= 500:
        sent = _retry_after(exc, 0.0)
        if sent:  # what the server asked for, which a retrying loop must honour
            meta[SERVER_RETRY_AFTER] = f"{sent:g}"
        return BackendUnavailableError(
            f"the Kubernetes API is unavailable{doing} (HTTP {code}): {message}",
            retry_after_seconds=sent or 2.0,
            metadata=meta,
        )
    return InfrastructureProviderError(
        f"unexpected Kubernetes API answer{doing} (HTTP {code}): {message}", metadata=meta
    )


#: Object field paths of the API's validation errors (``details.causes[].field``), longest
#: first, and the request field each is built from (manifests.py).
REQUEST_FIELDS: tuple[tuple[str, str], ...] = (
    ("spec.template.spec.containers[0].resources.limits.memory", "spec.resources.memory"),
    ("spec.template.spec.containers[0].resources.limits.cpu", "spec.resources.cpu"),
    ("spec.template.spec.containers[0].resources", "spec.resources"),
    ("spec.template.spec.containers[0].image", "spec.image"),
    ("spec.template.spec.containers[0].command", "spec.command"),
    ("spec.template.spec.containers[0].env", "spec.env"),
    ("spec.template.spec.containers[0].ports", "spec.ports"),
    ("spec.template.spec.containers[0].imagePullPolicy", "spec.provider_options"),
    ("spec.template.spec.serviceAccountName", "spec.provider_options['service_account']"),
    ("spec.template.metadata.labels", "spec.labels"),
    ("spec.template.labels", "spec.labels"),
    ("spec.selector", "spec.service_id"),
    ("spec.ports", "spec.ports"),
    ("spec.type", "spec.provider_options['service_type']"),
    ("metadata.labels", "spec.labels"),
    ("metadata.name", "service_id"),
    ("data", "patch.set"),
)


def request_field(field: str) -> str:
    """The request field a Kubernetes object field comes from (``kubernetes:<path>`` if none)."""
    for prefix, mapped in REQUEST_FIELDS:
        if field == prefix or field.startswith((prefix + ".", prefix + "[")):
            return mapped + field[len(prefix) :]
    return f"kubernetes:{field}" if field else "kubernetes"


def _violations(details: dict[str, Any], message: str) -> list[FieldViolation]:
    causes = details.get("causes") or []
    found = [
        FieldViolation(request_field(str(c.get("field") or "")), str(c.get("message") or "")[:300])
        for c in causes[:20]
        if isinstance(c, dict)
    ]
    return found or [FieldViolation("kubernetes", message)]


def translate_transport_error(
    exc: BaseException, target: Target, *, alias: str, endpoint: str, source: str, namespace: str
) -> InfrastructureProviderError:
    doing = f" ({target.what})" if target.what else ""
    reason_text = _transport_reason(exc)
    if _is_tls_error(exc):
        return InfrastructureProviderUnavailable(
            f"TLS verification with the Kubernetes API at {endpoint} failed{doing}: "
            f"{reason_text}; check the cluster CA in {source}",
            reason=ErrorReason.TLS_ERROR,
            metadata={"provider": alias, "endpoint": endpoint},
        )
    return BackendUnavailableError(
        f"cannot reach the Kubernetes API at {endpoint}{doing}: {reason_text} "
        f"[{source}; namespace {namespace}]",
        retry_after_seconds=UNREACHABLE_RETRY_SECONDS,
        reason=ErrorReason.BACKEND_UNREACHABLE,
        metadata={"provider": alias, "endpoint": endpoint, "namespace": namespace},
    )


def _is_tls_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, (ssl.SSLError, urllib3.exceptions.SSLError)):
            return True
        seen = getattr(seen, "reason", None) or seen.__cause__ or seen.__context__
    return False


def _transport_reason(exc: BaseException) -> str:
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, (urllib3.exceptions.TimeoutError, socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return "connection refused or host unreachable"
    if isinstance(exc, urllib3.exceptions.ProtocolError):
        return "connection dropped"
    return type(exc).__name__
