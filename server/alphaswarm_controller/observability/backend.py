"""Timing and tracing of provider (backend) calls.

The pool hands each provider instance, once, to ``instrument_provider``, which
shadows the instance's contract methods with thin wrappers (instance
attributes; the class is untouched). The instance stays what it is, so
``isinstance`` checks, the metrics fan-out and the pool work unchanged, and
every call reaches the wrappers however the servicer, the health reporter or
the provider itself makes it. Nothing is wrapped when metrics and tracing are
both off.

Unary methods are timed (``alphaswarm_backend_call_seconds``) and traced as a
child span of the current RPC; streaming methods (``stream_metrics``,
``watch``) count as open backend streams for their lifetime. Exceptions count
in ``alphaswarm_backend_call_errors`` by their stable reason; a cancellation
(the caller went away) is not a backend error.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from alphaswarm_core.providers.errors import InfrastructureProviderError
from alphaswarm_core.providers.protocol import InfrastructureProvider

if TYPE_CHECKING:
    from .metrics import RpcMetrics
    from .tracing import Tracing

UNARY_METHODS = (
    "health",
    "start",
    "stop",
    "scale",
    "status",
    "list_deployments",
    "get_config",
    "apply_config",
    "delete",
)
STREAM_METHODS = ("stream_metrics", "watch", "stream_logs")


def error_reason(error: BaseException) -> str:
    """A bounded label for ``error``: the provider error's reason, else a class of failure."""
    if isinstance(error, InfrastructureProviderError):
        return error.reason
    if isinstance(error, TimeoutError):
        return "TIMEOUT"
    return "UNEXPECTED"


def instrument_provider(
    alias: str,
    provider: InfrastructureProvider,
    metrics: RpcMetrics | None,
    tracing: Tracing | None,
) -> None:
    """Wrap ``provider``'s contract methods in place (see the module docstring)."""
    kind = str(getattr(provider.provider_kind, "value", provider.provider_kind))
    for name in UNARY_METHODS:
        inner = getattr(provider, name)
        setattr(provider, name, _unary(alias, kind, name, inner, metrics=metrics, tracing=tracing))
    for name in STREAM_METHODS:
        inner = getattr(provider, name)
        setattr(provider, name, _stream(alias, kind, name, inner, metrics=metrics, tracing=tracing))


def _unary(
    alias: str,
    kind: str,
    name: str,
    inner: Callable[..., Awaitable[Any]],
    *,
    metrics: RpcMetrics | None,
    tracing: Tracing | None,
) -> Callable[..., Awaitable[Any]]:
    seconds = metrics.backend_seconds.labels(alias, name) if metrics else None

    @functools.wraps(inner)
    async def call(*args: Any, **kwargs: Any) -> Any:
        span: AbstractContextManager[Any] = (
            tracing.backend_call(alias, kind, name) if tracing else nullcontext()
        )
        started = time.perf_counter()
        try:
            with span:
                return await inner(*args, **kwargs)
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            if metrics is not None:
                metrics.backend_errors.labels(alias, name, error_reason(error)).inc()
            raise
        finally:
            if seconds is not None:
                seconds.observe(time.perf_counter() - started)

    return call


def _stream(
    alias: str,
    kind: str,
    name: str,
    inner: Callable[..., AsyncGenerator[Any, None]],
    *,
    metrics: RpcMetrics | None,
    tracing: Tracing | None,
) -> Callable[..., AsyncGenerator[Any, None]]:
    @functools.wraps(inner)
    def call(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, None]:
        # A provider stream raises (unsupported, not found...) at its first anext,
        # inside _iterate, which counts and records it like any other stream error.
        return _iterate(alias, kind, name, inner(*args, **kwargs), metrics=metrics, tracing=tracing)

    return call


async def _iterate(
    alias: str,
    kind: str,
    name: str,
    source: AsyncGenerator[Any, None],
    *,
    metrics: RpcMetrics | None,
    tracing: Tracing | None,
) -> AsyncGenerator[Any, None]:
    span = tracing.start_backend_stream(alias, kind, name) if tracing else None
    gauge = metrics.backend_streams.labels(alias, name) if metrics else None
    if gauge is not None:
        gauge.inc()
    try:
        async for item in source:
            yield item
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except BaseException as error:
        if metrics is not None:
            metrics.backend_errors.labels(alias, name, error_reason(error)).inc()
        if span is not None:
            from .tracing import mark_backend_error

            mark_backend_error(span, error)
        raise
    finally:
        if gauge is not None:
            gauge.dec()
        if span is not None:
            span.end()
        await source.aclose()
