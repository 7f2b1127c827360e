"""Builds and runs the grpc.aio server: ProviderService, health, reflection, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2_grpc

from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm_core.providers.concurrency import shared_runner
from alphaswarm_core.providers.registry import REGISTRY, Registry

from . import reflection
from .budget import CallBudget
from .errors import ErrorMapping
from .health import HealthReporter
from .layers import CallSetup, Layer, LayeredServer
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

#: The shutdown grace is the whole budget from the signal to exit. In-flight calls
#: may use it all but this share, kept for closing providers (the local provider
#: stops its replicas then); a short grace keeps a third for them.
PROVIDER_SHARE_SECONDS = 5.0
#: Kept at the very end: providers not closed by then are cancelled (the local
#: provider then SIGKILLs every replica's process tree) and the process exits.
EXIT_RESERVE_SECONDS = 0.5
#: If the event loop itself is stuck, a watchdog thread ends the process this long
#: after the budget.
WATCHDOG_SLACK_SECONDS = 1.5


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
    streams: StreamLimit | None = None
    """The server-wide count of open ProviderService streams (``streams.open``)."""

    @property
    def metrics_port(self) -> int | None:
        """The bound port of /metrics, None when metrics are off."""
        return self.observability.metrics_port if self.observability else None

    async def stop(self, *, hurry: asyncio.Event | None = None) -> None:
        """Graceful stop within the shutdown grace, everything included: NOT_SERVING, end
        streams, let unary calls finish, close providers.

        When the budget runs out, or ``hurry`` is set (a second signal), calls are
        cancelled and providers still closing are cancelled: the local provider
        then SIGKILLs every replica's process tree instead of waiting.
        """
        loop = asyncio.get_running_loop()
        budget = self.settings.shutdown_grace_seconds
        deadline = loop.time() + budget
        hurry = hurry or asyncio.Event()
        await self.health.shutdown()
        self.shutdown_signal.set()
        share = min(PROVIDER_SHARE_SECONDS, budget / 3)
        drain = max(0.0, deadline - share - loop.time())
        if not await _until(self.server.stop(drain), deadline - share, hurry, cancel=False):
            await self.server.stop(0)  # cancels every call still running
        if self.audit is not None:  # changes whose callers left finish before providers close
            await self.audit.drain(max(0.0, deadline - share - loop.time()))
        await self._close_providers(deadline - EXIT_RESERVE_SECONDS, hurry)
        if self.observability is not None:
            self.observability.close()

    async def _close_providers(self, deadline: float, hurry: asyncio.Event) -> None:
        """Close every provider at once, each cancelled on its own if it is out of time."""
        closing = {
            alias: asyncio.create_task(instance.close(), name=f"close provider {alias}")
            for alias, instance in self.pool.opened().items()
        }
        await asyncio.sleep(0)  # each close begins before any of them can be cancelled
        for alias, task in closing.items():
            try:
                if not await _until(task, deadline, hurry, cancel=True):
                    log.warning("provider %s did not close in time: cancelled", alias)
            except Exception:
                log.exception("closing provider %s failed", alias)


async def _until(
    work: Awaitable[object], deadline: float, hurry: asyncio.Event, *, cancel: bool
) -> bool:
    """Await ``work`` until it is done (True), or ``deadline`` or ``hurry`` (False).

    Out of time, ``work`` is cancelled when ``cancel``, else left to the caller
    to cut short (and awaited then).
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    hurried = asyncio.create_task(hurry.wait())
    try:
        await asyncio.wait(
            {task, hurried},
            timeout=max(0.0, deadline - loop.time()),
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        hurried.cancel()
    if task.done():
        task.result()
        return True
    if cancel:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    else:
        task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return False


def _provider_env(settings: ServerSettings, env: Mapping[str, str]) -> dict[str, str]:
    """The environment providers read, with the resolved state dir filled in."""
    merged = dict(env)
    merged["ALPHASWARM_CP_STATE_DIR"] = str(settings.state_dir)
    return merged


def _layers(
    settings: ServerSettings, observability: Observability, audit: Audit, streams: StreamLimit
) -> list[Layer]:
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
    layers.append(streams)
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
        REGISTRY if registry is None else registry,
        settings.default_provider,
        provider_env,
        instrument=observability.provider_hook(),
        prepare=functools.partial(bootstrap, registry),  # after the port serves
    )
    shutdown = ShutdownSignal()
    observability.start()  # before the gRPC server exists: a taken port leaves nothing behind
    audit = Audit()
    streams = StreamLimit(settings.max_streams, settings.max_streams_per_connection)
    protect_reflection = settings.reflection == "auth" and settings.tokens_file is not None
    server = grpc.aio.server(options=server_options(settings))
    layered = LayeredServer(
        server,
        method_table(protect_reflection),
        _layers(settings, observability, audit, streams),
        CallSetup(settings.call_timeout_seconds),
    )
    pb_grpc.add_ProviderServiceServicer_to_server(ProviderServicer(pool, shutdown), layered)
    reporter = HealthReporter(pool, settings.providers, settings.health_interval_seconds)
    health_pb2_grpc.add_HealthServicer_to_server(reporter.servicer, layered)
    if settings.reflection != "off":
        reflection.enable(layered, (PROVIDER_SERVICE, HEALTH_SERVICE))
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
    return RunningServer(
        server, port, pool, reporter, shutdown, settings, observability, audit, streams
    )


def _watchdog(seconds: float) -> None:
    """Ends the process if it is still alive ``seconds`` from now (a stuck loop or thread)."""

    def expire() -> None:
        sys.stderr.write(f"alphaswarm-server: not stopped {seconds:.1f} s after the signal\n")
        sys.stderr.flush()
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


async def serve(settings: ServerSettings) -> int:
    """Run until SIGTERM/SIGINT, then stop within the shutdown grace; a second signal
    stops at once. Returns the exit code: 0 after a graceful stop, 1 after a hurried one."""
    running = await start_server(settings)
    stop, hurry = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        (hurry if stop.is_set() else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    serving = asyncio.create_task(running.server.wait_for_termination())
    waiting = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, waiting}, return_when=asyncio.FIRST_COMPLETED)
    grace = settings.shutdown_grace_seconds
    log.info("shutting down (grace %.1f s in all; a second signal stops at once)", grace)
    _watchdog(grace + WATCHDOG_SLACK_SECONDS)
    await running.stop(hurry=hurry)
    for task in (serving, waiting):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    shared_runner().shutdown()
    if hurry.is_set():
        log.warning("stopped at once (second signal)")
        return 1
    log.info("stopped")
    return 0
