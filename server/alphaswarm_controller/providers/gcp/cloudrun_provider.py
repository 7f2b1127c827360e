"""``CloudRunProvider``: the ``gcp`` alias in its default mode (ALPHASWARM_GCP_MODE=cloudrun).

A service is a Cloud Run v2 Service in ALPHASWARM_GCP_PROJECT (else the credentials'
project) and ALPHASWARM_GCP_REGION (translation in ``cloudrun``, limits in ``limits``),
its config a Secret Manager secret (``config``) referenced from the service's env, its
metrics Cloud Monitoring time series (``metrics``), its logs Cloud Logging entries
(``logs``). Every long-running operation is
awaited within the caller's deadline, polling every ALPHASWARM_GCP_POLL_INTERVAL seconds
(growing x1.5 up to 10 s); every request goes through one bounded retry policy (``retry``).

``stop`` scales the service to zero instances (manual scaling) instead of deleting it:
the contract requires a stopped service to stay known (status STOPPED, a second stop
succeeds, ``start`` brings it back with its config), which a deleted Cloud Run service
cannot be. A zero-instance service costs nothing to keep.

``delete`` removes the Cloud Run service (its revisions go with it) and then its config
secret: the only two resources the provider creates for a service. A delete interrupted
between the two leaves a secret without a service; the next delete (the service is
NOT_FOUND then) still removes that secret before reporting NOT_FOUND (or False with
``allow_missing``). Both deletes carry the etag they were read with: a concurrent change
makes the provider read again, a bounded number of times. Logs stay in Cloud Logging for
the retention of the bucket they were routed to.

A failed create deletes the half-created service before reporting the failure. A failed
update leaves Cloud Run serving the previous ready revision: the change was made, its
rollout FAILED, which ``status`` reports (DEGRADED, the rollout's reason and Cloud Run's
message) rather than the call raising. An update is sent with the etag of the service it
was computed from; when another writer got there first (ABORTED) the provider reads
again and converges from what it finds, a bounded number of times.

Revisions (capability ``revisions``): every change of what runs is a Cloud Run revision
numbered by the controller in the template's annotations (``revisions``), read back
from Cloud Run (``history``, ``views``); rollouts are judged from Cloud Run's conditions
(``rollout``). ``expected_revision`` is checked against the service as read, and the
update carries that read's etag: check-and-set. A failed rollout of a spec with
``auto_rollback`` is rolled back when a status read sees it (the controller keeps no
loop of its own), to the revision that serves, as a new automatic revision.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar

from google.api_core import exceptions as gexc
from google.cloud import run_v2

from alphaswarm_core.call import current_change
from alphaswarm_core.providers.cadence import Cadence
from alphaswarm_core.providers.concurrency import BlockingRunner, remaining_timeout
from alphaswarm_core.providers.protocol import (
    DEFAULT_NAMESPACE,
    BackendConflictError,
    BackendRejectedError,
    BackendTimeoutError,
    ConfigMapPatch,
    ConfigVersionConflict,
    Definition,
    DeploymentNotFoundError,
    DeploymentSpec,
    DeploymentStatus,
    InfrastructureProvider,
    InfrastructureProviderError,
    LogEntry,
    LogQuery,
    MetricSample,
    ProviderHealth,
    ProviderKind,
    Revision,
    RevisionConflict,
    RevisionNotFound,
    RolloutState,
    ServiceConfig,
)

from . import cloudrun, retry
from .clients import GcpClients, load_credentials
from .config import SecretConfigStore
from .errors import api_errors, credentials_missing
from .history import RevisionReader
from .logs import CloudRunLogs
from .metrics import CloudRunMetrics
from .revisions import RevisionFacts, facts_of, number_of
from .settings import GcpSettings
from .views import ServiceViews

log = logging.getLogger(__name__)

#: Reads and re-converges after a concurrent writer changed the service (etag ABORTED).
MAX_CONVERGE_ATTEMPTS = 3
MAX_CONFIG_WRITE_ATTEMPTS = 3
MAX_POLL_DELAY = 10.0


class CloudRunProvider(InfrastructureProvider):
    """Services as Cloud Run v2 Services; config in Secret Manager; metrics from Monitoring."""

    provider_kind: ClassVar[ProviderKind | str] = ProviderKind.GCP
    provider_alias: ClassVar[str] = "gcp"

    def __init__(
        self, *, env: Mapping[str, str] | None = None, runner: BlockingRunner | None = None
    ) -> None:
        super().__init__(env=env, runner=runner)
        self.settings = GcpSettings.load(self)
        self._clients: GcpClients | None = None
        self._project = ""
        self._connect_lock = asyncio.Lock()
        self._views: ServiceViews | None = None

    # -- plumbing ---------------------------------------------------------------------------

    def _check_credentials(self) -> None:
        self.settings.validate()
        path = self.env.get("GOOGLE_APPLICATION_CREDENTIALS", "")
        if path and not os.path.isfile(path):
            raise credentials_missing("GOOGLE_APPLICATION_CREDENTIALS names no readable file")

    async def _connect(self) -> GcpClients:
        """Load credentials once (blocking: files, maybe the metadata server) and make clients."""
        if self._clients is not None:
            return self._clients
        async with self._connect_lock:
            if self._clients is None:
                self.settings.validate()
                credentials, project = await self.run_blocking(
                    load_credentials, self.env, self.settings
                )
                self._project = project
                self._clients = GcpClients(self.settings, credentials)
        return self._clients

    async def _read(self) -> ServiceViews:
        """The reads of services and revisions (made once, after connecting)."""
        clients = await self._connect()
        if self._views is None:
            reader = RevisionReader(clients.revisions, self.settings.revision_history)
            self._views = ServiceViews(reader, self._store, self.provider_alias)
        return self._views

    @property
    def _parent(self) -> str:
        return f"projects/{self._project}/locations/{self.settings.region}"

    def _name(self, namespace: str, service_id: str) -> str:
        return f"{self._parent}/services/{cloudrun.cloud_run_name(namespace, service_id)}"

    async def _await_operation(self, operation: Any) -> run_v2.Service:
        """Poll a long-running operation until done, within the caller's deadline."""
        delay = self.settings.poll_interval
        with api_errors("run"):
            async with asyncio.timeout(remaining_timeout(self.settings.operation_timeout)):
                while not await operation.done(retry=retry.policy()):
                    await asyncio.sleep(delay)
                    delay = min(delay * 1.5, MAX_POLL_DELAY)
                result: run_v2.Service = await operation.result()
        return result

    async def _await_rollout(self, operation: Any, deadline_seconds: float) -> None:
        """Await the operation of an update that made a revision, until it ends or the
        spec's progress deadline passes. A revision that failed (Cloud Run ends the
        operation with its error and keeps the previous one serving) and a deadline that
        passed are the rollout's outcome, for ``status`` to report, not the call's error;
        the caller's deadline passing first is BACKEND_TIMEOUT, as for any operation."""
        call = remaining_timeout(self.settings.operation_timeout)
        try:
            if deadline_seconds < call:
                async with asyncio.timeout(deadline_seconds):
                    await self._await_operation(operation)
            else:
                await self._await_operation(operation)
        except TimeoutError:
            log.info("a Cloud Run revision was not ready within %gs", deadline_seconds)
        except BackendRejectedError as exc:
            log.info("a Cloud Run revision failed: %s", exc.message)

    async def _find(self, namespace: str, service_id: str) -> run_v2.Service | None:
        clients = await self._connect()
        with api_errors("run"):
            try:
                service = await clients.run().get_service(
                    name=self._name(namespace, service_id),
                    retry=retry.policy(),
                    timeout=remaining_timeout(),
                )
            except gexc.NotFound:
                return None
        return service if cloudrun.owner(service) == (namespace, service_id) else None

    async def _get(self, namespace: str, service_id: str) -> run_v2.Service:
        service = await self._find(namespace, service_id)
        if service is None:
            raise DeploymentNotFoundError(service_id, namespace)
        return service

    async def _update(
        self, before: run_v2.Service, service: run_v2.Service, *, wait: bool = True
    ) -> run_v2.Service:
        """Send ``service`` (carrying the etag ``before`` was read with) and await it
        (``wait`` False: only its acceptance). An update that made a revision ends with
        the service as it is then, whatever the rollout's outcome (``_await_rollout``).
        One that made none (a scale, say) while the newest revision is a failed one fails
        as that revision did (Cloud Run keeps reconciling towards it): that too is the
        rollout's outcome, not the call's error."""
        clients = await self._connect()
        namespace, service_id = cloudrun.owner(service) or ("", "")
        with api_errors("run"):
            operation = await clients.run().update_service(
                service=service, retry=retry.policy(), timeout=remaining_timeout()
            )
        if not wait:
            return await self._get(namespace, service_id)
        if number_of(service.template) != number_of(before.template):
            deadline = (await self._read()).spec(service).progress_deadline_seconds
            await self._await_rollout(operation, deadline)
            return await self._get(namespace, service_id)
        try:
            return await self._await_operation(operation)
        except BackendRejectedError:
            after = await self._find(namespace, service_id)
            if after is None or after.latest_created_revision == after.latest_ready_revision:
                raise
            return after

    async def _converge_with(
        self,
        namespace: str,
        service_id: str,
        change: Callable[[run_v2.Service], run_v2.Service | None],
        first: run_v2.Service | None = None,
        *,
        wait: bool = True,
    ) -> DeploymentStatus:
        """Read, apply ``change`` (None: nothing to do), update with the read etag; on a
        concurrent change (ABORTED) read again and retry, at most MAX_CONVERGE_ATTEMPTS.
        ``change`` checks the caller's ``expected_revision`` against each read, so with
        the etag the check and the change are one compare-and-swap."""
        service = first
        for attempt in range(1, MAX_CONVERGE_ATTEMPTS + 1):
            if service is None:
                service = await self._get(namespace, service_id)
            updated = change(service)
            if updated is None:
                return await self._status(service)
            try:
                return await self._status(await self._update(service, updated, wait=wait))
            except BackendConflictError:
                if attempt == MAX_CONVERGE_ATTEMPTS:
                    raise
                log.info(
                    "Cloud Run service %s/%s changed under us; reading it again",
                    namespace,
                    service_id,
                )
                service = None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _status(self, service: run_v2.Service) -> DeploymentStatus:
        return await (await self._read()).status(service)

    # -- lifecycle --------------------------------------------------------------------------

    async def close(self) -> None:
        if self._clients is not None:
            await self._clients.close()
            self._clients = None
            self._views = None

    async def health(self) -> ProviderHealth:
        self._check_credentials()
        clients = await self._connect()
        details = {
            "project": self._project,
            "mode": "cloudrun",
            "region": self.settings.region,
            "service_account": self.settings.service_account or "(the project's default)",
        }
        if self.settings.endpoints:
            details["endpoints"] = ",".join(f"{k}={v}" for k, v in self.settings.endpoints.items())
        with api_errors("run"):
            pager = await clients.run().list_services(
                request=run_v2.ListServicesRequest(parent=self._parent, page_size=1),
                retry=retry.policy(),
                timeout=remaining_timeout(),
            )
            async for _ in pager:
                break
        return ProviderHealth(
            alias=self.provider_alias,
            kind=ProviderKind.GCP.value,
            healthy=True,
            message=f"Cloud Run in {self._parent} reachable",
            details=details,
        )

    # -- required ---------------------------------------------------------------------------

    async def start(self, spec: DeploymentSpec) -> DeploymentStatus:
        spec.validate()
        cloudrun.validate_spec(spec)
        self.settings.validate()
        clients = await self._connect()
        change = current_change()
        existing = await self._find(spec.namespace, spec.service_id)
        if existing is not None:
            return await self._converge(existing, spec)
        RevisionConflict.check(spec.service_id, spec.namespace, change.expected_revision, 0)
        short = cloudrun.cloud_run_name(spec.namespace, spec.service_id)
        facts = RevisionFacts(1, change.change_cause)
        with api_errors("run"):
            try:
                operation = await clients.run().create_service(
                    parent=self._parent,
                    service=cloudrun.build_service(spec, self.settings.service_account, facts),
                    service_id=short,
                    retry=retry.policy(),
                    timeout=remaining_timeout(),
                )
            except gexc.AlreadyExists as exc:
                # A concurrent start (or a retried create that had gone through) created it
                # first: converge onto that one.
                raced = await self._find(spec.namespace, spec.service_id)
                if raced is None:
                    raise BackendConflictError(
                        f"Cloud Run service {short} exists but is not managed by alphaswarm"
                    ) from exc
                return await self._converge(raced, spec)
        try:
            created = await self._await_operation(operation)
        except BackendTimeoutError:
            raise  # still in progress: a retried start converges on whatever it became
        except InfrastructureProviderError:
            await self._remove_failed(self._name(spec.namespace, spec.service_id))
            raise
        return await self._status(created)

    async def _converge(self, existing: run_v2.Service, spec: DeploymentSpec) -> DeploymentStatus:
        account = self.settings.service_account
        change = current_change()

        def converge(service: run_v2.Service) -> run_v2.Service | None:
            _check(service, change.expected_revision)
            return cloudrun.converge(service, spec, account, cause=change.change_cause)

        return await self._converge_with(spec.namespace, spec.service_id, converge, existing)

    async def _remove_failed(self, name: str) -> None:
        """Delete a service whose creation failed, so no half-created service is left."""
        clients = await self._connect()
        try:
            with api_errors("run"):
                operation = await clients.run().delete_service(
                    name=name, retry=retry.policy(), timeout=remaining_timeout()
                )
            await self._await_operation(operation)
        except InfrastructureProviderError as exc:
            if not isinstance(exc.__cause__, gexc.NotFound):
                log.warning("could not delete failed Cloud Run service %s: %s", name, exc)

    async def stop(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        return await self.scale(service_id, 0, namespace=namespace)

    async def scale(
        self, service_id: str, replicas: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        expected = current_change().expected_revision

        def change(service: run_v2.Service) -> run_v2.Service | None:
            _check(service, expected)
            if cloudrun.instance_count(service) == replicas:
                return None
            updated = run_v2.Service(service)
            cloudrun.set_instance_count(updated, replicas)
            return updated

        return await self._converge_with(namespace, service_id, change)

    async def status(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        service = await self._get(namespace, service_id)
        status = await self._status(service)
        if await self._rolled_back(service, status):
            status = await self._status(await self._get(namespace, service_id))
        return status

    async def list_deployments(self, *, namespace: str | None = None) -> list[DeploymentStatus]:
        clients = await self._connect()
        found = []
        with api_errors("run"):
            pager = await clients.run().list_services(
                request=run_v2.ListServicesRequest(parent=self._parent, page_size=100),
                retry=retry.policy(),
                timeout=remaining_timeout(),
            )
            async for service in pager:
                ids = cloudrun.owner(service)
                if ids is not None and (namespace is None or ids[0] == namespace):
                    found.append(await self._status(service))
        return found

    async def delete(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE, allow_missing: bool = False
    ) -> bool:
        short = cloudrun.cloud_run_name(namespace, service_id)
        expected = current_change().expected_revision
        found = False
        for attempt in range(1, MAX_CONVERGE_ATTEMPTS + 1):
            service = await self._find(namespace, service_id)
            if service is None:
                RevisionConflict.check(service_id, namespace, expected, 0)
                break
            _check(service, expected)  # the delete carries this read's etag
            found = True
            try:
                await self._delete_service(service)
                break
            except BackendConflictError:
                if attempt == MAX_CONVERGE_ATTEMPTS:
                    raise
                log.info(
                    "Cloud Run service %s changed while being deleted; reading it again", short
                )
        await (await self._store()).delete(short, namespace, service_id)
        if not found and not allow_missing:
            raise DeploymentNotFoundError(service_id, namespace)
        return found

    async def _delete_service(self, service: run_v2.Service) -> None:
        clients = await self._connect()
        with api_errors("run"):
            try:
                operation = await clients.run().delete_service(
                    request=run_v2.DeleteServiceRequest(name=service.name, etag=service.etag),
                    retry=retry.policy(),
                    timeout=remaining_timeout(),
                )
            except gexc.NotFound:
                return  # deleted meanwhile (by a concurrent delete): the outcome holds
        await self._await_operation(operation)

    # -- config -----------------------------------------------------------------------------

    async def _store(self) -> SecretConfigStore:
        clients = await self._connect()
        return SecretConfigStore(clients.secrets(), self._project)

    async def get_config(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> ServiceConfig:
        service = await self._get(namespace, service_id)
        stored = await (await self._store()).read(service.name.rsplit("/", 1)[1])
        return ServiceConfig(service_id, namespace, stored.data, stored.version)

    async def apply_config(self, patch: ConfigMapPatch) -> ServiceConfig:
        patch.validate()
        views = await self._read()
        service = await self._get(patch.namespace, patch.service_id)
        change = current_change()
        _check(service, change.expected_revision)  # before anything is written
        short = service.name.rsplit("/", 1)[1]
        store = await self._store()
        data, version = await self._write_config(store, short, patch)
        ref = cloudrun.make_config_ref(store.secret_name(short), version)
        account = self.settings.service_account

        def pin(existing: run_v2.Service) -> run_v2.Service | None:
            # Pinning the version (not "latest") changes the template: Cloud Run rolls a
            # revision, and a replica always runs the config version it was started with.
            _check(existing, change.expected_revision)
            if cloudrun.config_ref(existing) == ref or cloudrun.pins_newer(existing, ref):
                return None
            spec = views.spec(existing)
            return cloudrun.converge(existing, spec, account, cause=change.change_cause, ref=ref)

        await self._converge_with(patch.namespace, patch.service_id, pin, service)
        return ServiceConfig(patch.service_id, patch.namespace, data, version)

    @staticmethod
    async def _write_config(
        store: SecretConfigStore, short: str, patch: ConfigMapPatch
    ) -> tuple[dict[str, str], str]:
        """The patched config and its version, written. With ``expected_version`` a lost
        race is ConfigVersionConflict; without, the patch is read and merged again (as on
        kubernetes and aws), MAX_CONFIG_WRITE_ATTEMPTS times in all."""
        for attempt in range(1, MAX_CONFIG_WRITE_ATTEMPTS + 1):
            current = await store.read(short)
            if patch.expected_version and patch.expected_version != current.version:
                raise ConfigVersionConflict(
                    patch.service_id,
                    patch.namespace,
                    expected=patch.expected_version,
                    actual=current.version,
                )
            data = patch.applied_to(current.data)
            try:
                version = await store.write(short, patch.namespace, patch.service_id, current, data)
            except ConfigVersionConflict:
                if patch.expected_version:
                    raise
                log.info("config of %s changed under us (attempt %d)", short, attempt)
                continue
            return data, version
        raise BackendConflictError(
            f"the config of {patch.namespace}/{patch.service_id} kept changing concurrently; retry"
        )

    # -- revisions --------------------------------------------------------------------------

    async def definition(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> Definition:
        views = await self._read()
        return await views.definition(await self._get(namespace, service_id))

    async def list_revisions(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> list[Revision]:
        views = await self._read()
        return await views.revisions(await self._get(namespace, service_id))

    async def rollback(
        self, service_id: str, to_revision: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        views = await self._read()
        service = await self._get(namespace, service_id)
        change = current_change()
        _check(service, change.expected_revision)
        current = number_of(service.template)
        history = await views.revisions(service)
        if to_revision == 0:
            older = [r for r in history if r.number < current]
            if not older:
                raise RevisionNotFound(service_id, namespace, 0)
            target = older[0]
        else:
            found = [r for r in history if r.number == to_revision]
            if not found:
                raise RevisionNotFound(service_id, namespace, to_revision)
            target = found[0]
        facts = RevisionFacts(0, change.change_cause, target.number)
        return await self._restore(service, target, facts, expected=change.expected_revision)

    async def _restore(
        self,
        service: run_v2.Service,
        target: Revision,
        facts: RevisionFacts,
        *,
        expected: int,
        wait: bool = True,
    ) -> DeploymentStatus:
        """A new revision running ``target``'s spec (at the current replica count and
        rollout policy) and config. The config comes back as it was: when the config's
        version holds other data, that data is written as a new version (so GetConfig,
        the next patch and the revision agree), else that version is pinned."""
        namespace, service_id = cloudrun.owner(service) or ("", "")
        short = service.name.rsplit("/", 1)[1]
        store = await self._store()
        latest = await store.read(short)
        if latest.data == dict(target.config):
            version = latest.version
        else:
            version = await store.write(short, namespace, service_id, latest, target.config)
        ref = (
            None if version == "0" else cloudrun.make_config_ref(store.secret_name(short), version)
        )
        views = await self._read()
        account = self.settings.service_account

        def restore(existing: run_v2.Service) -> run_v2.Service | None:
            _check(existing, expected)
            now = views.spec(existing)
            spec = replace(
                target.spec,
                replicas=now.replicas,
                progress_deadline_seconds=now.progress_deadline_seconds,
                auto_rollback=now.auto_rollback,
            )
            # A config written after this rollback's read stays: it is what GetConfig shows.
            keep = cloudrun.pins_newer(existing, ref)
            return cloudrun.converge(
                existing, spec, account, ref=cloudrun.Keep.CONFIG if keep else ref, restores=facts
            )

        return await self._converge_with(namespace, service_id, restore, service, wait=wait)

    async def _rolled_back(self, service: run_v2.Service, status: DeploymentStatus) -> bool:
        """Roll a failed rollout back to the revision that serves when the spec asks for
        it (auto_rollback): a new revision, ``automatic``, ``rollback_of`` the serving
        one. Never for an automatic revision (no loop of rollbacks), never when nothing
        served before. Best effort: a failure (another controller did it first, say) is
        left to the next read, and the status is returned all the same."""
        rollout = status.rollout
        if (
            rollout is None
            or rollout.state is not RolloutState.FAILED
            or status.spec is None
            or not status.spec.auto_rollback
            or not status.observed_revision
            or status.observed_revision == status.revision
            or facts_of(service.template.annotations).automatic
        ):
            return False
        views = await self._read()
        try:
            history = await views.revisions(service)
            good = [r for r in history if r.number == status.observed_revision]
            if not good:
                return False
            facts = RevisionFacts(
                0,
                f"auto_rollback: revision {status.revision} failed ({rollout.reason})",
                status.observed_revision,
                automatic=True,
            )
            # Sent, not awaited: a status read does not wait for the rollback's rollout,
            # which the statuses that follow report.
            await self._restore(service, good[0], facts, expected=status.revision, wait=False)
        except InfrastructureProviderError as exc:
            log.warning("could not roll %s/%s back: %s", status.namespace, status.service_id, exc)
            return False
        return True

    # -- logs -------------------------------------------------------------------------------

    async def stream_logs(
        self, service_id: str, query: LogQuery, *, namespace: str = DEFAULT_NAMESPACE
    ) -> AsyncGenerator[LogEntry, None]:
        service = await self._get(namespace, service_id)
        clients = await self._connect()
        created: object = service.create_time
        reader = CloudRunLogs(
            clients.logging(),
            self._project,
            self.settings.region,
            service.name.rsplit("/", 1)[1],
            created if isinstance(created, datetime) else datetime.fromtimestamp(0, UTC),
        )
        if not query.follow:
            for entry in await reader.retained(query):
                yield entry
            return
        async for entry in reader.follow(query):
            yield entry

    # -- metrics ----------------------------------------------------------------------------

    async def stream_metrics(
        self,
        service_id: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        interval_seconds: float = 10.0,
    ) -> AsyncGenerator[MetricSample, None]:
        await self._get(namespace, service_id)
        clients = await self._connect()
        reader = CloudRunMetrics(
            clients.monitoring(),
            self._project,
            self.settings.region,
            self.settings.metrics_window,
            read_timeout=max(interval_seconds, 5.0),
        )
        cadence = Cadence(interval_seconds)
        while True:
            sample = await self._sample(reader, service_id, namespace)
            yield sample
            await cadence.wait()

    async def _sample(
        self, reader: CloudRunMetrics, service_id: str, namespace: str
    ) -> MetricSample:
        try:
            service = await self._get(namespace, service_id)
            cores, memory = cloudrun.limits_of(service)
            return await reader.sample(
                service.name.rsplit("/", 1)[1],
                service_id=service_id,
                namespace=namespace,
                alias=self.provider_alias,
                cpu_cores=cores,
                memory_limit=memory,
            )
        except InfrastructureProviderError as exc:
            return MetricSample(
                service_id=service_id,
                namespace=namespace,
                provider=self.provider_alias,
                timestamp=datetime.now(UTC),
                replicas=0,
                ok=False,
                error=exc.message,
            )


def _check(service: run_v2.Service, expected: int) -> None:
    """The caller's ``expected_revision`` against the service as read."""
    namespace, service_id = cloudrun.owner(service) or ("", "")
    RevisionConflict.check(service_id, namespace, expected, number_of(service.template))
