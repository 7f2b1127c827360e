"""The container-group operations the ACI provider makes, each one ARM request (or LRO).

Every call runs on the provider's bounded blocking runner, within the caller's
deadline (``remaining_timeout``), with SDK exceptions translated. Transient
answers (429, 5xx) are retried inside the SDK pipeline (``retry.py``); stop,
start, delete and tag updates refused with 409 while a group is still changing
are retried here (``retry_conflicts``). Creates return once ARM accepted the
PUT unless told to wait; deletes wait for their long-running operation, because
a group of the same name cannot be created while the old one is being deleted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from azure.core.polling import LROPoller
from azure.mgmt.containerinstance import models as aci
from azure.mgmt.containerinstance.operations import ContainerGroupsOperations

from alphaswarm_core.providers.concurrency import remaining_timeout
from alphaswarm_core.providers.protocol import (
    BackendRejectedError,
    BackendTimeoutError,
    InfrastructureProvider,
)

from .aci import TAG_STOPPED, Replica
from .clients import AzureAccess
from .errors import is_not_found
from .retry import retry_conflicts
from .status import running_state

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741


def timeouts(*, lro: bool = False) -> dict[str, Any]:
    """Per-request socket timeouts and, for plain requests, the retry policy's total budget
    (an LRO's keyword arguments also configure its poller, which takes no ``timeout``)."""
    remaining = remaining_timeout()
    options: dict[str, Any] = {"connection_timeout": remaining, "read_timeout": remaining}
    if not lro:
        options["timeout"] = remaining
    return options


def _wait(poller: LROPoller[Any], what: str) -> Any:
    result = poller.result(timeout=remaining_timeout())
    if not poller.done():
        raise BackendTimeoutError(f"Azure did not finish {what} within the deadline")
    return result


class AciGateway:
    def __init__(self, provider: InfrastructureProvider, access: AzureAccess) -> None:
        self._provider = provider
        self._access = access
        self._rg = access.settings.resource_group
        self._poll = access.settings.poll_interval
        self._limit = asyncio.Semaphore(access.settings.max_parallel)

    @property
    def _groups(self) -> ContainerGroupsOperations:
        return self._access.clients.aci.container_groups

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self._access.errors():
            return await self._provider.run_blocking(fn, *args, **kwargs)

    async def bounded(
        self, items: Iterable[I], action: Callable[[I], Awaitable[None]]
    ) -> list[tuple[I, BaseException | None]]:
        """Run ``action`` on every item, at most ``max_parallel`` at once; outcome per item."""

        async def one(item: I) -> tuple[I, BaseException | None]:
            async with self._limit:
                try:
                    await action(item)
                except Exception as error:
                    return item, error
                return item, None

        return list(await asyncio.gather(*(one(item) for item in items)))

    # -- reads ---------------------------------------------------------------------------------

    async def list_groups(self) -> list[aci.ContainerGroup]:
        """Every container group of the resource group: one listing, following nextLink."""
        ops = self._groups

        def read() -> list[aci.ContainerGroup]:
            return list(ops.list_by_resource_group(self._rg, **timeouts()))

        return await self.call(read)

    async def get(self, name: str) -> aci.ContainerGroup | None:
        ops = self._groups

        def read() -> aci.ContainerGroup | None:
            try:
                return ops.get(self._rg, name, **timeouts())
            except Exception as error:
                if is_not_found(error):
                    return None
                raise

        return await self.call(read)

    async def views(self, replicas: Sequence[Replica]) -> dict[str, aci.ContainerGroup | None]:
        found: dict[str, aci.ContainerGroup | None] = {}

        async def read(replica: Replica) -> None:
            found[replica.name] = await self.get(replica.name)

        for _, error in await self.bounded(replicas, read):
            if error is not None:
                raise error
        return found

    async def container_log(self, group: str, container: str, tail: int | None) -> str | None:
        """Containers - List Logs with timestamps: the last ``tail`` lines (all ACI keeps,
        up to 4 MB, when None), or None when the log does not exist (the container has
        not started yet, ContainerLogNotAvailable, or the group is gone)."""
        ops = self._access.clients.aci.containers

        def read() -> str | None:
            try:
                logs = ops.list_logs(
                    self._rg, group, container, tail=tail, timestamps=True, **timeouts()
                )
            except Exception as error:
                if is_not_found(error):
                    return None
                raise
            return logs.content or ""

        return await self.call(read)

    async def wait_running(self, name: str, timeout: float) -> None:  # noqa: ASYNC109
        """Poll the group (one GET per poll interval) until its containers run.

        A group whose provisioning failed or whose containers ended is
        BackendRejectedError naming the reason ACI gives; one still starting at
        ``timeout`` (seconds, capped by the caller's deadline) is BackendTimeoutError.
        """
        deadline = time.monotonic() + remaining_timeout(timeout)
        while True:
            group = await self.get(name)
            state, detail = running_state(group)
            if state == "running":
                return
            if state == "failed":
                raise BackendRejectedError(
                    f"container group {name} did not start: {detail}",
                    metadata={"container_group": name},
                )
            if time.monotonic() + self._poll >= deadline:
                raise BackendTimeoutError(
                    f"container group {name} was not running within {timeout:g} s ({detail}); "
                    "ALPHASWARM_AZURE_READY_TIMEOUT sets how long to wait",
                    metadata={"container_group": name},
                )
            await asyncio.sleep(self._poll)

    # -- writes --------------------------------------------------------------------------------

    async def create(self, name: str, group: aci.ContainerGroup, *, wait: bool = False) -> None:
        """PUT the group; with ``wait``, until ARM reports it provisioned."""
        ops = self._groups

        def put() -> None:
            poller = ops.begin_create_or_update(
                self._rg, name, group, polling=wait, **timeouts(lro=True)
            )
            if wait:
                _wait(poller, f"creating container group {name}")

        await self.call(put)

    async def delete(self, name: str) -> None:
        """Delete the group and wait until it is gone; one already gone is fine, a 409
        (the group still changing) is sent again like stop and start."""
        ops = self._groups

        def delete() -> None:
            try:
                poller = ops.begin_delete(self._rg, name, **timeouts(lro=True))
            except Exception as error:
                if is_not_found(error):
                    return
                raise
            _wait(poller, f"deleting container group {name}")

        async def attempt() -> None:
            await self.call(delete)

        await retry_conflicts(attempt, f"delete container group {name}")

    async def set_tags(self, replica: Replica, tags: dict[str, str]) -> None:
        ops = self._groups

        async def patch() -> None:
            await self.call(
                ops.update, self._rg, replica.name, aci.Resource(tags=tags), **timeouts()
            )

        await retry_conflicts(patch, f"update the tags of container group {replica.name}")

    async def stop(self, replica: Replica) -> None:
        """Mark the group stopped (the intent, first), then stop its containers."""
        if not replica.stopped:
            await self.set_tags(replica, {**replica.tags, TAG_STOPPED: "true"})
        ops = self._groups

        async def stop() -> None:
            await self.call(ops.stop, self._rg, replica.name, **timeouts())

        await retry_conflicts(stop, f"stop container group {replica.name}")

    async def start(self, replica: Replica) -> None:
        """Start a stopped group's containers (waiting for ACI's start operation), then
        clear the stopped mark: a start that fails leaves the group marked stopped."""
        ops = self._groups

        def start() -> None:
            poller = ops.begin_start(self._rg, replica.name, **timeouts(lro=True))
            _wait(poller, f"starting container group {replica.name}")

        async def attempt() -> None:
            await self.call(start)

        await retry_conflicts(attempt, f"start container group {replica.name}")
        tags = {k: v for k, v in replica.tags.items() if k != TAG_STOPPED}
        await self.set_tags(replica, tags)
