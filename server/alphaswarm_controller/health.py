"""grpc.health.v1 wiring: the overall server plus one entry per configured provider.

The overall entry ("" and the ProviderService name) is SERVING while the server
accepts work and NOT_SERVING once shutdown begins, so load balancers drain it
first. Each configured provider's alias follows that provider's own ``health()``
probe, re-run every ``health_interval_seconds``, so a probe that points at a
provider alias tells whether its credentials and backend work right now.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from alphaswarm_core.providers.errors import InfrastructureProviderError

from .methods import PROVIDER_SERVICE
from .pool import ProviderPool

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

log = logging.getLogger(__name__)


MAX_SERVICE_NAME_BYTES = 256
"""Longer than any name served here ("", the service's full name, aliases)."""


class BoundedHealthServicer(HealthServicer):  # type: ignore[misc]
    """grpc.health.v1 that refuses absurd service names before anything keeps them.

    A Watch holds its service name for as long as it is open (the stock servicer
    keys its watchers by it), and callers need no token: without this bound a few
    hundred watches of 4 MiB names would hold gigabytes. Open watches are counted
    and capped with every other stream (security/limits.py).
    """

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        await _refuse_long_name(request, context)
        return await super().Check(request, context)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        await _refuse_long_name(request, context)
        await super().Watch(request, context)

    async def List(
        self, request: health_pb2.HealthListRequest, context: Any
    ) -> health_pb2.HealthListResponse:
        """Every name this server reports and its status (grpc.health.v1 List): the overall
        entries and one per configured provider, so far fewer than the protocol's 100."""
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._server_status.items()
            }
        )


async def _refuse_long_name(request: health_pb2.HealthCheckRequest, context: Any) -> None:
    if len(request.service.encode()) > MAX_SERVICE_NAME_BYTES:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"service: at most {MAX_SERVICE_NAME_BYTES} bytes",
        )


class HealthReporter:
    def __init__(self, pool: ProviderPool, aliases: Sequence[str], interval: float) -> None:
        self.servicer = BoundedHealthServicer()
        self._pool = pool
        self._aliases = tuple(aliases)
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Serve at once; providers report NOT_SERVING until their first probe passes."""
        for name in ("", PROVIDER_SERVICE):
            await self.servicer.set(name, SERVING)
        for alias in self._aliases:
            await self.servicer.set(alias, NOT_SERVING)
        self._task = asyncio.create_task(self._loop(), name="alphaswarm-health-probes")

    async def probe_all(self) -> None:
        await asyncio.gather(*(self._probe(alias) for alias in self._aliases))

    async def _probe(self, alias: str) -> None:
        try:
            provider = await self._pool.get(alias)
            result = await asyncio.wait_for(provider.health(), timeout=self._interval)
            healthy, message = result.healthy, result.message
        except InfrastructureProviderError as exc:
            healthy, message = False, exc.message
        except Exception:
            log.exception("health probe of %s failed unexpectedly", alias)
            healthy, message = False, "probe failed unexpectedly"
        if not healthy:
            log.warning("provider %s is not healthy: %s", alias, message)
        await self.servicer.set(alias, SERVING if healthy else NOT_SERVING)

    async def _loop(self) -> None:
        while True:
            await self.probe_all()
            await asyncio.sleep(self._interval)

    async def shutdown(self) -> None:
        """Report NOT_SERVING everywhere (first step of a graceful stop) and stop probing."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.servicer.enter_graceful_shutdown()
