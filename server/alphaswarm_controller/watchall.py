"""WatchDeployments: one backend watch per (provider, namespace), shared by every caller.

Dashboards watch whole namespaces; a hundred of them must cost the backend one
list+watch (or one poll per interval), not a hundred. The first subscriber starts
a pump over the provider's ``watch_deployments``; the feed keeps the current state
(every deployment's last status), so a newcomer gets it at once as ADDED events,
then the snapshot marker, then live changes.

A subscriber that reads slowly never makes the server buffer without bound and
never misses a change: its pending events are coalesced per deployment, like a
Kubernetes informer's delta FIFO (ADDED then MODIFIED is one ADDED with the newer
status, ADDED then DELETED is nothing, ...), so what it holds is bounded by the
number of deployments. The last subscriber to leave stops the pump.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

from alphaswarm_core.providers.models import DeploymentEvent, DeploymentStatus, EventKind
from alphaswarm_core.providers.protocol import InfrastructureProvider

FeedKey = tuple[str, str | None]
Key = tuple[str, str]
SNAPSHOT_MARKER: Key = ("", "")
"""Pending-map key of the snapshot marker ("" is no valid namespace)."""


def _key(status: DeploymentStatus) -> Key:
    return (status.namespace, status.service_id)


def coalesce(before: DeploymentEvent | None, after: DeploymentEvent) -> DeploymentEvent | None:
    """One event that says what ``before`` then ``after`` said; None: nothing to say."""
    if before is None:
        return after
    if after.kind is EventKind.DELETED:
        return None if before.kind is EventKind.ADDED else after
    if before.kind is EventKind.ADDED:
        return DeploymentEvent(EventKind.ADDED, after.status)
    return DeploymentEvent(EventKind.MODIFIED, after.status)


@dataclass(eq=False)
class _Subscriber:
    visible: Callable[[str], bool]
    pending: dict[Key, DeploymentEvent] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    failed: BaseException | None = None

    def offer(self, event: DeploymentEvent) -> None:
        if event.status is None:
            self.pending[SNAPSHOT_MARKER] = event
        elif self.visible(event.status.namespace):
            key = _key(event.status)
            merged = coalesce(self.pending.pop(key, None), event)
            if merged is not None:
                self.pending[key] = merged  # re-inserted: delivered in order of change
        self.ready.set()

    def take(self) -> list[DeploymentEvent]:
        events = list(self.pending.values())
        self.pending.clear()
        self.ready.clear()
        return events


@dataclass(eq=False)
class _Feed:
    current: dict[Key, DeploymentStatus] = field(default_factory=dict)
    synced: bool = False
    subscribers: set[_Subscriber] = field(default_factory=set)
    task: asyncio.Task[None] | None = None

    def apply(self, event: DeploymentEvent) -> None:
        if event.kind is EventKind.SNAPSHOT_DONE:
            self.synced = True
        elif event.status is not None:
            if event.kind is EventKind.DELETED:
                self.current.pop(_key(event.status), None)
            else:
                self.current[_key(event.status)] = event.status
        for subscriber in self.subscribers:
            subscriber.offer(event)


class DeploymentsFanout:
    def __init__(self) -> None:
        self._feeds: dict[FeedKey, _Feed] = {}

    def feeds(self) -> int:
        """Backend watches open now (for tests and benchmarks)."""
        return len(self._feeds)

    async def subscribe(
        self,
        provider: InfrastructureProvider,
        namespace: str | None,
        visible: Callable[[str], bool] = lambda _: True,
    ) -> AsyncGenerator[DeploymentEvent, None]:
        """The shared watch of ``namespace`` (None: every one), as this caller sees it
        (``visible`` says which namespaces it may see)."""
        key = (provider.provider_alias, namespace)
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = _Feed()
            feed.task = asyncio.create_task(self._pump(key, feed, provider, namespace))
        subscriber = _Subscriber(visible)
        # The current state first (no await between copying it and joining the feed).
        for status in feed.current.values():
            subscriber.offer(DeploymentEvent(EventKind.ADDED, status))
        if feed.synced:
            subscriber.offer(DeploymentEvent(EventKind.SNAPSHOT_DONE))
        feed.subscribers.add(subscriber)
        try:
            while True:
                await subscriber.ready.wait()
                if subscriber.failed is not None:
                    raise subscriber.failed
                for event in subscriber.take():
                    yield event
        finally:
            feed.subscribers.discard(subscriber)
            if not feed.subscribers and self._feeds.get(key) is feed:
                del self._feeds[key]
                if feed.task is not None:
                    feed.task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await feed.task

    async def _pump(
        self,
        key: FeedKey,
        feed: _Feed,
        provider: InfrastructureProvider,
        namespace: str | None,
    ) -> None:
        source = provider.watch_deployments(namespace=namespace)
        try:
            async for event in source:
                feed.apply(event)
            raise RuntimeError(f"{provider.provider_alias}'s deployment watch ended")
        except Exception as error:  # handed to every subscriber: their streams end with it
            for subscriber in feed.subscribers:
                subscriber.failed = error
                subscriber.ready.set()
        finally:
            if self._feeds.get(key) is feed:
                del self._feeds[key]  # a failed feed is not reused
            await source.aclose()
