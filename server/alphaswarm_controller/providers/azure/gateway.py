"""The container-group operations the provider makes, each one ARM request (or LRO).

Every call runs on the provider's bounded blocking runner, within the caller's
deadline (``remaining_timeout``), with SDK exceptions translated. Creates return
once ARM accepts the PUT (ACI keeps provisioning and ``status`` shows it);
deletes wait for their long-running operation, because a group of the same name
cannot be created while the old one is still being deleted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from azure.core.polling import LROPoller
from azure.mgmt.containerinstance import models as aci

from alphaswarm_core.providers.concurrency import remaining_timeout
from alphaswarm_core.providers.protocol import BackendTimeoutError, InfrastructureProvider

from .aci import TAG_STOPPED, Replica
from .clients import AzureClients, AzureSettings
from .errors import azure_errors, is_not_found

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741


def timeouts() -> dict[str, Any]:
    remaining = remaining_timeout()
    return {"connection_timeout": remaining, "read_timeout": remaining}


def _wait(poller: LROPoller[Any], what: str) -> Any:
    result = poller.result(timeout=remaining_timeout())
    if not poller.done():
        raise BackendTimeoutError(f"Azure did not finish {what} within the deadline")
    return result


class AciGateway:
    def __init__(
        self, provider: InfrastructureProvider, clients: AzureClients, settings: AzureSettings
    ) -> None:
        self._provider = provider
        self._clients = clients
        self._rg = settings.resource_group
        self._limit = asyncio.Semaphore(settings.max_parallel)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with azure_errors(alias=self._provider.provider_alias, resource_group=self._rg):
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
        ops = self._clients.aci.container_groups

        def read() -> list[aci.ContainerGroup]:
            return list(ops.list_by_resource_group(self._rg, **timeouts()))

        return await self.call(read)

    async def get(self, name: str) -> aci.ContainerGroup | None:
        ops = self._clients.aci.container_groups

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

    # -- writes --------------------------------------------------------------------------------

    async def create(self, name: str, group: aci.ContainerGroup, *, wait: bool = False) -> None:
        ops = self._clients.aci.container_groups

        def put() -> None:
            poller = ops.begin_create_or_update(self._rg, name, group, polling=wait, **timeouts())
            if wait:
                _wait(poller, f"creating container group {name}")

        await self.call(put)

    async def delete(self, name: str) -> None:
        ops = self._clients.aci.container_groups

        def delete() -> None:
            try:
                poller = ops.begin_delete(self._rg, name, **timeouts())
            except Exception as error:
                if is_not_found(error):
                    return
                raise
            _wait(poller, f"deleting container group {name}")

        await self.call(delete)

    async def set_tags(self, replica: Replica, tags: dict[str, str]) -> None:
        ops = self._clients.aci.container_groups
        await self.call(ops.update, self._rg, replica.name, aci.Resource(tags=tags), **timeouts())

    async def stop(self, replica: Replica) -> None:
        """Mark the group stopped (the intent, first), then stop its containers."""
        if not replica.stopped:
            await self.set_tags(replica, {**replica.tags, TAG_STOPPED: "true"})
        ops = self._clients.aci.container_groups
        await self.call(ops.stop, self._rg, replica.name, **timeouts())

    async def start(self, replica: Replica) -> None:
        """Start a stopped group's containers, then clear the stopped mark."""
        ops = self._clients.aci.container_groups
        await self.call(ops.begin_start, self._rg, replica.name, polling=False, **timeouts())
        tags = {k: v for k, v in replica.tags.items() if k != TAG_STOPPED}
        await self.set_tags(replica, tags)
