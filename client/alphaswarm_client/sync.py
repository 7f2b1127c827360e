"""The client for code without an event loop (scripts, notebooks, WSGI apps).

``SyncAlphaswarmClient`` runs an :class:`~alphaswarm_client.client.AlphaswarmClient`
on an event loop of its own, in a daemon thread, and offers the same methods as
plain blocking calls (streams as plain iterators), so both have one
implementation: the same requests, retries, deadlines and typed errors::

    with SyncAlphaswarmClient("127.0.0.1:50051") as client:
        status = client.start_deployment(service_id="web", command=["sleep", "300"])
        for sample in client.stream_metrics("web", interval=1.0):
            ...

Leaving a ``for`` loop over a stream early cancels the call once the iterator is
closed (``close()`` on it, or garbage collection); use ``contextlib.closing`` to
make that immediate.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from alphaswarm_client.client import AlphaswarmClient

P = ParamSpec("P")
T = TypeVar("T")


def _blocking(
    method: Callable[Concatenate[AlphaswarmClient, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[SyncAlphaswarmClient, P], T]:
    def call(self: SyncAlphaswarmClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self.client, *args, **kwargs))

    call.__doc__ = method.__doc__
    call.__name__ = method.__name__
    return call


def _iterating(
    method: Callable[Concatenate[AlphaswarmClient, P], AsyncGenerator[T, None]],
) -> Callable[Concatenate[SyncAlphaswarmClient, P], Generator[T, None, None]]:
    def iterate(
        self: SyncAlphaswarmClient, /, *args: P.args, **kwargs: P.kwargs
    ) -> Generator[T, None, None]:
        stream = method(self.client, *args, **kwargs)
        try:
            while True:
                try:
                    yield self._run(anext(stream))
                except StopAsyncIteration:
                    return
        finally:
            self._run(stream.aclose())  # cancels the call on the server at once

    iterate.__doc__ = method.__doc__
    iterate.__name__ = method.__name__
    return iterate


class SyncAlphaswarmClient:
    """Blocking twin of :class:`AlphaswarmClient`; takes the same arguments."""

    def __init__(self, target: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="alphaswarm-client", daemon=True
        )
        self._thread.start()
        self.client = AlphaswarmClient(target, **options)

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(work, self._loop)
        return future.result()

    def close(self) -> None:
        """Close the channel and stop the client's loop; the client is unusable afterwards."""
        if self._loop.is_running():
            self._run(self.client.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> SyncAlphaswarmClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    list_providers = _blocking(AlphaswarmClient.list_providers)
    check_health = _blocking(AlphaswarmClient.check_health)
    start_deployment = _blocking(AlphaswarmClient.start_deployment)
    stop_deployment = _blocking(AlphaswarmClient.stop_deployment)
    scale_deployment = _blocking(AlphaswarmClient.scale_deployment)
    get_status = _blocking(AlphaswarmClient.get_status)
    list_deployments = _blocking(AlphaswarmClient.list_deployments)
    get_config = _blocking(AlphaswarmClient.get_config)
    apply_config = _blocking(AlphaswarmClient.apply_config)
    delete_deployment = _blocking(AlphaswarmClient.delete_deployment)
    list_revisions = _blocking(AlphaswarmClient.list_revisions)
    rollback_deployment = _blocking(AlphaswarmClient.rollback_deployment)
    plan_start = _blocking(AlphaswarmClient.plan_start)
    plan_scale = _blocking(AlphaswarmClient.plan_scale)
    plan_config = _blocking(AlphaswarmClient.plan_config)
    plan_rollback = _blocking(AlphaswarmClient.plan_rollback)
    iter_revisions = _iterating(AlphaswarmClient.iter_revisions)
    iter_deployments = _iterating(AlphaswarmClient.iter_deployments)
    stream_metrics = _iterating(AlphaswarmClient.stream_metrics)
    watch = _iterating(AlphaswarmClient.watch)
    stream_logs = _iterating(AlphaswarmClient.stream_logs)
    watch_deployments = _iterating(AlphaswarmClient.watch_deployments)
