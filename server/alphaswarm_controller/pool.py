"""Provider instances by alias: created on first use, opened once, closed at shutdown.

Loading a provider imports its module and SDK, which can take seconds for some clouds'
SDKs: that runs on the bounded blocking pool, never on the event loop, so health probes
(1 s deadlines) and every other call keep being answered while a provider loads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from alphaswarm_core.providers.concurrency import shared_runner
from alphaswarm_core.providers.errors import InfrastructureProviderUnavailable, SettingInvalid
from alphaswarm_core.providers.protocol import InfrastructureProvider
from alphaswarm_core.providers.registry import ProviderDescription, Registry

log = logging.getLogger(__name__)


class ProviderPool:
    """One instance per alias for the life of the server."""

    def __init__(
        self,
        registry: Registry,
        default_alias: str,
        env: Mapping[str, str],
        instrument: Callable[[str, InfrastructureProvider], None] | None = None,
        prepare: Callable[[], object] | None = None,
    ) -> None:
        self.registry = registry
        self._prepare = prepare
        """Run once, off the loop, before the registry is first consulted (reading the
        installed distributions' entry points: not on the way to serving)."""
        self._prepared: asyncio.Future[object] | None = None
        self._instrument = instrument
        """Called once with each new instance (observability wraps its methods)."""
        self.default_alias = default_alias
        self._env = env
        self._instances: dict[str, InfrastructureProvider] = {}
        self._lock = asyncio.Lock()

    async def get(self, alias: str) -> InfrastructureProvider:
        """The opened provider for ``alias`` (a resolved alias: the call context's)."""
        instance = self._instances.get(alias)
        if instance is not None:
            return instance
        await self._ready()
        cls = await shared_runner().run(self.registry.get, alias, self._env)
        async with self._lock:
            instance = self._instances.get(alias)
            if instance is None:
                instance = self._create(cls, alias)
                if self._instrument is not None:
                    self._instrument(alias, instance)
                await self._open(alias, instance)
                self._instances[alias] = instance
                log.info("provider %s opened", alias)
        return instance

    @staticmethod
    async def _open(alias: str, instance: InfrastructureProvider) -> None:
        """Open ``instance`` or raise why not. A provider that did not open is not kept
        (nor said to be open): the caller gets the error and the next call tries again."""
        try:
            await instance.open()
        except BaseException:
            try:
                await instance.close()  # what a partial open holds (locks, connections)
            except Exception:
                log.exception("closing provider %s after a failed open failed", alias)
            raise

    async def _ready(self) -> None:
        if self._prepare is None:
            return
        if self._prepared is None:
            self._prepared = asyncio.ensure_future(shared_runner().run(self._prepare))
        await asyncio.shield(self._prepared)  # one caller leaving cancels no one's

    async def describe_all(self) -> list[ProviderDescription]:
        """Every alias as ListProviders shows it (loads provider modules off the loop)."""
        await self._ready()

        def describe() -> list[ProviderDescription]:
            return [
                self.registry.describe(alias, self._env, default=self.default_alias)
                for alias in self.registry.aliases()
            ]

        return await shared_runner().run(describe)

    def _create(self, cls: type[InfrastructureProvider], alias: str) -> InfrastructureProvider:
        try:
            return cls(env=self._env)
        except InfrastructureProviderUnavailable:
            raise
        except (KeyError, ValueError) as exc:
            raise SettingInvalid(
                f"the settings of provider {alias!r}", f"are invalid: {exc}"
            ) from exc

    def opened(self) -> dict[str, InfrastructureProvider]:
        return dict(self._instances)

    async def close(self) -> None:
        for alias, instance in list(self._instances.items()):
            try:
                await instance.close()
            except Exception:
                log.exception("closing provider %s failed", alias)
        self._instances.clear()
