"""Builds and runs the grpc.aio server: ProviderService, health, reflection, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2_grpc

from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm_core.providers.concurrency import shared_runner
from alphaswarm_core.providers.registry import Registry

from . import reflection
from .budget import CallBudget
from .errors import ErrorMapping
from .health import HealthReporter
from .layers import CallSetup, Layer, LayeredInterceptor
from .listen import ListenError, bind
from .methods import HEALTH_SERVICE, PROVIDER_SERVICE, method_table
from .observability import Observability
from .pool import ProviderPool
from .providers import bootstrap
from .scope import ScopeResolution
from .security.audit import Audit
from .security.auth import Authentication, ScopeAuthorization
from .security.limits import StreamLimit, server_options
from .security.tls import is_loopback, server_credentials
from .security.tokens import TokenStore
from .servicer import ProviderServicer
from .settings import ServerSettings
from .streams import ShutdownSignal

log = logging.getLogger("alphaswarm_controller")


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    pool: ProviderPool
    health: HealthReporter
    shutdown_signal: ShutdownSignal
    settings: ServerSettings
    observability: Observability | None = None
    audit: Audit | None = None

    @property
    def metrics_port(self) -> int | None:
        """The bound port of /metrics, None when metrics are off."""
        return self.observability.metrics_port if self.observability else None

    async def stop(self) -> None:
        """Graceful stop: NOT_SERVING, end streams, let unary calls finish, close providers."""
        await self.health.shutdown()
        self.shutdown_signal.set()
        await self.server.stop(self.settings.shutdown_grace_seconds)
        if self.audit is not None:  # changes whose callers left finish before providers close
            await self.audit.drain(self.settings.shutdown_grace_seconds)
        await self.pool.close()
        if self.observability is not None:
            self.observability.close()


def _provider_env(settings: ServerSettings, env: Mapping[str, str]) -> dict[str, str]:
    """The environment providers read, with the resolved state dir filled in."""
    merged = dict(env)
    merged["ALPHASWARM_CP_STATE_DIR"] = str(settings.state_dir)
    return merged


def _layers(settings: ServerSettings, observability: Observability, audit: Audit) -> list[Layer]:
    """Outermost first. Telemetry sees every final status; errors map whatever the
    layers inside raise; audit records mutating calls, authenticated or not, and lets
    them finish when their caller leaves; the budget bounds every unary call; the
    caller is authenticated before the request is looked at, and authorized for the
    scope once it was resolved."""
    layers: list[Layer] = [observability.layer(), ErrorMapping(), audit, CallBudget()]
    if settings.tokens_file is not None:
        layers.append(Authentication(TokenStore.load(settings.tokens_file)))
    elif not is_loopback(settings.listen_host):
        log.warning(
            "no ALPHASWARM_CP_TOKENS_FILE: every caller that reaches %s may do anything",
            settings.listen,
        )
    layers.append(ScopeResolution(settings.default_provider))
    if settings.tokens_file is not None:
        layers.append(ScopeAuthorization())
    layers.append(StreamLimit(settings.max_streams))
    return layers


async def start_server(
    settings: ServerSettings,
    *,
    env: Mapping[str, str] | None = None,
    registry: Registry | None = None,
    observability: Observability | None = None,
) -> RunningServer:
    """``observability`` defaults to what ``settings`` ask for (tests inject their own)."""
    env = os.environ if env is None else env
    credentials = server_credentials(settings)
    provider_env = _provider_env(settings, env)
    if observability is None:
        observability = Observability.from_settings(settings)
    pool = ProviderPool(
        bootstrap(registry),
        settings.default_provider,
        provider_env,
        instrument=observability.provider_hook(),
    )
    shutdown = ShutdownSignal()
    observability.start()  # before the gRPC server exists: a taken port leaves nothing behind
    audit = Audit()
    protect_reflection = settings.reflection == "auth" and settings.tokens_file is not None
    interceptor = LayeredInterceptor(
        method_table(protect_reflection),
        _layers(settings, observability, audit),
        CallSetup(settings.call_timeout_seconds),
    )
    server = grpc.aio.server(interceptors=[interceptor], options=server_options(settings))
    pb_grpc.add_ProviderServiceServicer_to_server(ProviderServicer(pool, shutdown), server)
    reporter = HealthReporter(pool, settings.providers, settings.health_interval_seconds)
    health_pb2_grpc.add_HealthServicer_to_server(reporter.servicer, server)
    if settings.reflection != "off":
        reflection.enable(server, (PROVIDER_SERVICE, HEALTH_SERVICE))
    try:
        port = bind(server, settings.listen, credentials)
    except ListenError:
        observability.close()
        raise
    await server.start()
    await reporter.start()
    transport = (
        "plaintext" if credentials is None else ("mTLS" if settings.tls_client_ca else "TLS")
    )
    log.info(
        "alphaswarm-server listening on %s:%d (%s, default provider %s)",
        settings.listen.rsplit(":", 1)[0],
        port,
        transport,
        settings.default_provider,
    )
    return RunningServer(server, port, pool, reporter, shutdown, settings, observability, audit)


async def serve(settings: ServerSettings) -> None:
    """Run until SIGTERM/SIGINT, then stop gracefully."""
    running = await start_server(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    serving = asyncio.create_task(running.server.wait_for_termination())
    waiting = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down (grace %.0f s)", settings.shutdown_grace_seconds)
    await running.stop()
    for task in (serving, waiting):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    shared_runner().shutdown()
    log.info("stopped")
