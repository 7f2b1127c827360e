"""One backend metrics stream per (provider, namespace, service, interval), shared.

A thousand dashboards watching one service must cost the backend one poll per
interval, not a thousand. The first subscriber starts a pump over the
provider's ``stream_metrics``; every subscriber gets its own small queue; the
last one to leave cancels the pump, which closes the provider's stream and so
releases its backend resources. A newcomer gets the latest sample at once.
Each sample is transformed (for the servicer: into its response message) once
per feed, not once per subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from alphaswarm_core.providers.models import MetricSample
from alphaswarm_core.providers.protocol import InfrastructureProvider

FeedKey = tuple[str, str, str, float]
R = TypeVar("R")

#: Samples a slow subscriber may fall behind by before the oldest is dropped.
QUEUE_DEPTH = 8


class _End:
    """The provider's stream ended normally."""


class _Inbox:
    """One subscriber's items, at most QUEUE_DEPTH: metrics are latest-wins, so the
    oldest is dropped. Not an asyncio.Queue: that is three deques and an Event, about
    3 KiB, for each of thousands of idle streams; this is a list and, while its
    subscriber waits, one future."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: Any) -> None:
        if len(self._items) >= QUEUE_DEPTH:
            del self._items[0]
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


@dataclass(eq=False)
class _Feed:
    subscribers: set[_Inbox] = field(default_factory=set)
    latest: Any = None
    task: asyncio.Task[None] | None = None

    def publish(self, item: Any) -> None:
        for inbox in self.subscribers:
            inbox.put(item)


def _same(sample: MetricSample) -> Any:
    return sample


class MetricsFanout(Generic[R]):
    def __init__(self, transform: Callable[[MetricSample], R] = _same) -> None:
        self._feeds: dict[FeedKey, _Feed] = {}
        self._transform = transform

    def feeds(self) -> int:
        """Backend streams open now (for tests and benchmarks)."""
        return len(self._feeds)

    async def subscribe(
        self,
        provider: InfrastructureProvider,
        service_id: str,
        namespace: str,
        interval_seconds: float,
    ) -> AsyncGenerator[R, None]:
        key = (provider.provider_alias, namespace, service_id, interval_seconds)
        feed = self._feeds.get(key)
        if feed is None:
            # The stream raises (unsupported, not found) at its first anext, in the
            # pump, which hands the error to every subscriber of this feed.
            source = provider.stream_metrics(
                service_id, namespace=namespace, interval_seconds=interval_seconds
            )
            feed = self._feeds[key] = _Feed()
            feed.task = asyncio.create_task(self._pump(key, feed, source))
        inbox = _Inbox()
        if feed.latest is not None:
            inbox.put(feed.latest)
        feed.subscribers.add(inbox)
        try:
            while True:
                item = await inbox.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # a transformed sample
        finally:
            feed.subscribers.discard(inbox)
            if not feed.subscribers and self._feeds.get(key) is feed:
                del self._feeds[key]
                if feed.task is not None:
                    feed.task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await feed.task

    async def _pump(
        self, key: FeedKey, feed: _Feed, source: AsyncGenerator[MetricSample, None]
    ) -> None:
        try:
            async for sample in source:
                feed.latest = self._transform(sample)
                feed.publish(feed.latest)
            feed.publish(_End())
        except Exception as error:
            feed.publish(error)
        finally:
            if self._feeds.get(key) is feed:
                del self._feeds[key]  # a failed or ended feed is not reused
            await source.aclose()
