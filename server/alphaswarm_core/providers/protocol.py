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
provider methods receive valid names, bounded sizes and a resolved namespace (a
plain ``str``; only ``list_deployments`` takes None, meaning every namespace).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import os
import re
from collections.abc import AsyncGenerator, Callable, Mapping
from datetime import timedelta
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
    RevisionConflict,
    RevisionNotFound,
    SettingInvalid,
)
from .models import (
    DEFAULT_NAMESPACE,
    ChangeRequest,
    Condition,
    ConfigMapPatch,
    Definition,
    DeploymentEvent,
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    EventKind,
    InstanceStatus,
    LogEntry,
    LogQuery,
    LogStreamKind,
    MetricSample,
    PortSpec,
    ProviderHealth,
    ProviderKind,
    Resources,
    Revision,
    Rollout,
    RolloutState,
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
    "ChangeRequest",
    "Condition",
    "ConfigMapPatch",
    "ConfigVersionConflict",
    "Definition",
    "DeploymentEvent",
    "DeploymentNotFoundError",
    "DeploymentSpec",
    "DeploymentState",
    "DeploymentStatus",
    "EventKind",
    "FieldViolation",
    "InfrastructureProvider",
    "InfrastructureProviderError",
    "InfrastructureProviderUnavailable",
    "InstanceStatus",
    "InvalidSpecError",
    "LogEntry",
    "LogQuery",
    "LogStreamKind",
    "MetricSample",
    "PortSpec",
    "ProviderHealth",
    "ProviderKind",
    "ProviderNotFoundError",
    "ResourceNotFoundError",
    "Resources",
    "Revision",
    "RevisionConflict",
    "RevisionNotFound",
    "Rollout",
    "RolloutState",
    "ServiceConfig",
    "SettingInvalid",
]

P = ParamSpec("P")
T = TypeVar("T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h)?")
_DURATION_UNITS = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours"}

#: Optional capabilities and the method whose override provides each.
OPTIONAL_CAPABILITIES: Mapping[str, str] = {
    "config": "apply_config",
    "metrics": "stream_metrics",
    "logs": "stream_logs",
    "delete": "delete",
    "revisions": "list_revisions",
    "native_watch": "watch",
}

WATCH_RETRY_MAX_SECONDS = 30.0
"""The longest wait between attempts of a polling watch whose backend keeps failing."""

log = logging.getLogger(__name__)


def status_key(status: DeploymentStatus) -> tuple[object, ...]:
    """What a watch compares to decide that a status changed (not the observation time)."""
    return (
        status.state,
        status.desired_replicas,
        status.ready_replicas,
        status.restarts,
        status.message,
        tuple((i.instance_id, i.state, i.ready, i.restarts) for i in status.instances),
    )


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
    * Streams (``stream_metrics``, ``watch``) are async generators: calling one does
      nothing, and every error, "unsupported" and "not found" alike, is raised by
      the first ``anext``. ``aclose()`` releases what they hold.
    """

    provider_kind: ClassVar[ProviderKind | str]
    provider_alias: ClassVar[str]

    def __init__(
        self, *, env: Mapping[str, str] | None = None, runner: BlockingRunner | None = None
    ) -> None:
        self.env: Mapping[str, str] = os.environ if env is None else env
        self._runner = runner

    # -- settings and plumbing --------------------------------------------------------------

    def setting_name(self, name: str) -> str:
        """The environment variable of one of this provider's settings."""
        return f"ALPHASWARM_{self.provider_alias.upper()}_{name.upper()}"

    def setting(self, name: str, default: str = "") -> str:
        """``ALPHASWARM_<ALIAS>_<NAME>`` from the environment this provider was given."""
        return self.env.get(self.setting_name(name), default)

    # Typed settings. Each raises ``SettingInvalid`` (FAILED_PRECONDITION, reason
    # SETTING_INVALID, naming the variable): a bad setting is the operator's to fix.

    def setting_required(self, name: str) -> str:
        value = self.setting(name).strip()
        if not value:
            raise SettingInvalid(self.setting_name(name), "must be set")
        return value

    def setting_bool(self, name: str, default: bool) -> bool:
        raw = self.setting(name).strip().lower()
        if not raw:
            return default
        if raw in _TRUE:
            return True
        if raw in _FALSE:
            return False
        raise SettingInvalid(self.setting_name(name), f"must be true or false, not {raw!r}")

    def setting_choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        raw = self.setting(name).strip().lower() or default
        if raw not in choices:
            raise SettingInvalid(
                self.setting_name(name), f"must be one of {', '.join(choices)}, not {raw!r}"
            )
        return raw

    def setting_int(
        self, name: str, default: int, *, minimum: int = 0, maximum: int = 2**31
    ) -> int:
        raw = self.setting(name).strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            value = minimum - 1
        if not minimum <= value <= maximum:
            raise SettingInvalid(
                self.setting_name(name),
                f"must be a whole number from {minimum} to {maximum}, not {raw!r}",
            )
        return value

    def setting_seconds(
        self, name: str, default: float, *, minimum: float = 0.0, maximum: float = 86400.0
    ) -> float:
        """A duration: seconds (``2.5``) or with a unit (``500ms``, ``30s``, ``5m``, ``1h``)."""
        raw = self.setting(name).strip()
        if not raw:
            return default
        match = _DURATION.fullmatch(raw)
        value = (
            timedelta(**{_DURATION_UNITS[match["unit"] or "s"]: float(match["n"])}).total_seconds()
            if match
            else -1.0
        )
        if not minimum <= value <= maximum:
            raise SettingInvalid(
                self.setting_name(name),
                f"must be a duration from {minimum:g} s to {maximum:g} s "
                f"(e.g. 30, 30s, 500ms, 5m), not {raw!r}",
            )
        return value

    async def run_blocking(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking SDK call on the bounded shared executor."""
        runner = self._runner or shared_runner()
        return await runner.run(fn, *args, **kwargs)

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
    async def stop(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        """Stop every replica; keep the definition."""

    @abc.abstractmethod
    async def scale(
        self, service_id: str, replicas: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        """Set the number of replicas."""

    @abc.abstractmethod
    async def status(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        """Observed state of one service."""

    @abc.abstractmethod
    async def list_deployments(self, *, namespace: str | None = None) -> list[DeploymentStatus]:
        """Every service of this provider (in one namespace, or all when None)."""

    # -- optional ---------------------------------------------------------------------------

    async def get_config(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> ServiceConfig:
        raise self._unsupported("config")

    async def apply_config(self, patch: ConfigMapPatch) -> ServiceConfig:
        """Apply ``patch`` and roll the replicas onto it; return the new config."""
        raise self._unsupported("config")

    async def stream_metrics(
        self,
        service_id: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        interval_seconds: float = 10.0,
    ) -> AsyncGenerator[MetricSample, None]:
        """One aggregated sample per interval until the caller closes the stream."""
        raise self._unsupported("metrics")
        yield  # an async generator, like every override: the error comes at first anext

    async def watch(
        self,
        service_id: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        interval_seconds: float = 2.0,
    ) -> AsyncGenerator[DeploymentStatus, None]:
        """Yield the current status, then each change. Default: poll ``status``.

        Backends with a native watch (Kubernetes) override this.
        """
        previous: tuple[object, ...] | None = None
        while True:
            current = await self.status(service_id, namespace=namespace)
            key = status_key(current)
            if key != previous:
                previous = key
                yield current
            await asyncio.sleep(interval_seconds)

    async def stream_logs(
        self, service_id: str, query: LogQuery, *, namespace: str = DEFAULT_NAMESPACE
    ) -> AsyncGenerator[LogEntry, None]:
        """The retained lines of the service's replicas (``query.tail`` per replica at
        most, filtered by ``query``), then with ``query.follow`` every new one, including
        those of replicas that appear later, until closed. Lines of one replica in order."""
        raise self._unsupported("logs")
        yield  # an async generator, like every override: the error comes at first anext

    async def delete(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE, allow_missing: bool = False
    ) -> bool:
        """Remove the replicas, the definition and the config: every backend resource this
        provider created for the service. False when it did not exist and ``allow_missing``;
        else an unknown service is ``DeploymentNotFoundError``."""
        raise self._unsupported("delete")

    # -- revisions (optional; capability "revisions") -------------------------------------
    #
    # A provider with revisions numbers every change of what a service runs (spec via
    # start, config via apply_config; not a scale) from 1 per service, keeps a bounded
    # history where it keeps the service's definition (the backend is the source of
    # truth, so controllers side by side agree), reports revision, observed_revision,
    # rollout and conditions in its statuses, honours ``current_change()`` in every
    # mutating method (expected_revision: check-and-set, REVISION_CONFLICT when stale;
    # change_cause: recorded with the revision made), and fails a rollout without
    # progress for the spec's progress_deadline (rolling back when auto_rollback).

    async def definition(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> Definition:
        """What the service is meant to run now (spec, config, revision), read from the
        backend; ``DeploymentNotFoundError`` for an unknown service. Plans are computed
        from it without changing anything."""
        raise self._unsupported("revisions")

    async def list_revisions(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> list[Revision]:
        """The service's revisions, newest first (a bounded history)."""
        raise self._unsupported("revisions")

    async def rollback(
        self, service_id: str, to_revision: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        """Converge onto revision ``to_revision``'s spec and config (0: the one before the
        current) as a new revision; ``RevisionNotFound`` when it is not in the history."""
        raise self._unsupported("revisions")

    async def watch_deployments(
        self, *, namespace: str | None = None, interval_seconds: float = 2.0
    ) -> AsyncGenerator[DeploymentEvent, None]:
        """Every deployment (of ``namespace``, or all when None) as ADDED, then
        SNAPSHOT_DONE, then each change. Default: poll ``list_deployments``; a failing
        backend is retried with capped backoff, the stream never ends because of it.

        Backends with a native watch (Kubernetes) override this. The server shares one
        of these per (provider, namespace) between all its callers.
        """
        known: dict[tuple[str, str], DeploymentStatus] = {}
        synced = False
        failures = 0
        while True:
            try:
                listed = await self.list_deployments(namespace=namespace)
            except InfrastructureProviderError as error:
                failures += 1
                wait = min(WATCH_RETRY_MAX_SECONDS, interval_seconds * 2**failures)
                log.warning(
                    "watching %s deployments failed (%s); retrying", self.provider_alias, error
                )
                await asyncio.sleep(wait)
                continue
            failures = 0
            current = {(s.namespace, s.service_id): s for s in listed}
            for key, status in current.items():
                before = known.get(key)
                if before is None:
                    yield DeploymentEvent(EventKind.ADDED, status)
                elif status_key(before) != status_key(status):
                    yield DeploymentEvent(EventKind.MODIFIED, status)
            for key in known.keys() - current.keys():
                yield DeploymentEvent(EventKind.DELETED, known[key])
            known = current
            if not synced:
                synced = True
                yield DeploymentEvent(EventKind.SNAPSHOT_DONE)
            await asyncio.sleep(interval_seconds)
