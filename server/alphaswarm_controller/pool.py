"""Provider instances by alias: created on first use, opened once, closed at shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from alphaswarm_core.providers.errors import InfrastructureProviderUnavailable
from alphaswarm_core.providers.protocol import InfrastructureProvider
from alphaswarm_core.providers.registry import Registry

from .errors import current_provider

log = logging.getLogger(__name__)


class ProviderPool:
    """One instance per alias for the life of the server."""

    def __init__(
        self,
        registry: Registry,
        default_alias: str,
        env: Mapping[str, str],
        instrument: Callable[[str, InfrastructureProvider], None] | None = None,
    ) -> None:
        self.registry = registry
        self._instrument = instrument
        """Called once with each new instance (observability wraps its methods)."""
        self.default_alias = default_alias
        self._env = env
        self._instances: dict[str, InfrastructureProvider] = {}
        self._lock = asyncio.Lock()

    def resolve(self, alias: str) -> str:
        return alias or self.default_alias

    async def get(self, alias: str) -> InfrastructureProvider:
        """The opened provider for ``alias`` (empty = default); records it for error details."""
        alias = self.resolve(alias)
        current_provider.set(alias)
        instance = self._instances.get(alias)
        if instance is not None:
            return instance
        cls = self.registry.get(alias)
        async with self._lock:
            instance = self._instances.get(alias)
            if instance is None:
                instance = self._create(cls, alias)
                if self._instrument is not None:
                    self._instrument(alias, instance)
                await instance.open()
                self._instances[alias] = instance
                log.info("provider %s opened", alias)
        return instance

    def _create(self, cls: type[InfrastructureProvider], alias: str) -> InfrastructureProvider:
        try:
            return cls(env=self._env)
        except InfrastructureProviderUnavailable:
            raise
        except (KeyError, ValueError) as exc:
            raise InfrastructureProviderUnavailable(
                f"provider {alias!r} is not configured: {exc}", reason="PROVIDER_MISCONFIGURED"
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
