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

from collections.abc import AsyncIterator
from typing import Any

from alphaswarm_core.call import CallContext
from alphaswarm_core.providers.errors import FieldViolation, InvalidSpecError
from alphaswarm_core.providers.models import DEFAULT_NAMESPACE, check_alias, check_name

from .convert import target_violations
from .layers import Context, Layer, StreamNext, UnaryNext
from .methods import MethodInfo, Scope


def resolve(method: MethodInfo, request: Any, call: CallContext, default_alias: str) -> None:
    """Fill ``call.alias``/``namespace``/``service_id`` from ``request``; raise
    ``InvalidSpecError`` naming every bad field."""
    if method.scope is Scope.SERVER:
        return
    violations: list[FieldViolation] = []
    alias = request.provider
    if alias:
        check_alias(violations, "provider", alias)
    call.alias = alias or default_alias
    source = request
    if method.scope is not Scope.PROVIDER:
        source = getattr(request, method.target) if method.target else request
        prefix = f"{method.target}." if method.target else ""
        namespace = source.namespace
        if namespace:
            check_name(violations, f"{prefix}namespace", namespace)
        elif method.scope is Scope.NAMESPACE:
            namespace = DEFAULT_NAMESPACE
        call.namespace = namespace
        if hasattr(source, "service_id"):
            check_name(violations, f"{prefix}service_id", source.service_id)
            call.service_id = source.service_id
    if violations:
        call.alias = call.namespace = call.service_id = ""
        if method.target:  # name all that is wrong with the target at once
            named = {v.field for v in violations}
            violations += [
                v for v in target_violations(method.target, source) if v.field not in named
            ]
        raise InvalidSpecError(violations)


class ScopeResolution(Layer):
    def __init__(self, default_alias: str, method: MethodInfo | None = None) -> None:
        self._default = default_alias
        self._method = method

    def bind(self, method: MethodInfo) -> Layer | None:
        if not method.ours or method.scope is Scope.SERVER:
            return None
        return ScopeResolution(self._default, method)

    async def unary(
        self, call: CallContext, request: Any, context: Context, proceed: UnaryNext
    ) -> Any:
        assert self._method is not None
        resolve(self._method, request, call, self._default)
        return await proceed(call, request, context)

    async def stream(
        self, call: CallContext, request: Any, context: Context, proceed: StreamNext
    ) -> AsyncIterator[Any]:
        assert self._method is not None
        resolve(self._method, request, call, self._default)
        async for item in proceed(call, request, context):
            yield item
