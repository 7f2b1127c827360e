"""Deployments that keep killing the server are held instead of restarted forever.

A replica running as the server's own user can kill the server, and every
deployment is respawned from state at the next start: without this, such a
deployment takes the server down again after every restart. The store remembers
whether the previous run ended cleanly. Each start after an abnormal end gives
every deployment that should have been running one strike; a clean shutdown,
or a run that stays up for ``crash_loop_reset`` seconds, clears the strikes. A
deployment with ``crash_loop_limit`` strikes in a row is held: its desired
state is kept, no replica is started, and its status says why, until
StartDeployment or ScaleDeployment resumes it (one more abnormal end then holds
it again at once). Which deployment is the culprit cannot be known after the
fact, so every deployment that was running through all those deaths is held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .settings import LocalSettings
from .store import StateStore

log = logging.getLogger(__name__)

HOLD_REASON = (
    "not restarted: the server died abnormally {strikes} times in a row while this "
    "deployment was running (a replica may be killing it); StartDeployment or "
    "ScaleDeployment starts it again"
)


class CrashLoopGuard:
    def __init__(self, store: StateStore, settings: LocalSettings) -> None:
        self._store = store
        self._settings = settings
        self._stable: asyncio.Task[None] | None = None

    async def begin(self) -> list[tuple[tuple[str, str], int]]:
        """Record this start; the deployments held now (they must not be started)."""
        held = await self._store.begin_run(self._settings.crash_loop_limit, HOLD_REASON)
        for (namespace, service_id), strikes in held:
            log.error(
                "local provider: %s/%s held after %d abnormal server deaths in a row",
                namespace,
                service_id,
                strikes,
            )
        self._stable = asyncio.create_task(self._mark_stable(), name="alphaswarm-local:stable")
        return held

    async def _mark_stable(self) -> None:
        await asyncio.sleep(self._settings.crash_loop_reset)
        await self._store.end_run("stable")

    async def end(self) -> None:
        """A clean shutdown: the next start owes nobody a strike."""
        if self._stable is not None:
            self._stable.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._stable
        await self._store.end_run("stopped")
