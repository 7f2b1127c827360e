"""Metrics, traces and request-id logging for the server, each off until configured.

``Observability.from_settings`` imports prometheus-client only when
``ALPHASWARM_CP_METRICS_LISTEN`` is set and OpenTelemetry only when
``ALPHASWARM_CP_TRACING=otel``: a server with neither opens no extra port,
imports neither library and leaves provider instances unwrapped. The request id
(``x-request-id``) is always on, set up with each call's context (layers.CallSetup).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from alphaswarm_core.providers.protocol import InfrastructureProvider

from .logs import REQUEST_ID_KEY, configure_logging

if TYPE_CHECKING:
    from alphaswarm_controller.settings import ServerSettings

    from .metrics import MetricsServer, RpcMetrics
    from .telemetry import Telemetry
    from .tracing import Tracing

__all__ = [
    "REQUEST_ID_KEY",
    "Observability",
    "configure_logging",
]

OTEL_INSTALL_HINT = "pip install 'alphaswarm-controller[otel]'"


@dataclass
class Observability:
    """What the server measures and where it publishes it; built once per server."""

    metrics: RpcMetrics | None = None
    tracing: Tracing | None = None
    metrics_listen: str | None = None
    _metrics_server: MetricsServer | None = None

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> Observability:
        metrics = None
        if settings.metrics_listen:
            from .metrics import RpcMetrics

            metrics = RpcMetrics()
        tracing = None
        if settings.tracing == "otel":
            try:
                from .tracing import Tracing
            except ImportError as exc:
                raise SystemExit(
                    f"ALPHASWARM_CP_TRACING=otel needs OpenTelemetry: {OTEL_INSTALL_HINT} ({exc})"
                ) from exc
            tracing = Tracing.from_environment()
            tracing.enable_log_correlation()
        return cls(metrics, tracing, settings.metrics_listen)

    @property
    def enabled(self) -> bool:
        return self.metrics is not None or self.tracing is not None

    def layer(self) -> Telemetry:
        from .telemetry import Telemetry  # here: telemetry is a layer, and layers log

        return Telemetry(self.metrics, self.tracing)

    def provider_hook(self) -> Callable[[str, InfrastructureProvider], None] | None:
        """What the pool calls with each new provider instance; None when nothing observes."""
        if not self.enabled:
            return None
        from .backend import instrument_provider

        def hook(alias: str, provider: InfrastructureProvider) -> None:
            instrument_provider(alias, provider, self.metrics, self.tracing)

        return hook

    def start(self) -> None:
        """Open the /metrics HTTP endpoint (when configured); logs the bound port."""
        if self.metrics is not None and self.metrics_listen and self._metrics_server is None:
            from .metrics import MetricsServer

            self._metrics_server = MetricsServer(self.metrics, self.metrics_listen)
            self._metrics_server.start()

    @property
    def metrics_port(self) -> int | None:
        return self._metrics_server.port if self._metrics_server is not None else None

    def close(self) -> None:
        if self._metrics_server is not None:
            self._metrics_server.stop()
            self._metrics_server = None
        if self.tracing is not None:
            self.tracing.shutdown()
