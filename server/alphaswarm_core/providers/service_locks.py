"""One change of a service at a time, within this process.

A provider whose backend has no compare-and-swap for what a change reads and writes
(Container Instances' groups and their tags) serialises its own changes per service
with ``ServiceLocks``: otherwise two calls of one controller that read the same state
both write, and a roll can finish on the older of two configs. Controllers sharing a
backend are not serialised by this; the provider's docs say what they may race.

The lock is reentrant within a task and the tasks it starts while holding it (a
mode's change may call its base class's, which takes the same lock).
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
        self._held: contextvars.ContextVar[frozenset[Key]] = contextvars.ContextVar(
            f"alphaswarm-service-locks-{id(self)}", default=frozenset()
        )

    @contextlib.asynccontextmanager
    async def hold(self, namespace: str, service_id: str) -> AsyncIterator[None]:
        key = (namespace, service_id)
        held = self._held.get()
        if key in held:
            yield
            return
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with self._locks.setdefault(key, asyncio.Lock()):
                token = self._held.set(held | {key})
                try:
                    yield
                finally:
                    self._held.reset(token)
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


def _service_of(first: object, kwargs: dict[str, Any]) -> Key:
    if isinstance(first, DeploymentSpec | ConfigMapPatch):
        return first.namespace, first.service_id
    if isinstance(first, str):
        return str(kwargs.get("namespace", DEFAULT_NAMESPACE)), first
    raise TypeError(f"cannot tell the service of {type(first).__name__}")  # pragma: no cover


def one_change_at_a_time(method: F) -> F:
    """Run a provider method (its first argument a spec, a patch or a service id, with
    ``namespace=``) holding its service's lock in ``self.service_locks``."""

    @functools.wraps(method)
    async def held(self: HasServiceLocks, first: object, *args: Any, **kwargs: Any) -> Any:
        async with self.service_locks.hold(*_service_of(first, kwargs)):
            return await method(self, first, *args, **kwargs)

    return cast(F, held)
