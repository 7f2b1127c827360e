"""Caller authentication (bearer tokens) and authorization (roles, scopes).

grpc.health.v1 always stays open for probes; reflection is open, off, or
token-protected by setting. ProviderService errors are raised and mapped by
the error layer outside this one; reflection calls are aborted directly.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator
from typing import Any

import grpc

from alphaswarm_controller.interception import (
    BehaviorInterceptor,
    Context,
    StreamBehavior,
    UnaryBehavior,
)
from alphaswarm_core.providers.errors import InfrastructureProviderError

from .scope import request_scope
from .tokens import ANONYMOUS, Principal, Role, TokenStore

SERVICE_PREFIX = "/alphaswarm.provider.v1.ProviderService/"
REFLECTION_PREFIX = "/grpc.reflection."

VIEWER_METHODS = frozenset(
    {
        "ListProviders",
        "CheckHealth",
        "GetDeploymentStatus",
        "ListDeployments",
        "GetServiceConfig",
        "StreamMetrics",
        "WatchDeployment",
    }
)
OPERATOR_METHODS = frozenset(
    {"StartDeployment", "StopDeployment", "ScaleDeployment", "ApplyConfig"}
)

UNAUTHENTICATED = Principal("unauthenticated", Role.VIEWER)
"""Recorded for audit when a call brings no valid token; never authorized."""

current_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "alphaswarm_principal", default=ANONYMOUS
)


class Unauthenticated(InfrastructureProviderError):
    code = "UNAUTHENTICATED"
    reason = "UNAUTHENTICATED"


class CallerPermissionDenied(InfrastructureProviderError):
    code = "PERMISSION_DENIED"
    reason = "CALLER_PERMISSION_DENIED"


def required_role(method: str) -> Role:
    name = method.rsplit("/", 1)[-1]
    if name in VIEWER_METHODS or method.startswith(REFLECTION_PREFIX):
        return Role.VIEWER
    if name in OPERATOR_METHODS:
        return Role.OPERATOR
    return Role.ADMIN


def bearer_token(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class AuthInterceptor(BehaviorInterceptor):
    def __init__(self, store: TokenStore, default_provider: str, protect_reflection: bool) -> None:
        super().__init__()
        self._store = store
        self._default_provider = default_provider
        self._protect_reflection = protect_reflection

    def applies_to(self, method: str) -> bool:
        return method.startswith(SERVICE_PREFIX) or (
            self._protect_reflection and method.startswith(REFLECTION_PREFIX)
        )

    def authorize(self, method: str, request: Any, context: Context) -> None:
        """Authenticate, record who calls (for the audit line), then check role and scope."""
        token = bearer_token(context)
        if token is None:
            current_principal.set(UNAUTHENTICATED)
            raise Unauthenticated("missing bearer token: send 'authorization: Bearer <token>'")
        principal = self._store.authenticate(token)
        if principal is None:
            current_principal.set(UNAUTHENTICATED)
            raise Unauthenticated("invalid bearer token")
        current_principal.set(principal)
        needed = required_role(method)
        if principal.role < needed:
            raise CallerPermissionDenied(
                f"{principal.name!r} has role {principal.role.name.lower()}; "
                f"{method.rsplit('/', 1)[-1]} needs {needed.name.lower()}",
                metadata={"principal": principal.name, "required_role": needed.name.lower()},
            )
        if method.startswith(SERVICE_PREFIX) and not method.endswith("/ListProviders"):
            self._check_scope(principal, request)

    def _check_scope(self, principal: Principal, request: Any) -> None:
        scope = request_scope(request, self._default_provider)
        if principal.providers is not None and scope.provider not in principal.providers:
            raise CallerPermissionDenied(
                f"{principal.name!r} may not use provider {scope.provider!r}",
                metadata={"principal": principal.name, "provider": scope.provider},
            )
        if principal.namespaces is not None and scope.namespace not in principal.namespaces:
            what = f"namespace {scope.namespace!r}" if scope.namespace else "every namespace"
            raise CallerPermissionDenied(
                f"{principal.name!r} may not access {what}; "
                f"allowed: {', '.join(sorted(principal.namespaces))}",
                metadata={"principal": principal.name, "namespace": scope.namespace},
            )

    async def unary(
        self, method: str, request: Any, context: Context, behavior: UnaryBehavior
    ) -> Any:
        self.authorize(method, request, context)
        return await behavior(request, context)

    async def stream(
        self, method: str, request: Any, context: Context, behavior: StreamBehavior
    ) -> AsyncIterator[Any]:
        if method.startswith(REFLECTION_PREFIX):
            try:
                self.authorize(method, None, context)
            except InfrastructureProviderError as error:
                await context.abort(grpc.StatusCode[error.code], error.message)
        else:
            self.authorize(method, request, context)
        async for item in behavior(request, context):
            yield item
