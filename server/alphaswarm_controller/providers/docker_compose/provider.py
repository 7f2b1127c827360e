"""The docker_compose provider: services as Compose-labelled containers on one engine.

A service is what Compose would make of a one-service compose file: containers
``<namespace>-<service>-<n>`` carrying Compose's labels, on the network
``<namespace>_default``. The engine is the only state: replicas are the
containers that exist (created, running or exited), readiness is their state
and health, and the spec and config live in a definition volume
(``definitions``) so a stopped service stays known across controller restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from alphaswarm_core.providers.errors import (
    BackendConflictError,
    ConfigVersionConflict,
    DeploymentNotFoundError,
    InfrastructureProviderError,
)
from alphaswarm_core.providers.models import (
    ConfigMapPatch,
    DeploymentSpec,
    DeploymentState,
    DeploymentStatus,
    InstanceStatus,
    MetricSample,
    ProviderHealth,
    ProviderKind,
    ServiceConfig,
)
from alphaswarm_core.providers.protocol import DEFAULT_NAMESPACE, InfrastructureProvider

from . import compose, definitions, engine
from .compose import ContainerRef
from .definitions import Definition
from .options import Options, parse
from .replicas import Replicas
from .stats import StatsHub, usage

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a new replica may take to become ready during a rolling replace.
DEFAULT_READY_TIMEOUT = 60.0
#: How long a replacement without a health check must keep running to count as ready.
DEFAULT_MIN_READY = 1.0
DEFAULT_PARALLELISM = 16
DEFAULT_STOP_GRACE = 10
STATS_POOL_SIZE = 64


class DockerComposeProvider(InfrastructureProvider):
    """Compose-compatible services on a Docker engine (DOCKER_HOST)."""

    provider_kind: ClassVar[ProviderKind | str] = ProviderKind.DOCKER_COMPOSE
    provider_alias: ClassVar[str] = "docker_compose"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._api: engine.DeadlineAPIClient | None = None
        self.parallelism = max(1, int(self.setting("parallelism", str(DEFAULT_PARALLELISM))))
        self.call_timeout = float(self.setting("timeout", str(engine.DEFAULT_BACKEND_TIMEOUT)))
        self.replicas = Replicas(
            self._client,
            ready_timeout=float(self.setting("ready_timeout", str(DEFAULT_READY_TIMEOUT))),
            min_ready=float(self.setting("min_ready_seconds", str(DEFAULT_MIN_READY))),
            stop_grace=int(self.setting("stop_timeout", str(DEFAULT_STOP_GRACE))),
        )
        self._stats_api: engine.DeadlineAPIClient | None = None
        self.stats = StatsHub(self._stats_client)
        # Serialises writers of one service inside this process; across controller
        # replicas the definition's compare-and-swap and the engine's unique
        # container names keep writers from corrupting each other.
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    # -- plumbing ----------------------------------------------------------------------------

    def _client(self) -> engine.DeadlineAPIClient:
        if self._api is None:
            self._api = engine.connect(
                self.env,
                timeout=self.call_timeout,
                max_pool_size=max(16, self.parallelism * 2),
            )
        return self._api

    def _stats_client(self) -> engine.DeadlineAPIClient:
        """A client of its own for stats streams, which hold a connection each for their
        whole life and must not take the request pool's connections."""
        if self._stats_api is None:
            self._stats_api = engine.connect(
                self.env, timeout=self.call_timeout, max_pool_size=STATS_POOL_SIZE
            )
        return self._stats_api

    async def _call(self, what: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a blocking engine call; SDK errors become provider errors."""

        def call() -> T:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                raise engine.translate(exc, self.env, what=what) from exc

        return await self.run_blocking(call)

    def _lock(self, project: str, service: str) -> asyncio.Lock:
        return self._locks.setdefault((project, service), asyncio.Lock())

    async def _bounded(self, jobs: Iterable[Callable[[], Awaitable[T]]]) -> list[T | BaseException]:
        """Run ``jobs`` at most ``parallelism`` at a time; collect results and errors.

        After the first failure no further job starts (those report ``_Skipped``):
        the caller is about to roll back, and more work would only add to undo.
        """
        gate = asyncio.Semaphore(self.parallelism)
        failed = False

        async def run(job: Callable[[], Awaitable[T]]) -> T:
            nonlocal failed
            async with gate:
                if failed:
                    raise _Skipped
                try:
                    return await job()
                except BaseException:
                    failed = True
                    raise

        return list(await asyncio.gather(*(run(job) for job in jobs), return_exceptions=True))

    async def open(self) -> None:
        await self._call("connecting", self._client)

    async def close(self) -> None:
        await asyncio.to_thread(self.stats.close)
        for api in (self._api, self._stats_api):
            if api is not None:
                api.close()
        self._api = self._stats_api = None

    def _check_credentials(self) -> None:
        engine.check_tls_settings(self.env)

    # -- reading -----------------------------------------------------------------------------

    def _containers(self, project: str | None, service: str | None = None) -> list[ContainerRef]:
        labels = [f"{compose.PROJECT}={project}" if project else compose.PROJECT]
        if service:
            labels.append(f"{compose.SERVICE}={service}")
        entries = self._client().containers(all=True, filters={"label": labels})
        refs = [ContainerRef.from_list_entry(entry) for entry in entries]
        return sorted((r for r in refs if r is not None), key=lambda r: r.number)

    def _observe(self, project: str, service: str) -> tuple[Definition | None, list[ContainerRef]]:
        return (
            definitions.read(self._client(), project, service),
            self._containers(project, service),
        )

    async def _observed(
        self, project: str, service: str
    ) -> tuple[Definition | None, list[ContainerRef]]:
        found = await self._call(f"reading {project}/{service}", self._observe, project, service)
        if found[0] is None and not found[1]:
            raise DeploymentNotFoundError(service, project)
        return found

    def _status(
        self, project: str, service: str, definition: Definition | None, refs: list[ContainerRef]
    ) -> DeploymentStatus:
        desired = len(refs)
        ready = sum(1 for ref in refs if ref.ready)
        failing = [ref for ref in refs if ref.state in ("exited", "dead", "restarting")]
        unhealthy = [ref for ref in refs if ref.health == "unhealthy"]
        if desired == 0:
            state, message = DeploymentState.STOPPED, "no replicas"
        elif ready == desired:
            state, message = DeploymentState.RUNNING, f"{ready}/{desired} replicas ready"
        elif failing or unhealthy:
            state = DeploymentState.DEGRADED
            worst = (failing or unhealthy)[0]
            message = f"{ready}/{desired} ready; {worst.name}: {worst.status_text or worst.state}"
        else:
            state, message = DeploymentState.PENDING, f"{ready}/{desired} replicas ready"
        if definition is None and refs:
            message += " (started by Docker Compose)"
        instances = tuple(
            InstanceStatus(
                instance_id=ref.id[:12],
                state=ref.state,
                ready=ref.ready,
                message=f"{ref.name}: {ref.status_text}",
            )
            for ref in refs
        )
        return DeploymentStatus(
            service_id=service,
            namespace=project,
            provider=self.provider_alias,
            state=state,
            desired_replicas=desired,
            ready_replicas=ready,
            message=message,
            instances=instances,
            image=definition.image if definition else (refs[0].image if refs else ""),
            labels=dict(definition.labels) if definition else compose.user_labels(refs[0].labels),
        )

    async def health(self) -> ProviderHealth:
        self._check_credentials()

        def probe() -> Mapping[str, Any]:
            api = self._client()
            api.ping()
            return dict(api.version())

        version = await self._call("probing the engine", probe)
        host = engine.engine_address(self.env)
        return ProviderHealth(
            alias=self.provider_alias,
            kind=ProviderKind.DOCKER_COMPOSE.value,
            healthy=True,
            message=(
                f"Docker engine {version.get('Version', '?')} "
                f"(API {version.get('ApiVersion', '?')}) at {host}"
            ),
            details={
                "docker_host": host,
                "server_version": str(version.get("Version", "")),
                "api_version": str(version.get("ApiVersion", "")),
                "os": str(version.get("Os", "")),
                "arch": str(version.get("Arch", "")),
            },
        )

    async def status(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        project = namespace
        definition, refs = await self._observed(project, service_id)
        return self._status(project, service_id, definition, refs)

    async def list_deployments(self, *, namespace: str | None = None) -> list[DeploymentStatus]:
        def read() -> tuple[dict[tuple[str, str], Definition], list[ContainerRef]]:
            return (
                definitions.read_all(self._client(), namespace),
                self._containers(namespace),
            )

        defs, refs = await self._call("listing services", read)
        grouped: dict[tuple[str, str], list[ContainerRef]] = {key: [] for key in defs}
        for ref in refs:
            grouped.setdefault((ref.project, ref.service), []).append(ref)
        return [
            self._status(project, service, defs.get((project, service)), members)
            for (project, service), members in sorted(grouped.items())
        ]

    async def _definition(
        self, project: str, service: str
    ) -> tuple[Definition, list[ContainerRef]]:
        """The service's definition, adopting a Compose-started service on first write."""
        definition, refs = await self._observed(project, service)
        if definition is None:
            definition = await self._call(
                f"adopting {project}/{service}", self.replicas.adopt, project, service, refs
            )
        return definition, refs

    # -- converging --------------------------------------------------------------------------

    async def _create_many(
        self,
        definition: Definition,
        opts: Options,
        numbers: list[int],
        digest: str,
        image_id: str,
    ) -> list[str]:
        """Create replicas concurrently; if any fails, remove those that succeeded and raise."""
        what = f"creating replicas of {definition.project}/{definition.service}"
        results = await self._bounded(
            [
                lambda n=n: self._call(  # type: ignore[misc]
                    what, self.replicas.create_replica, definition, opts, n, digest, image_id
                )
                for n in numbers
            ]
        )
        created = [r for r in results if isinstance(r, str)]
        errors = [
            r for r in results if isinstance(r, BaseException) and not isinstance(r, _Skipped)
        ]
        if errors:
            await self._remove_many(created, self.replicas.grace(opts), what="rolling back")
            raise errors[0]
        return created

    async def _remove_many(self, container_ids: list[str], grace: int, *, what: str) -> None:
        results = await self._bounded(
            [
                lambda cid=cid: self._call(what, self.replicas.remove_replica, cid, grace)  # type: ignore[misc]
                for cid in container_ids
            ]
        )
        errors = [
            r for r in results if isinstance(r, BaseException) and not isinstance(r, _Skipped)
        ]
        if errors:
            raise errors[0]

    async def _target(self, definition: Definition, opts: Options) -> tuple[str, str]:
        """The image id replicas must run and their config-hash (image id included)."""
        image_id = await self._call(
            f"resolving image {definition.image!r}",
            self.replicas.ensure_image,
            definition.image,
            opts.pull,
        )
        config = {**self.replicas.container_config(definition, opts), "image_id": image_id}
        return image_id, compose.config_hash(config)

    async def _prepare(self, project: str, opts: Options) -> bool:
        """Network and named volumes replicas need; True when the network was created."""
        created = await self._call(
            f"creating network {compose.network_name(project)}",
            self.replicas.ensure_network,
            project,
        )
        if opts.volumes:
            await self._call("creating volumes", self.replicas.ensure_volumes, project, opts)
        return created

    async def _converge(
        self,
        definition: Definition,
        opts: Options,
        refs: list[ContainerRef],
        replicas: int,
    ) -> list[str]:
        """Make the containers match ``definition`` x ``replicas``; return ids created."""
        project, service = definition.project, definition.service
        image_id, digest = await self._target(definition, opts)
        # Highest numbers go first when scaling down, as with `compose up --scale`.
        keep = refs[:replicas]
        extra = refs[replicas:]
        if extra:
            await self._remove_many(
                [ref.id for ref in reversed(extra)],
                self.replicas.grace(opts),
                what=f"scaling down {project}/{service}",
            )
        missing = _free_numbers(keep, replicas - len(keep))
        created = await self._create_many(definition, opts, missing, digest, image_id)
        try:
            for ref in keep:
                if ref.config_hash != digest:
                    await self._call(
                        f"replacing {ref.name}",
                        self.replicas.replace_replica,
                        definition,
                        opts,
                        ref,
                        digest,
                        image_id,
                    )
                elif ref.state in ("created", "exited"):
                    await self._call(f"starting {ref.name}", self._client().start, ref.id)
        except BaseException:
            await self._remove_many(created, self.replicas.grace(opts), what="rolling back")
            raise
        return created

    async def start(self, spec: DeploymentSpec) -> DeploymentStatus:
        opts = parse(spec.provider_options)
        project, service = spec.namespace, spec.service_id
        async with self._lock(project, service):
            previous, refs = await self._call(
                f"reading {project}/{service}", self._observe, project, service
            )
            wanted = Definition.from_spec(spec, keep=previous)
            stored = previous
            network_created = False
            try:
                network_created = await self._prepare(project, opts)
                if previous is None or not previous.same_spec(wanted):
                    stored = await self._call(
                        f"storing the definition of {project}/{service}",
                        definitions.write,
                        self._client(),
                        wanted,
                    )
                assert stored is not None
                await self._converge(stored, opts, refs, spec.replicas)
            except BaseException:
                await self._undo_start(project, service, previous, stored, network_created)
                raise
            definition, refs = await self._call(
                f"reading {project}/{service}", self._observe, project, service
            )
        return self._status(project, service, definition, refs)

    async def _undo_start(
        self,
        project: str,
        service: str,
        previous: Definition | None,
        stored: Definition | None,
        network_created: bool,
    ) -> None:
        """Put back what a failed start changed besides containers (those roll back already)."""
        with contextlib.suppress(InfrastructureProviderError):
            if stored is not None and stored is not previous:
                if previous is None:
                    await self._call(
                        "forgetting a failed service",
                        definitions.prune,
                        self._client(),
                        project,
                        service,
                        keep=None,
                    )
                else:
                    await self._call(
                        "restoring the previous definition",
                        definitions.write,
                        self._client(),
                        Definition.from_spec(_spec_of(previous), keep=stored),
                    )
            if network_created:
                await self._call(
                    "removing the network", self.replicas.remove_network_if_unused, project
                )

    async def scale(
        self, service_id: str, replicas: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        project = namespace
        async with self._lock(project, service_id):
            definition, refs = await self._definition(project, service_id)
            opts = parse(definition.options)
            if len(refs) != replicas:
                if replicas > len(refs):
                    await self._prepare(project, opts)
                await self._scale_only(definition, opts, refs, replicas)
            definition_now, refs = await self._call(
                f"reading {project}/{service_id}", self._observe, project, service_id
            )
        return self._status(project, service_id, definition_now, refs)

    async def _scale_only(
        self, definition: Definition, opts: Options, refs: list[ContainerRef], replicas: int
    ) -> None:
        """Add or remove replicas without touching the ones that stay."""
        if replicas < len(refs):
            await self._remove_many(
                [ref.id for ref in reversed(refs[replicas:])],
                self.replicas.grace(opts),
                what=f"scaling down {definition.project}/{definition.service}",
            )
            return
        image_id, digest = await self._target(definition, opts)
        missing = _free_numbers(refs, replicas - len(refs))
        await self._create_many(definition, opts, missing, digest, image_id)

    async def stop(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        project = namespace
        async with self._lock(project, service_id):
            definition, refs = await self._definition(project, service_id)
            opts = parse(definition.options)
            await self._remove_many(
                [ref.id for ref in reversed(refs)],
                self.replicas.grace(opts),
                what=f"stopping {project}/{service_id}",
            )
        return self._status(project, service_id, definition, [])

    # -- config ------------------------------------------------------------------------------

    async def get_config(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> ServiceConfig:
        project = namespace
        definition, _ = await self._observed(project, service_id)
        if definition is None:
            return ServiceConfig(service_id, project, {}, "0")
        return ServiceConfig(
            service_id, project, dict(definition.config), str(definition.config_version)
        )

    async def apply_config(self, patch: ConfigMapPatch) -> ServiceConfig:
        project, service = patch.namespace, patch.service_id
        async with self._lock(project, service):
            definition, refs = await self._definition(project, service)
            current = str(definition.config_version)
            if patch.expected_version and patch.expected_version != current:
                raise ConfigVersionConflict(
                    service, project, expected=patch.expected_version, actual=current
                )
            updated = definition.with_config(patch.applied_to(definition.config))
            try:
                stored = await self._call(
                    f"storing the config of {project}/{service}",
                    definitions.write,
                    self._client(),
                    updated,
                )
            except BackendConflictError as exc:
                raise ConfigVersionConflict(
                    service, project, expected=patch.expected_version or current, actual="newer"
                ) from exc
            opts = parse(stored.options)
            try:
                await self._converge(stored, opts, refs, len(refs))
            except InfrastructureProviderError:
                # The new config does not run: put the previous one back (as a new
                # version, so readers of the failed one notice) and its replicas too.
                restored = await self._call(
                    "restoring the previous config",
                    definitions.write,
                    self._client(),
                    stored.with_config(definition.config),
                )
                _, now = await self._call(
                    f"reading {project}/{service}", self._observe, project, service
                )
                with contextlib.suppress(InfrastructureProviderError):
                    await self._converge(restored, opts, now, len(refs))
                raise
        return ServiceConfig(service, project, dict(stored.config), str(stored.config_version))

    # -- metrics -----------------------------------------------------------------------------

    async def stream_metrics(
        self,
        service_id: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        interval_seconds: float = 10.0,
    ) -> AsyncGenerator[MetricSample, None]:
        project = namespace
        await self._observed(project, service_id)  # NOT_FOUND before the first sample
        held: set[str] = set()
        try:
            while True:
                sample = await self._sample(project, service_id, held)
                yield sample
                await asyncio.sleep(interval_seconds)
        finally:
            self.stats.release_all(held)

    async def _sample(self, project: str, service: str, held: set[str]) -> MetricSample:
        """Aggregate the latest stats frame of each running replica; track replica churn."""
        now = datetime.now(UTC)
        try:
            refs = await self._call(
                f"listing {project}/{service}", self._containers, project, service
            )
        except InfrastructureProviderError as exc:
            return MetricSample(
                service, project, self.provider_alias, now, 0, ok=False, error=exc.message
            )
        running = {ref.id for ref in refs if ref.state == "running"}
        for gone in held - running:
            self.stats.release(gone)
        fresh = running - held
        for new in fresh:
            self.stats.acquire(new)
        held.clear()
        held.update(running)
        if fresh:
            await self._first_frames(fresh, wait_seconds=5.0)
        cpu = 0.0
        memory = rx = tx = 0
        errors = []
        for container_id in sorted(running):
            frame, error = self.stats.latest(container_id)
            if frame is None:
                errors.append(f"{container_id[:12]}: {error or 'no stats yet'}")
                continue
            c, m, r, t = usage(frame)
            cpu, memory, rx, tx = cpu + c, memory + m, rx + r, tx + t
        return MetricSample(
            service_id=service,
            namespace=project,
            provider=self.provider_alias,
            timestamp=datetime.now(UTC),
            replicas=len(running),
            cpu_percent=round(cpu, 3),
            memory_bytes=memory,
            network_rx_bytes=rx,
            network_tx_bytes=tx,
            ok=not errors,
            error="; ".join(errors)[:500],
        )

    async def _first_frames(self, container_ids: set[str], wait_seconds: float) -> None:
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            frames = [self.stats.latest(cid) for cid in container_ids]
            if all(frame is not None or error for frame, error in frames):
                return
            await asyncio.sleep(0.05)


class _Skipped(Exception):
    """A bounded job not started because an earlier one failed."""


def _free_numbers(refs: list[ContainerRef], count: int) -> list[int]:
    """The ``count`` lowest container numbers not taken, as Compose numbers new replicas."""
    taken = {ref.number for ref in refs}
    free = (n for n in range(1, len(taken) + count + 1) if n not in taken)
    return [next(free) for _ in range(count)]


def _spec_of(definition: Definition) -> DeploymentSpec:
    return DeploymentSpec(
        service_id=definition.service,
        namespace=definition.project,
        image=definition.image,
        command=definition.command,
        env=dict(definition.env),
        labels=dict(definition.labels),
        ports=definition.ports,
        resources=definition.resources,
        provider_options=dict(definition.options),
    )


__all__ = ["DockerComposeProvider"]
