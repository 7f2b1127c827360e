"""The contract every infrastructure provider implements.

Provider authors import from here, as the runbook (docs/adding-a-provider.md)
writes it::

    from alphaswarm_core.providers.protocol import (
        InfrastructureProvider,
        InfrastructureProviderError,
        InfrastructureProviderUnavailable,
        ProviderKind,
    )

The gRPC service validates every request before it reaches a provider, so
provider methods receive valid names, bounded sizes and a resolved namespace.
"""

from __future__ import annotations

import abc
import asyncio
import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import ClassVar, ParamSpec, TypeVar

from .concurrency import BlockingRunner, shared_runner
from .errors import (
    BackendConflictError,
    BackendPermissionDenied,
    BackendQuotaExceeded,
    BackendRejectedError,
    BackendTimeoutError,
    BackendUnavailableError,
    CapabilityUnsupported,
    ConfigVersionConflict,
    DeploymentNotFoundError,
    FieldViolation,
    InfrastructureProviderError,
    InfrastructureProviderUnavailable,
    InvalidSpecError,
    ProviderNotFoundError,
    ResourceNotFoundError,
)
from .models import (
    DEFAULT_NAMESPACE,
    ConfigMapPatch,
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    InstanceStatus,
    MetricSample,
    PortSpec,
    ProviderHealth,
    ProviderKind,
    Resources,
    ServiceConfig,
)

__all__ = [
    "DEFAULT_NAMESPACE",
    "BackendConflictError",
    "BackendPermissionDenied",
    "BackendQuotaExceeded",
    "BackendRejectedError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "CapabilityUnsupported",
    "ConfigMapPatch",
    "ConfigVersionConflict",
    "DeploymentNotFoundError",
    "DeploymentSpec",
    "DeploymentState",
    "DeploymentStatus",
    "FieldViolation",
    "InfrastructureProvider",
    "InfrastructureProviderError",
    "InfrastructureProviderUnavailable",
    "InstanceStatus",
    "InvalidSpecError",
    "MetricSample",
    "PortSpec",
    "ProviderHealth",
    "ProviderKind",
    "ProviderNotFoundError",
    "ResourceNotFoundError",
    "Resources",
    "ServiceConfig",
]

P = ParamSpec("P")
T = TypeVar("T")

#: Optional capabilities and the method whose override provides each.
OPTIONAL_CAPABILITIES: Mapping[str, str] = {
    "config": "apply_config",
    "metrics": "stream_metrics",
    "native_watch": "watch",
}


class InfrastructureProvider(abc.ABC):
    """One backend behind ProviderService.

    Semantics every implementation keeps (the contract suite in
    ``tests/contract`` checks them against each backend):

    * ``start`` converges: creates what is missing, updates what differs, does
      nothing when the spec already holds.
    * ``stop`` of an unknown service raises ``DeploymentNotFoundError``; of a
      stopped one it succeeds. A stopped service keeps its definition and
      reports ``DeploymentState.STOPPED``.
    * ``scale`` to the current count is a no-op; scale to 0 keeps the definition.
    * ``apply_config`` with a stale ``expected_version`` raises
      ``ConfigVersionConflict`` and changes nothing.
    * ``stream_metrics`` yields until cancelled, marks samples it could not read
      (``ok=False``) instead of ending, and releases backend resources on cancel.
    """

    provider_kind: ClassVar[ProviderKind | str]
    provider_alias: ClassVar[str]

    def __init__(
        self, *, env: Mapping[str, str] | None = None, runner: BlockingRunner | None = None
    ) -> None:
        self.env: Mapping[str, str] = os.environ if env is None else env
        self._runner = runner

    # -- settings and plumbing --------------------------------------------------------------

    def setting(self, name: str, default: str = "") -> str:
        """``ALPHASWARM_<ALIAS>_<NAME>`` from the environment this provider was given."""
        key = f"ALPHASWARM_{self.provider_alias.upper()}_{name.upper()}"
        return self.env.get(key, default)

    async def run_blocking(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking SDK call on the bounded shared executor."""
        runner = self._runner or shared_runner()
        return await runner.run(fn, *args, **kwargs)

    @staticmethod
    def ns(namespace: str | None) -> str:
        return namespace or DEFAULT_NAMESPACE

    @classmethod
    def capabilities(cls) -> tuple[str, ...]:
        """Optional capabilities this class implements, derived from its overrides."""
        found = ["start", "stop", "scale", "status", "list"]
        for capability, method in OPTIONAL_CAPABILITIES.items():
            if getattr(cls, method) is not getattr(InfrastructureProvider, method):
                found.append(capability)
        return tuple(found)

    async def open(self) -> None:  # noqa: B027 - optional hook, empty by design
        """Connect or recover state when the server starts; default: nothing to do."""

    async def close(self) -> None:  # noqa: B027 - optional hook, empty by design
        """Release connections and background tasks on server shutdown."""

    def _check_credentials(self) -> None:  # noqa: B027 - optional hook, empty by design
        """Raise ``InfrastructureProviderUnavailable`` (reason CREDENTIALS_MISSING) naming
        what to set when no credential source is configured. ``health`` calls it first."""

    def _unsupported(self, capability: str, detail: str = "") -> CapabilityUnsupported:
        return CapabilityUnsupported(self.provider_alias, capability, detail)

    # -- required ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def health(self) -> ProviderHealth:
        """Probe credentials and connectivity; raise a descriptive error when they fail."""

    @abc.abstractmethod
    async def start(self, spec: DeploymentSpec) -> DeploymentStatus:
        """Converge the backend onto ``spec``."""

    @abc.abstractmethod
    async def stop(self, service_id: str, *, namespace: str | None = None) -> DeploymentStatus:
        """Stop every replica; keep the definition."""

    @abc.abstractmethod
    async def scale(
        self, service_id: str, replicas: int, *, namespace: str | None = None
    ) -> DeploymentStatus:
        """Set the number of replicas."""

    @abc.abstractmethod
    async def status(self, service_id: str, *, namespace: str | None = None) -> DeploymentStatus:
        """Observed state of one service."""

    @abc.abstractmethod
    async def list_deployments(self, *, namespace: str | None = None) -> list[DeploymentStatus]:
        """Every service of this provider (in one namespace, or all when None)."""

    # -- optional ---------------------------------------------------------------------------

    async def get_config(self, service_id: str, *, namespace: str | None = None) -> ServiceConfig:
        raise self._unsupported("config")

    async def apply_config(self, patch: ConfigMapPatch) -> ServiceConfig:
        """Apply ``patch`` and roll the replicas onto it; return the new config."""
        raise self._unsupported("config")

    def stream_metrics(
        self,
        service_id: str,
        *,
        namespace: str | None = None,
        interval_seconds: float = 10.0,
    ) -> AsyncIterator[MetricSample]:
        raise self._unsupported("metrics")

    async def watch(
        self,
        service_id: str,
        *,
        namespace: str | None = None,
        interval_seconds: float = 2.0,
    ) -> AsyncIterator[DeploymentStatus]:
        """Yield the current status, then each change. Default: poll ``status``.

        Backends with a native watch (Kubernetes) override this.
        """
        previous: tuple[object, ...] | None = None
        while True:
            current = await self.status(service_id, namespace=namespace)
            key = (
                current.state,
                current.desired_replicas,
                current.ready_replicas,
                current.restarts,
                current.message,
            )
            if key != previous:
                previous = key
                yield current
            await asyncio.sleep(interval_seconds)
