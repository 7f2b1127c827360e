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
from .errors import ErrorMappingInterceptor
from .health import SERVICE_NAME, HealthReporter
from .interception import BehaviorInterceptor, LayeredInterceptor
from .observability import Observability
from .pool import ProviderPool
from .providers import bootstrap
from .security.audit import AuditInterceptor
from .security.auth import AuthInterceptor
from .security.limits import StreamLimitInterceptor, server_options
from .security.tls import is_loopback, server_credentials
from .security.tokens import TokenStore
from .servicer import ProviderServicer
from .settings import ServerSettings
from .streams import ShutdownSignal

log = logging.getLogger("alphaswarm_controller")

HEALTH_SERVICE = "grpc.health.v1.Health"


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    pool: ProviderPool
    health: HealthReporter
    shutdown_signal: ShutdownSignal
    settings: ServerSettings
    observability: Observability | None = None

    @property
    def metrics_port(self) -> int | None:
        """The bound port of /metrics, None when metrics are off."""
        return self.observability.metrics_port if self.observability else None

    async def stop(self) -> None:
        """Graceful stop: NOT_SERVING, end streams, let unary calls finish, close providers."""
        await self.health.shutdown()
        self.shutdown_signal.set()
        await self.server.stop(self.settings.shutdown_grace_seconds)
        await self.pool.close()
        if self.observability is not None:
            self.observability.close()


def _provider_env(settings: ServerSettings, env: Mapping[str, str]) -> dict[str, str]:
    """The environment providers read, with the resolved state dir filled in."""
    merged = dict(env)
    merged["ALPHASWARM_CP_STATE_DIR"] = str(settings.state_dir)
    return merged


def _interceptors(
    settings: ServerSettings, observability: Observability | None = None
) -> list[BehaviorInterceptor]:
    """Outermost first: observability sets the request id and sees every final status,
    audit sees the final outcome, errors map what auth and limits raise."""
    observability = observability or Observability()
    layers: list[BehaviorInterceptor] = [
        observability.interceptor(),
        AuditInterceptor(settings.default_provider),
        ErrorMappingInterceptor(f"/{SERVICE_NAME}/", settings.call_timeout_seconds),
    ]
    if settings.tokens_file is not None:
        store = TokenStore.load(settings.tokens_file)
        layers.append(
            AuthInterceptor(store, settings.default_provider, settings.reflection == "auth")
        )
    elif not is_loopback(settings.listen_host):
        log.warning(
            "no ALPHASWARM_CP_TOKENS_FILE: every caller that reaches %s may do anything",
            settings.listen,
        )
    layers.append(StreamLimitInterceptor(settings.max_streams, settings.max_streams_per_connection))
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
    server = grpc.aio.server(
        interceptors=[LayeredInterceptor(_interceptors(settings, observability))],
        options=server_options(settings),
    )
    pb_grpc.add_ProviderServiceServicer_to_server(ProviderServicer(pool, shutdown), server)
    reporter = HealthReporter(pool, settings.providers, settings.health_interval_seconds)
    health_pb2_grpc.add_HealthServicer_to_server(reporter.servicer, server)
    if settings.reflection != "off":
        reflection.enable(server, (SERVICE_NAME, HEALTH_SERVICE))
    if credentials is None:
        port = server.add_insecure_port(settings.listen)
    else:
        port = server.add_secure_port(settings.listen, credentials)
    if port == 0:
        observability.close()
        raise SystemExit(f"cannot listen on {settings.listen}")
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
    return RunningServer(server, port, pool, reporter, shutdown, settings, observability)


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
