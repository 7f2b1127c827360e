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


@dataclass(eq=False)
class _Feed:
    subscribers: set[asyncio.Queue[Any]] = field(default_factory=set)
    latest: Any = None
    task: asyncio.Task[None] | None = None

    def publish(self, item: Any) -> None:
        for queue in self.subscribers:
            if queue.full():
                queue.get_nowait()  # metrics are latest-wins: drop the oldest
            queue.put_nowait(item)


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
        queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE_DEPTH)
        if feed.latest is not None:
            queue.put_nowait(feed.latest)
        feed.subscribers.add(queue)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # a transformed sample
        finally:
            feed.subscribers.discard(queue)
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
