"""One change of a service at a time, within this process.

``ServiceLocks`` is a lock per service, made on first use and dropped once nobody holds
or waits for it. Every provider that serialises its own changes per service uses it
(local, docker_compose, Container Instances).

A provider whose backend has no compare-and-swap for what a change reads and writes
(Container Instances' groups and their tags) needs it most: otherwise two calls of one
controller that read the same state both write, and a roll can finish on the older of
two configs. Controllers sharing a backend are not serialised by this; the provider's
docs say what they may race.

``hold`` is not reentrant: a task it starts (a rollout step) waits for the change that
started it. The ``one_change_at_a_time`` decorator is: a mode's change may call its base
class's, which takes the same lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar, cast

from .models import DEFAULT_NAMESPACE, ConfigMapPatch, DeploymentSpec

Key = tuple[str, str]
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class ServiceLocks:
    def __init__(self) -> None:
        self._locks: dict[Key, asyncio.Lock] = {}
        self._users: dict[Key, int] = {}

    @contextlib.asynccontextmanager
    async def hold(self, namespace: str, service_id: str) -> AsyncIterator[None]:
        key = (namespace, service_id)
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with self._locks.setdefault(key, asyncio.Lock()):
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:  # no one holds or waits: the lock goes
                del self._users[key]
                self._locks.pop(key, None)

    def __len__(self) -> int:
        """Services with a lock held or awaited (for tests: none is kept after)."""
        return len(self._locks)


class HasServiceLocks(Protocol):
    service_locks: ServiceLocks


#: The (locks, service) pairs the decorated calls of this task hold.
_held: contextvars.ContextVar[frozenset[tuple[int, Key]]] = contextvars.ContextVar(
    "alphaswarm_service_locks_held", default=frozenset()
)


def _service_of(first: object, kwargs: dict[str, Any]) -> Key:
    if isinstance(first, DeploymentSpec | ConfigMapPatch):
        return first.namespace, first.service_id
    if isinstance(first, str):
        return str(kwargs.get("namespace", DEFAULT_NAMESPACE)), first
    raise TypeError(f"cannot tell the service of {type(first).__name__}")  # pragma: no cover


def one_change_at_a_time(method: F) -> F:
    """Run a provider method (its first argument a spec, a patch or a service id, with
    ``namespace=``) holding its service's lock in ``self.service_locks``; a call made
    while holding it (a subclass's change calling its base's) runs without waiting."""

    @functools.wraps(method)
    async def held(self: HasServiceLocks, first: object, *args: Any, **kwargs: Any) -> Any:
        key = _service_of(first, kwargs)
        mark, holding = (id(self.service_locks), key), _held.get()
        if mark in holding:
            return await method(self, first, *args, **kwargs)
        async with self.service_locks.hold(*key):
            token = _held.set(holding | {mark})
            try:
                return await method(self, first, *args, **kwargs)
            finally:
                _held.reset(token)

    return cast(F, held)
