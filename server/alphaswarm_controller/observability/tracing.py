"""OpenTelemetry tracing of every RPC and every provider (backend) call.

Optional: this module imports ``opentelemetry`` and is imported only when
``ALPHASWARM_CP_TRACING=otel`` (``pip install 'alphaswarm-controller[otel]'``).
Configuration is the standard OTEL_* environment, read by the SDK itself:
OTEL_TRACES_EXPORTER (``otlp`` by default, ``console``, ``none``, or any
installed exporter's entry-point name), OTEL_EXPORTER_OTLP_ENDPOINT /
_PROTOCOL / _HEADERS, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
OTEL_TRACES_SAMPLER, OTEL_PROPAGATORS, OTEL_BSP_*.

Incoming W3C ``traceparent`` metadata makes the server span a child of the
caller's span; each provider call is a child span of the RPC's span.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from alphaswarm_core.providers.errors import InfrastructureProviderError

from . import logs

log = logging.getLogger(__name__)

INSTRUMENTATION = "alphaswarm_controller"
DEFAULT_SERVICE_NAME = "alphaswarm-controller"

# Per the OpenTelemetry RPC conventions, a server span is an error only for these codes;
# NOT_FOUND, INVALID_ARGUMENT and the like are the caller's problem, not the server's.
SERVER_ERROR_CODES = frozenset(
    {"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"}
)

_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}


class Tracing:
    """Starts RPC server spans and provider call spans on a ``TracerProvider``."""

    def __init__(self, provider: TracerProvider, *, owns_provider: bool = False) -> None:
        self.provider = provider
        self._owns = owns_provider
        self._tracer = provider.get_tracer(INSTRUMENTATION)

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Tracing:
        """An SDK TracerProvider configured from OTEL_*, also installed as the global one
        (so that instrumented SDKs a provider uses join the same traces)."""
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        env = os.environ if env is None else env
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
        provider = SdkTracerProvider(resource=resource)
        names = []
        for name in _exporter_names(env):
            provider.add_span_processor(BatchSpanProcessor(_load_exporter(name, env)))
            names.append(name)
        trace.set_tracer_provider(provider)
        log.info(
            "tracing with OpenTelemetry: exporters %s, service %s",
            ", ".join(names) or "none",
            resource.attributes.get(SERVICE_NAME),
        )
        return cls(provider, owns_provider=True)

    def enable_log_correlation(self) -> None:
        """Put the current trace and span ids on every log line."""
        logs.trace_ids = current_trace_ids

    # RPC spans -----------------------------------------------------------------

    def start_rpc(
        self, method: str, metadata: Iterable[tuple[str, Any]] | None, peer: str
    ) -> tuple[Span, object]:
        """Start the server span of ``method`` and make it current; returns (span, token)."""
        carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
        parent = propagate.extract(carrier)
        service, _, name = method.lstrip("/").partition("/")
        attributes: dict[str, Any] = {
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": name,
        }
        attributes.update(_peer_attributes(peer))
        span = self._tracer.start_span(
            f"{service}/{name}", context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    @staticmethod
    def end_rpc(span: Span, token: object, code_name: str, provider: str, request_id: str) -> None:
        span.set_attribute("rpc.grpc.status_code", _code_value(code_name))
        if provider:
            span.set_attribute("alphaswarm.provider", provider)
        span.set_attribute("alphaswarm.request_id", request_id)
        if code_name in SERVER_ERROR_CODES:
            span.set_status(Status(StatusCode.ERROR, code_name))
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]

    # Provider call spans -------------------------------------------------------

    @contextmanager
    def backend_call(self, alias: str, kind: str, method: str) -> Iterator[Span]:
        """A child span (current inside the block) around one provider method call."""
        with self._tracer.start_as_current_span(
            f"{alias}.{method}",
            kind=SpanKind.INTERNAL,
            attributes=_backend_attributes(alias, kind, method),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except asyncio.CancelledError:
                raise  # the caller went away: not a backend error
            except BaseException as error:
                mark_backend_error(span, error)
                raise

    def start_backend_stream(self, alias: str, kind: str, method: str) -> Span:
        """A span for a provider stream's lifetime; not made current (it spans yields)."""
        return self._tracer.start_span(
            f"{alias}.{method}",
            kind=SpanKind.INTERNAL,
            attributes=_backend_attributes(alias, kind, method),
        )

    def shutdown(self) -> None:
        """Flush pending spans (batch processor) when this object built the provider."""
        if self._owns:
            shutdown = getattr(self.provider, "shutdown", None)
            if shutdown is not None:
                shutdown()
            if logs.trace_ids is current_trace_ids:
                logs.trace_ids = None


def mark_backend_error(span: Span, error: BaseException) -> None:
    """The type and the stable reason on the span; ERROR status by the same rule as the
    server span (one rule for both): only for errors whose gRPC code is a server-side one
    (SERVER_ERROR_CODES), so a NOT_FOUND or INVALID_ARGUMENT marks neither span. The
    message only for provider errors (written for callers, so free of secrets), never for
    unexpected exceptions (INTERNAL)."""
    span.set_attribute("error.type", type(error).__name__)
    if isinstance(error, InfrastructureProviderError):
        span.set_attribute("alphaswarm.error.reason", error.reason)
        if error.code in SERVER_ERROR_CODES:
            span.set_status(Status(StatusCode.ERROR, f"{error.reason}: {error.message}"))
    else:
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))


def current_trace_ids() -> tuple[str, str] | None:
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return trace.format_trace_id(ctx.trace_id), trace.format_span_id(ctx.span_id)


def _backend_attributes(alias: str, kind: str, method: str) -> dict[str, Any]:
    return {
        "alphaswarm.provider": alias,
        "alphaswarm.provider.kind": kind,
        "alphaswarm.provider.method": method,
    }


def _code_value(code_name: str) -> int:
    import grpc

    return int(grpc.StatusCode[code_name].value[0])


def _peer_attributes(peer: str) -> dict[str, Any]:
    """``ipv4:127.0.0.1:5000`` / ``ipv6:[::1]:5000`` -> network.peer.* attributes."""
    family, _, address = peer.partition(":")
    if family not in ("ipv4", "ipv6"):
        return {}
    host, _, port = address.rpartition(":")
    attributes: dict[str, Any] = {"network.peer.address": host.strip("[]")}
    if port.isdigit():
        attributes["network.peer.port"] = int(port)
    return attributes


def _exporter_names(env: Mapping[str, str]) -> list[str]:
    raw = env.get("OTEL_TRACES_EXPORTER") or "otlp"
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    return [] if "none" in names else names


def _load_exporter(name: str, env: Mapping[str, str]) -> Any:
    """The span exporter registered under ``name`` (the SDK's entry-point group); ``otlp``
    picks grpc or http/protobuf by OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL as the spec says."""
    if name == "otlp":
        protocol = (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "grpc"
        )
        if protocol not in _OTLP_BY_PROTOCOL:
            raise SystemExit(
                f"OTEL_EXPORTER_OTLP_PROTOCOL must be grpc or http/protobuf, not {protocol!r}"
            )
        name = _OTLP_BY_PROTOCOL[protocol]
    found = importlib.metadata.entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        raise SystemExit(
            f"OTEL_TRACES_EXPORTER names {name!r}, which is not installed; "
            "pip install 'alphaswarm-controller[otel]' brings otlp and console"
        )
    exporter_class = next(iter(found)).load()
    return exporter_class()
