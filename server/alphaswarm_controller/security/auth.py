"""Caller authentication (bearer tokens) and authorization (roles, scopes).

What each method needs is its ``MethodInfo`` (declared in the proto): the least
role, and the scope that token restrictions apply to. ``Authentication`` finds the
caller and checks the role before the request is even looked at; after the scope
was resolved, ``ScopeAuthorization`` checks the caller's provider and namespace
restrictions against it. grpc.health.v1 stays open for probes; reflection is open,
off, or token-protected by setting.
"""

from __future__ import annotations

from typing import Any

from alphaswarm_controller.layers import Context, Layer
from alphaswarm_controller.methods import MethodInfo, Scope
from alphaswarm_core.call import CallContext, Caller
from alphaswarm_core.providers.errors import InfrastructureProviderError
from alphaswarm_core.providers.reasons import ErrorReason

from .tokens import Role, TokenStore

UNAUTHENTICATED = Caller("unauthenticated", 0)
"""Recorded for audit when a call brings no valid token; never authorized."""


class Unauthenticated(InfrastructureProviderError):
    reason = ErrorReason.UNAUTHENTICATED


class CallerPermissionDenied(InfrastructureProviderError):
    reason = ErrorReason.CALLER_PERMISSION_DENIED


def bearer_token(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class Authentication(Layer):
    """Who calls (``call.caller``), and whether their role may call this method."""

    def __init__(self, store: TokenStore, method: MethodInfo | None = None) -> None:
        self._store = store
        self._method = method

    def bind(self, method: MethodInfo) -> Layer | None:
        return None if method.role is None else Authentication(self._store, method)

    def check(self, call: CallContext, request: Any, context: Context) -> None:
        assert self._method is not None
        token = bearer_token(context)
        if token is None:
            call.caller = UNAUTHENTICATED
            raise Unauthenticated("missing bearer token: send 'authorization: Bearer <token>'")
        principal = self._store.authenticate(token)
        if principal is None:
            call.caller = UNAUTHENTICATED
            raise Unauthenticated("invalid bearer token")
        call.caller = principal
        needed = Role(self._method.role or Role.VIEWER)
        if principal.role < needed:
            raise CallerPermissionDenied(
                f"{principal.name!r} has role {Role(principal.role).name.lower()}; "
                f"{self._method.name} needs {needed.name.lower()}",
                metadata={"principal": principal.name, "required_role": needed.name.lower()},
            )


class ScopeAuthorization(Layer):
    """The caller's provider and namespace restrictions, against the resolved scope."""

    def __init__(self, scope: Scope = Scope.NAMESPACE) -> None:
        self._scope = scope

    def bind(self, method: MethodInfo) -> Layer | None:
        if not method.ours or method.scope is Scope.SERVER:
            return None
        return ScopeAuthorization(method.scope)

    def check(self, call: CallContext, request: Any = None, context: Context | None = None) -> None:
        caller = call.caller
        if caller.providers is not None and call.alias not in caller.providers:
            raise CallerPermissionDenied(
                f"{caller.name!r} may not use provider {call.alias!r}",
                metadata={"principal": caller.name, "provider": call.alias},
            )
        if caller.namespaces is None or self._scope is Scope.PROVIDER:
            return  # provider-wide calls (CheckHealth) are not about a namespace
        if self._scope is Scope.NAMESPACE_OR_ALL and not call.namespace:
            return  # every namespace the caller may see: the servicer shows only those
        if call.namespace not in caller.namespaces:
            raise CallerPermissionDenied(
                f"{caller.name!r} may not access namespace {call.namespace!r}; "
                f"allowed: {', '.join(sorted(caller.namespaces))}",
                metadata={"principal": caller.name, "namespace": call.namespace},
            )
