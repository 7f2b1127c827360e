"""The ``gcp`` provider: Cloud Run services (default) or a GKE cluster (ALPHASWARM_GCP_MODE=gke).

Cloud Run mode maps a service onto a Cloud Run v2 Service in
ALPHASWARM_GCP_PROJECT (else the credentials' project) and ALPHASWARM_GCP_REGION
(translation in ``cloudrun``), its config onto a Secret Manager secret
(``config``) referenced from the service's env, and its metrics onto Cloud
Monitoring time series (``metrics``). Every long-running operation is awaited
within the caller's deadline, polling every ALPHASWARM_GCP_POLL_INTERVAL seconds.

``stop`` scales the service to zero instances (manual scaling) instead of
deleting it: the contract requires a stopped service to stay known (status
STOPPED, a second stop succeeds, ``start`` brings it back with its config),
which a deleted Cloud Run service cannot be. A zero-instance service costs
nothing to keep; delete it with ``gcloud run services delete`` to remove it.

A failed create deletes the half-created service before reporting the failure.
A failed update leaves Cloud Run serving the previous ready revision, which
``status`` reports as DEGRADED with Cloud Run's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import run_v2

from alphaswarm_core.providers.concurrency import BlockingRunner, remaining_timeout
from alphaswarm_core.providers.protocol import (
    DEFAULT_NAMESPACE,
    BackendConflictError,
    BackendTimeoutError,
    ConfigMapPatch,
    ConfigVersionConflict,
    DeploymentNotFoundError,
    DeploymentSpec,
    DeploymentStatus,
    InfrastructureProvider,
    InfrastructureProviderError,
    MetricSample,
    ProviderHealth,
    ProviderKind,
    ServiceConfig,
)

from . import cloudrun
from .clients import GcpClients, GcpSettings, load_credentials
from .config import SecretConfigStore
from .errors import api_errors, credentials_missing
from .metrics import CloudRunMetrics

log = logging.getLogger(__name__)


class GcpProvider(InfrastructureProvider):
    provider_kind = ProviderKind.GCP
    provider_alias = "gcp"

    def __init__(
        self, *, env: Mapping[str, str] | None = None, runner: BlockingRunner | None = None
    ) -> None:
        super().__init__(env=env, runner=runner)
        self.settings = GcpSettings.load(self.setting)
        self._clients: GcpClients | None = None
        self._project = ""
        self._connect_lock = asyncio.Lock()
        self._gke: InfrastructureProvider | None = None
        self._gke_lock = asyncio.Lock()

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
                while not await operation.done():
                    await asyncio.sleep(delay)
                    delay = min(delay * 1.5, 10.0)
                result: run_v2.Service = await operation.result()
        return result

    async def _find(self, namespace: str, service_id: str) -> run_v2.Service | None:
        clients = await self._connect()
        with api_errors("run"):
            try:
                service = await clients.run().get_service(
                    name=self._name(namespace, service_id), timeout=remaining_timeout()
                )
            except gexc.NotFound:
                return None
        return service if cloudrun.owner(service) == (namespace, service_id) else None

    async def _get(self, namespace: str, service_id: str) -> run_v2.Service:
        service = await self._find(namespace, service_id)
        if service is None:
            raise DeploymentNotFoundError(service_id, namespace)
        return service

    async def _update(self, service: run_v2.Service) -> run_v2.Service:
        clients = await self._connect()
        with api_errors("run"):
            operation = await clients.run().update_service(
                service=service, timeout=remaining_timeout()
            )
        return await self._await_operation(operation)

    async def _status(self, service: run_v2.Service) -> DeploymentStatus:
        return cloudrun.to_status(service, self.provider_alias)

    async def _gke_provider(self) -> InfrastructureProvider:
        if self._gke is None:
            from .gke import connect_gke

            clients = await self._connect()
            async with self._gke_lock:
                if self._gke is None:
                    self._gke = await connect_gke(self, clients, self._project)
        return self._gke

    # -- lifecycle --------------------------------------------------------------------------

    async def close(self) -> None:
        if self._gke is not None:
            await self._gke.close()
            self._gke = None
        if self._clients is not None:
            await self._clients.close()
            self._clients = None

    async def health(self) -> ProviderHealth:
        self._check_credentials()
        clients = await self._connect()
        details = {"project": self._project, "mode": self.settings.mode}
        if self.settings.endpoints:
            details["endpoints"] = ",".join(f"{k}={v}" for k, v in self.settings.endpoints.items())
        if self.settings.mode == "gke":
            from .gke import cluster_name

            # Connecting reads the cluster (container API) and fetches a token; the
            # kubernetes provider's health then checks the cluster and its RBAC.
            cluster = await (await self._gke_provider()).health()
            details = {**cluster.details, **details}
            details["cluster"] = cluster_name(self.settings, self._project)
            return replace(cluster, alias=self.provider_alias, details=details)
        with api_errors("run"):
            pager = await clients.run().list_services(
                request=run_v2.ListServicesRequest(parent=self._parent, page_size=1),
                timeout=remaining_timeout(),
            )
            async for _ in pager:
                break
        details["region"] = self.settings.region
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
        if self.settings.mode == "gke":
            return await (await self._gke_provider()).start(spec)
        cloudrun.validate_spec(spec)
        self.settings.validate()
        clients = await self._connect()
        existing = await self._find(spec.namespace, spec.service_id)
        if existing is not None:
            return await self._converge(existing, spec)
        short = cloudrun.cloud_run_name(spec.namespace, spec.service_id)
        with api_errors("run"):
            try:
                operation = await clients.run().create_service(
                    parent=self._parent,
                    service=cloudrun.build_service(spec),
                    service_id=short,
                    timeout=remaining_timeout(),
                )
            except gexc.AlreadyExists as exc:
                # A concurrent start created it first: converge onto that one.
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
        updated = cloudrun.converge(existing, spec)
        if updated is None:
            return await self._status(existing)
        return await self._status(await self._update(updated))

    async def _remove_failed(self, name: str) -> None:
        """Delete a service whose creation failed, so no half-created service is left."""
        clients = await self._connect()
        try:
            with api_errors("run"):
                operation = await clients.run().delete_service(
                    name=name, timeout=remaining_timeout()
                )
            await self._await_operation(operation)
        except InfrastructureProviderError as exc:
            if not isinstance(exc.__cause__, gexc.NotFound):
                log.warning("could not delete failed Cloud Run service %s: %s", name, exc)

    async def stop(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        if self.settings.mode == "gke":
            return await (await self._gke_provider()).stop(service_id, namespace=namespace)
        return await self.scale(service_id, 0, namespace=namespace)

    async def scale(
        self, service_id: str, replicas: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        if self.settings.mode == "gke":
            gke = await self._gke_provider()
            return await gke.scale(service_id, replicas, namespace=namespace)
        service = await self._get(namespace, service_id)
        if cloudrun.instance_count(service) == replicas:
            return await self._status(service)
        updated = run_v2.Service(service)
        cloudrun.set_instance_count(updated, replicas)
        return await self._status(await self._update(updated))

    async def status(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        if self.settings.mode == "gke":
            return await (await self._gke_provider()).status(service_id, namespace=namespace)
        return await self._status(await self._get(namespace, service_id))

    async def list_deployments(self, *, namespace: str | None = None) -> list[DeploymentStatus]:
        if self.settings.mode == "gke":
            return await (await self._gke_provider()).list_deployments(namespace=namespace)
        clients = await self._connect()
        found = []
        with api_errors("run"):
            pager = await clients.run().list_services(
                request=run_v2.ListServicesRequest(parent=self._parent, page_size=100),
                timeout=remaining_timeout(),
            )
            async for service in pager:
                ids = cloudrun.owner(service)
                if ids is not None and (namespace is None or ids[0] == namespace):
                    found.append(await self._status(service))
        return found

    # -- config -----------------------------------------------------------------------------

    async def _store(self) -> SecretConfigStore:
        clients = await self._connect()
        return SecretConfigStore(clients.secrets(), self._project)

    async def get_config(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> ServiceConfig:
        if self.settings.mode == "gke":
            return await (await self._gke_provider()).get_config(service_id, namespace=namespace)
        service = await self._get(namespace, service_id)
        stored = await (await self._store()).read(service.name.rsplit("/", 1)[1])
        return ServiceConfig(service_id, namespace, stored.data, stored.version)

    async def apply_config(self, patch: ConfigMapPatch) -> ServiceConfig:
        patch.validate()
        if self.settings.mode == "gke":
            return await (await self._gke_provider()).apply_config(patch)
        service = await self._get(patch.namespace, patch.service_id)
        short = service.name.rsplit("/", 1)[1]
        store = await self._store()
        current = await store.read(short)
        if patch.expected_version and patch.expected_version != current.version:
            raise ConfigVersionConflict(
                patch.service_id,
                patch.namespace,
                expected=patch.expected_version,
                actual=current.version,
            )
        data = patch.applied_to(current.data)
        version = await store.write(short, patch.namespace, patch.service_id, current, data)
        # Pinning the version (not "latest") changes the template: Cloud Run rolls a revision.
        rolled = run_v2.Service(service)
        ref = cloudrun.make_config_ref(store.secret_name(short), version)
        for container in rolled.template.containers:
            container.env = [v for v in container.env if v.name != cloudrun.CONFIG_ENV] + [ref]
        await self._update(rolled)
        return ServiceConfig(patch.service_id, patch.namespace, data, version)

    # -- metrics ----------------------------------------------------------------------------

    async def stream_metrics(
        self,
        service_id: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        interval_seconds: float = 10.0,
    ) -> AsyncGenerator[MetricSample, None]:
        if self.settings.mode == "gke":
            samples = self._gke_metrics(service_id, namespace, interval_seconds)
        else:
            samples = self._metrics(service_id, namespace, interval_seconds)
        async with contextlib.aclosing(samples):
            async for sample in samples:
                yield sample

    async def _gke_metrics(
        self, service_id: str, namespace: str, interval: float
    ) -> AsyncGenerator[MetricSample, None]:
        gke = await self._gke_provider()
        async for sample in gke.stream_metrics(
            service_id, namespace=namespace, interval_seconds=interval
        ):
            yield sample

    async def _metrics(
        self, service_id: str, namespace: str, interval: float
    ) -> AsyncGenerator[MetricSample, None]:
        await self._get(namespace, service_id)
        clients = await self._connect()
        reader = CloudRunMetrics(
            clients.monitoring(), self._project, self.settings.region, self.settings.metrics_window
        )
        while True:
            try:
                service = await self._get(namespace, service_id)
                cores, memory = cloudrun.limits(service)
                sample = await reader.sample(
                    service.name.rsplit("/", 1)[1],
                    service_id=service_id,
                    namespace=namespace,
                    alias=self.provider_alias,
                    cpu_cores=cores,
                    memory_limit=memory,
                )
            except InfrastructureProviderError as exc:
                sample = MetricSample(
                    service_id=service_id,
                    namespace=namespace,
                    provider=self.provider_alias,
                    timestamp=datetime.now(UTC),
                    replicas=0,
                    ok=False,
                    error=exc.message,
                )
            yield sample
            await asyncio.sleep(interval)
