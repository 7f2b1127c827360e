"""What a ProviderService request addresses, resolved and validated in one place.

The method's declared scope (``MethodInfo.scope`` / ``target``, from the proto's
``access`` option) says where the request keeps its provider, namespace and
service. ``ScopeResolution`` reads them, applies the defaults (the server's default
provider; namespace "default", or every namespace for namespace-wide calls) and
validates them by full match before anything uses or logs them, then records them
on the ``CallContext``: the servicer, authorization, audit, errors and providers
all read the resolved values from there.
"""

from __future__ import annotations

from typing import Any

from alphaswarm_core.call import CallContext
from alphaswarm_core.providers.errors import FieldViolation, InvalidSpecError
from alphaswarm_core.providers.models import DEFAULT_NAMESPACE, check_alias, check_name

from .convert import target_violations
from .layers import Context, Layer
from .methods import MethodInfo, Scope


def resolve(method: MethodInfo, request: Any, call: CallContext, default_alias: str) -> None:
    """What the layer does for one call of ``method`` (for code outside a server)."""
    if method.scope is not Scope.SERVER:
        ScopeResolution(default_alias, method).check(call, request)


class ScopeResolution(Layer):
    """Resolves the scope of each ProviderService call; bound per method, with where its
    request keeps the target and the field paths of errors worked out once."""

    def __init__(self, default_alias: str, method: MethodInfo | None = None) -> None:
        self._default = default_alias
        self._provider_only = method is not None and method.scope is Scope.PROVIDER
        self._namespace_wide = method is not None and method.scope is Scope.NAMESPACE_OR_ALL
        self._target = method.target if method is not None else ""
        prefix = f"{self._target}." if self._target else ""
        self._namespace_path = f"{prefix}namespace"
        self._service_path = f"{prefix}service_id"

    def bind(self, method: MethodInfo) -> Layer | None:
        if not method.ours or method.scope is Scope.SERVER:
            return None
        return ScopeResolution(self._default, method)

    def check(self, call: CallContext, request: Any, context: Context | None = None) -> None:
        """Fill ``call.alias``/``namespace``/``service_id`` from ``request``; raise
        ``InvalidSpecError`` naming every bad field."""
        violations: list[FieldViolation] = []
        alias = request.provider
        if alias:
            check_alias(violations, "provider", alias)
        call.alias = alias or self._default
        source = request
        if not self._provider_only:
            if self._target:
                source = getattr(request, self._target)
            namespace = source.namespace
            if namespace:
                check_name(violations, self._namespace_path, namespace)
            elif not self._namespace_wide:
                namespace = DEFAULT_NAMESPACE
            call.namespace = namespace
            if hasattr(source, "service_id"):
                check_name(violations, self._service_path, source.service_id)
                call.service_id = source.service_id
        if violations:
            call.alias = call.namespace = call.service_id = ""
            if self._target:  # name all that is wrong with the target at once
                named = {v.field for v in violations}
                violations += [
                    v for v in target_violations(self._target, source) if v.field not in named
                ]
            raise InvalidSpecError(violations)
