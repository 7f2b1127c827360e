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
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from alphaswarm_core.call import current_change
from alphaswarm_core.providers import models
from alphaswarm_core.providers.cadence import Cadence
from alphaswarm_core.providers.errors import (
    BackendConflictError,
    BackendRejectedError,
    ConfigVersionConflict,
    DeploymentNotFoundError,
    InfrastructureProviderError,
    InvalidSpecError,
    RevisionConflict,
    RevisionNotFound,
    SettingInvalid,
)
from alphaswarm_core.providers.models import (
    SECRET_MASK,
    ConfigMapPatch,
    DeploymentSpec,
    DeploymentStatus,
    LogEntry,
    LogQuery,
    MetricSample,
    ProviderHealth,
    ProviderKind,
    Revision,
    RolloutState,
    ServiceConfig,
    is_secret_key,
)
from alphaswarm_core.providers.protocol import DEFAULT_NAMESPACE, InfrastructureProvider
from alphaswarm_core.providers.service_locks import ServiceLocks

from . import (
    checks,
    compose,
    definitions,
    engine,
    history,
    images,
    networks,
    revisions,
    rollouts,
    sealing,
    statuses,
)
from .compose import ContainerRef
from .definitions import Definition
from .logreaders import ReaderSlots
from .logstream import LogSession
from .options import Options, parse
from .replicas import Replicas
from .rollouts import ReplicaFailed, RolloutClock, RolloutRecord
from .sealing import SecretsUnreadable
from .stats import CpuMark, StatsHub, cpu_mark, cpu_percent, usage

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a new replica may take to become ready during a rolling replace.
DEFAULT_READY_TIMEOUT = 60.0
#: How long an image pull may take when the call's deadline allows more.
DEFAULT_PULL_TIMEOUT = 300.0
#: How long a replacement without a health check must keep running to count as ready.
DEFAULT_MIN_READY = 1.0
DEFAULT_PARALLELISM = 16
DEFAULT_STOP_GRACE = 10
STATS_POOL_SIZE = 64
#: Writes of a rollout's outcome tried while other writers keep changing the definition.
RECORD_ATTEMPTS = 3
#: Log reader threads (one per replica read, one per following call) in the provider:
#: enough to follow a service of MAX_REPLICAS, and within a default limit of 1024 files.
DEFAULT_LOG_READERS = 512


class DockerComposeProvider(InfrastructureProvider):
    """Compose-compatible services on a Docker engine (DOCKER_HOST)."""

    provider_kind: ClassVar[ProviderKind | str] = ProviderKind.DOCKER_COMPOSE
    provider_alias: ClassVar[str] = "docker_compose"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._api: engine.DeadlineAPIClient | None = None
        self.parallelism = self.setting_int(
            "parallelism", DEFAULT_PARALLELISM, minimum=1, maximum=256
        )
        self.call_timeout = self.setting_seconds(
            "timeout", engine.DEFAULT_BACKEND_TIMEOUT, minimum=1, maximum=3600
        )
        self.pull_timeout = self.setting_seconds(
            "pull_timeout", DEFAULT_PULL_TIMEOUT, minimum=1, maximum=86400
        )
        self.replicas = Replicas(
            self._client,
            ready_timeout=self.setting_seconds(
                "ready_timeout", DEFAULT_READY_TIMEOUT, minimum=1, maximum=3600
            ),
            min_ready=self.setting_seconds(
                "min_ready_seconds", DEFAULT_MIN_READY, minimum=0, maximum=600
            ),
            stop_grace=self.setting_int("stop_timeout", DEFAULT_STOP_GRACE, maximum=3600),
            crash_loop_exits=self.setting_int(
                "crash_loop_exits", rollouts.DEFAULT_CRASH_LOOP_EXITS, minimum=1, maximum=100
            ),
        )
        self._sealer: sealing.Sealer | None = None
        self._stats_api: engine.DeadlineAPIClient | None = None
        self.stats = StatsHub(self._stats_client)
        self.log_slots = ReaderSlots(
            self.setting_int("log_readers", DEFAULT_LOG_READERS, minimum=1, maximum=4096),
            self.setting_name("log_readers"),
        )
        self._logs_api: engine.DeadlineAPIClient | None = None
        self.log_sessions: set[LogSession] = set()
        # Serialises writers of one service inside this process; across controller
        # replicas the definition's compare-and-swap and the engine's unique
        # container names keep writers from corrupting each other.
        self.service_locks = ServiceLocks()
        # Calls that may put replicas on a project's network right now, counted under
        # that project's network lock: delete removes the network only when none is.
        self._network_locks: dict[str, asyncio.Lock] = {}
        self._network_users: Counter[str] = Counter()

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

    def _logs_client(self) -> engine.DeadlineAPIClient:
        """A client of its own for log and event streams: each holds a connection for its
        whole life, up to one per reader slot."""
        if self._logs_api is None:
            self._logs_api = engine.connect(
                self.env, timeout=self.call_timeout, max_pool_size=self.log_slots.limit
            )
        return self._logs_api

    async def _call(self, what: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a blocking engine call; SDK errors become provider errors."""

        def call() -> T:
            try:
                return fn(*args, **kwargs)
            except ReplicaFailed:
                raise  # an outcome of the rollout, not a failure of the call
            except Exception as exc:
                raise engine.translate(exc, self.env, what=what) from exc

        return await self.run_blocking(call)

    @contextlib.asynccontextmanager
    async def _using_network(self, project: str) -> AsyncIterator[None]:
        """Mark a call that may put replicas on the project network, so that a delete of
        the project's last other service does not remove the network under it."""
        async with self._network_locks.setdefault(project, asyncio.Lock()):
            self._network_users[project] += 1
        try:
            yield
        finally:
            self._network_users[project] -= 1
            if self._network_users[project] <= 0:
                del self._network_users[project]

    def _sealer_for(self, needed: bool) -> sealing.Sealer | None:
        """The secret key's sealer when ``needed`` (secrets to seal or unseal), loaded
        on first use: a provider whose services have no secrets needs no key."""
        if not needed:
            return None
        if self._sealer is None:
            self._sealer = sealing.load(
                self.setting("secret_key_file"), self.setting_name("secret_key_file")
            )
        return self._sealer

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
        for session in list(self.log_sessions):
            session.close()
        await asyncio.to_thread(self.stats.close)
        for api in (self._api, self._stats_api, self._logs_api):
            if api is not None:
                api.close()
        self._api = self._stats_api = self._logs_api = None

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
        return statuses.service_status(
            self.provider_alias,
            project,
            service,
            definition,
            refs,
            opts=_options_or_defaults(definition),
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
        self, definition: Definition, opts: Options, numbers: list[int], target: _Target
    ) -> list[str]:
        """Create replicas concurrently; if any fails, remove those that succeeded and raise."""
        what = f"creating replicas of {definition.project}/{definition.service}"
        results = await self._bounded(
            [
                lambda n=n: self._call(  # type: ignore[misc]
                    what,
                    self.replicas.create_replica,
                    definition,
                    opts,
                    n,
                    target.digest,
                    target.image_id,
                    target.env,
                )
                for n in numbers
            ]
        )
        created = [r for r in results if isinstance(r, str)]
        errors = [
            r for r in results if isinstance(r, BaseException) and not isinstance(r, _Skipped)
        ]
        if errors:
            with engine.undoing():
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

    async def _target(
        self, definition: Definition, opts: Options, sealer: sealing.Sealer | None
    ) -> _Target:
        """What replicas must run, resolved before anything is written: the image (pulled
        within the call's deadline), the environment (secrets unsealed) and the
        Compose config-hash (image id included). Checks the CPU limit fits the engine."""
        env = definition.effective_env(definition.secret_values(sealer))

        def resolve() -> str:
            api = self._client()
            millicores = definition.resources.cpu_millicores()
            if millicores is not None:
                cpus = int(api.info().get("NCPU") or 0)
                if cpus and millicores > cpus * 1000:
                    raise BackendRejectedError(
                        f"resources.cpu {definition.resources.cpu} is more than the engine's "
                        f"{cpus} CPUs; the engine refuses such a limit",
                        metadata={"cause": "CPU_EXCEEDS_ENGINE", "engine_cpus": str(cpus)},
                    )
            return images.resolve(api, definition.image, opts.pull, timeout=self.pull_timeout)

        image_id = await self._call(f"resolving image {definition.image!r}", resolve)
        config = {**self.replicas.container_config(definition, opts), "image_id": image_id}
        return _Target(image_id, compose.config_hash(config), env)

    async def _network(self, project: str) -> tuple[str, bool]:
        """The project network's id, and whether this call created it (and so may
        remove it again if the call fails)."""
        return await self._call(
            f"creating network {compose.network_name(project)}",
            networks.ensure,
            self._client(),
            project,
        )

    async def _volumes(self, project: str, opts: Options) -> None:
        if opts.volumes:
            await self._call("creating volumes", self.replicas.ensure_volumes, project, opts)

    async def _drop_network(self, project: str, network: tuple[str, bool] | None) -> None:
        """Undo ``_network``: only a network this call created, ours, and unused, and
        that no other call of this process is about to use."""
        if network is None or not network[1] or self._network_users[project] > 1:
            return
        with engine.undoing(), contextlib.suppress(InfrastructureProviderError):
            await self._call(
                "removing the network",
                networks.remove_if_ours_and_unused,
                self._client(),
                project,
                network[0],
            )

    async def _roll_out(  # noqa: PLR0917 - one value per part of the rollout
        self,
        definition: Definition,
        opts: Options,
        refs: list[ContainerRef],
        replicas: int,
        target: _Target,
        clock: RolloutClock | None,
        *,
        first: bool,
    ) -> ReplicaFailed | None:
        """Make the containers match ``definition`` x ``replicas``: remove the extra ones,
        create the missing ones, replace those that run something else, one at a time.

        With a ``clock`` (a rollout) it waits for each new replica to be ready or
        completed and returns how the rollout failed (None: it did not). An engine
        refusal of a replica is such a failure too, except in a service's ``first``
        start, which has nothing to keep running: that is raised, and undone.
        """
        project, service = definition.project, definition.service
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
        try:
            created = await self._create_many(definition, opts, missing, target)
        except InfrastructureProviderError as exc:
            failure = None if first or clock is None else rollouts.refusal(exc)
            if failure is None:
                raise
            return failure
        try:
            if clock is not None and (failure := await self._wait_all(created, clock, opts)):
                return failure
            for ref in keep:
                if ref.config_hash != target.digest:
                    await self._call(
                        f"replacing {ref.name}",
                        self.replicas.replace_replica,
                        definition,
                        opts,
                        ref,
                        target.digest,
                        target.image_id,
                        target.env,
                        clock or self._clock(definition),
                    )
                elif ref.state in ("created", "exited") and not statuses.completed(ref, opts):
                    await self._call(f"starting {ref.name}", self._client().start, ref.id)
        except ReplicaFailed as failed:
            return failed
        except InfrastructureProviderError as exc:
            failure = None if first or clock is None else rollouts.refusal(exc)
            if failure is None:
                with engine.undoing():
                    await self._remove_many(created, self.replicas.grace(opts), what="rolling back")
                raise
            return failure
        except BaseException:
            with engine.undoing():
                await self._remove_many(created, self.replicas.grace(opts), what="rolling back")
            raise
        return None

    async def _wait_all(
        self, container_ids: list[str], clock: RolloutClock, opts: Options
    ) -> ReplicaFailed | None:
        """Wait for new replicas to be ready (at most ``parallelism`` waits at once); the
        first failure, if any."""
        results = await self._bounded(
            [
                lambda cid=cid: self._call(  # type: ignore[misc]
                    "waiting for a new replica",
                    self.replicas.wait_ready,
                    cid,
                    clock,
                    opts.restart,
                )
                for cid in container_ids
            ]
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(
                result, _Skipped | ReplicaFailed
            ):
                raise result
        return next((r for r in results if isinstance(r, ReplicaFailed)), None)

    def _clock(self, definition: Definition) -> RolloutClock:
        left = engine.deadline_left()
        return RolloutClock(
            definition.progress_deadline,
            call_deadline=None if left is None else time.monotonic() + left,
        )

    async def _store(
        self, definition: Definition, *, expected: int, conflict: Callable[[], Exception] | None
    ) -> Definition:
        """Write ``definition`` as the next generation (compare-and-swap). Losing to
        another writer is the caller's expected_revision failing when it gave one, else
        ``conflict()`` when given, else ABORTED (retry)."""
        project, service = definition.project, definition.service
        try:
            return await self._call(
                f"storing the definition of {project}/{service}",
                definitions.write,
                self._client(),
                definition,
            )
        except BackendConflictError as exc:
            if expected:
                now, _ = await self._call(
                    f"reading {project}/{service}", self._observe, project, service
                )
                RevisionConflict.check(service, project, expected, now.revision if now else 0)
            if conflict is not None:
                raise conflict() from exc
            raise

    async def _record(self, stored: Definition, record: RolloutRecord) -> Definition:
        """Write the outcome of ``stored``'s rollout, unless another writer has moved the
        service on meanwhile (its change owns the rollout now): then the current one."""
        project, service = stored.project, stored.service
        for _ in range(RECORD_ATTEMPTS):
            try:
                return await self._call(
                    f"recording the rollout of {project}/{service}",
                    definitions.write,
                    self._client(),
                    stored.with_rollout(record),
                )
            except BackendConflictError:
                now, _ = await self._call(
                    f"reading {project}/{service}", self._observe, project, service
                )
                rollout = now.rollout if now else None
                if now is None or rollout is None or rollout.revision != record.revision:
                    return now or stored
                if rollout.started_at != record.started_at:
                    return now  # a newer rollout of the same revision
                stored = now
        raise BackendConflictError(
            f"the rollout of {project}/{service} could not be recorded: the definition kept "
            "changing under it; read the status again",
        )

    async def _apply(
        self,
        previous: Definition | None,
        wanted: Definition,
        refs: list[ContainerRef],
        replicas: int,
        *,
        new_revision: bool,
        conflict: Callable[[], Exception] | None = None,
        automatic: bool = False,
    ) -> Definition:
        """Store ``wanted`` and converge ``replicas`` replicas onto it; the caller holds
        the service's lock and checked ``expected_revision`` against ``previous``.

        ``new_revision``: ``wanted`` is the service's next revision (its revision is
        kept in the history first, and its rollout recorded). A rollout that fails is
        recorded FAILED, the replicas it did not replace keep running, and with the
        spec's ``auto_rollback`` the last good revision comes back as a new one. A call
        that fails (the engine unreachable, the deadline) undoes what it can and raises.
        ``automatic``: this is that rollback (it follows the caller's change, whatever
        revision the caller expected, and is not rolled back again).
        """
        project, service = wanted.project, wanted.service
        expected = 0 if automatic else current_change().expected_revision
        opts = parse(wanted.options)
        sealer = self._sealer_for(
            wanted.needs_key() or bool(previous and previous.legacy_plain and previous.needs_key())
        )
        wanted = wanted.sealed(sealer)
        # A definition from before sealing holds its secrets in clear: it is kept in the
        # history, or put back by an undo, only sealed.
        legacy = previous is not None and previous.legacy_plain
        previous = previous.sealed(sealer) if previous is not None else None
        failure: ReplicaFailed | None = None
        target = _NO_TARGET
        if replicas:
            try:
                target = await self._target(wanted, opts, sealer)
            except InfrastructureProviderError as exc:
                failure = rollouts.refusal(exc) if previous is not None and new_revision else None
                if failure is None:
                    raise
        unfinished = previous is not None and (
            previous.rollout is None or previous.rollout.state is not RolloutState.SUCCEEDED
        )
        rolling = (
            new_revision
            or unfinished
            or any(ref.config_hash != target.digest for ref in refs[:replicas])
        )
        record = (
            RolloutRecord.begun(wanted.revision, wanted.progress_deadline, target.digest)
            if rolling
            else None
        )
        if record is not None and failure is not None:
            record = record.failed(failure)
        stored = previous
        network: tuple[str, bool] | None = None
        async with self._using_network(project):
            try:
                if failure is None:
                    network = await self._network(project)
                    await self._volumes(project, opts)
                if new_revision and previous is not None:
                    await self._call(
                        f"keeping revision {previous.revision} of {project}/{service}",
                        history.keep,
                        self._client(),
                        previous,
                    )
                if record is not None:
                    wanted = wanted.with_rollout(record)
                if (
                    previous is None
                    or record is not None
                    or legacy
                    or not previous.same_spec(wanted)
                    or not previous.same_policy(wanted)
                ):
                    stored = await self._store(wanted, expected=expected, conflict=conflict)
                assert stored is not None
                if failure is None:
                    failure = await self._roll_out(
                        stored,
                        opts,
                        refs,
                        replicas,
                        target,
                        self._clock(stored) if record is not None else None,
                        first=previous is None,
                    )
            except BaseException:
                with engine.undoing():
                    await self._undo(project, service, previous, stored, network)
                raise
        if record is not None and not record.done:
            stored = await self._record(
                stored, record.failed(failure) if failure else record.succeeded()
            )
        if new_revision:
            with contextlib.suppress(InfrastructureProviderError):
                await self._call(
                    "pruning the revision history",
                    history.prune,
                    self._client(),
                    project,
                    service,
                    current=stored.revision,
                )
        ours = stored.rollout is not None and stored.rollout.started_at == (
            record.started_at if record else None
        )
        if failure is not None and ours and not automatic:
            stored = await self._auto_rollback(stored, failure)
        return stored

    async def _auto_rollback(self, failed: Definition, failure: ReplicaFailed) -> Definition:
        """With the failed revision's ``auto_rollback``, bring back the last good revision
        (as a new, automatic one); an automatic revision is never rolled back again."""
        good = failed.last_good
        if not failed.auto_rollback or failed.automatic or not good or good == failed.revision:
            return failed
        project, service = failed.project, failed.service

        def read() -> tuple[list[Definition], list[ContainerRef]]:
            api = self._client()
            return history.read(api, project, service, failed.revision), self._containers(
                project, service
            )

        earlier, refs = await self._call(f"reading the history of {project}/{service}", read)
        target = revisions.find(failed, earlier, good)
        if target is None:
            log.warning(
                "auto_rollback of %s/%s: revision %d left the history", project, service, good
            )
            return failed
        cause = f"auto_rollback: revision {failed.revision} failed ({failure.reason.value})"
        wanted = revisions.restored(failed, target, cause, automatic=True)
        log.info("rolling %s/%s back to revision %d: %s", project, service, good, cause)
        return await self._apply(failed, wanted, refs, len(refs), new_revision=True, automatic=True)

    async def _undo(
        self,
        project: str,
        service: str,
        previous: Definition | None,
        stored: Definition | None,
        network: tuple[str, bool] | None,
    ) -> None:
        """Put back what a failed call changed besides containers (those roll back
        already): the previous definition (as the next generation), or none at all."""
        with contextlib.suppress(InfrastructureProviderError):
            if stored is not None and stored is not previous:
                if previous is None:
                    await self._forget(project, service)
                else:
                    await self._call(
                        "restoring the previous definition",
                        definitions.write,
                        self._client(),
                        replace(previous, generation=stored.generation, nonce=stored.nonce),
                    )
        await self._drop_network(project, network)

    async def _forget(self, project: str, service: str) -> None:
        def forget() -> None:
            api = self._client()
            definitions.prune(api, project, service, keep=None)
            history.prune(api, project, service, current=None)

        await self._call(f"forgetting {project}/{service}", forget)

    async def start(self, spec: DeploymentSpec) -> DeploymentStatus:
        """Converge onto ``spec``: a change of what runs is the next revision, rolled out
        replica by replica (``_apply``); the same spec again retries a rollout that did
        not finish, or only sets the number of replicas."""
        checks.checked_options(spec)
        project, service = spec.namespace, spec.service_id
        async with self.service_locks.hold(project, service):
            previous, refs = await self._call(
                f"reading {project}/{service}", self._observe, project, service
            )
            RevisionConflict.check(
                service,
                project,
                current_change().expected_revision,
                previous.revision if previous else 0,
            )
            wanted = Definition.from_spec(spec, keep=previous)
            changed = previous is None or not previous.same_spec(wanted)
            if changed:
                wanted = wanted.as_next_revision(current_change().change_cause)
            await self._apply(previous, wanted, refs, spec.replicas, new_revision=changed)
            definition, refs = await self._call(
                f"reading {project}/{service}", self._observe, project, service
            )
        return self._status(project, service, definition, refs)

    async def scale(
        self, service_id: str, replicas: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        """Set the number of replicas; new ones run the current revision. A scale is no
        new revision and no rollout (nothing waits for the new replicas)."""
        project = namespace
        async with self.service_locks.hold(project, service_id):
            definition, refs = await self._definition(project, service_id)
            RevisionConflict.check(
                service_id, project, current_change().expected_revision, definition.revision
            )
            opts = parse(definition.options)
            if replicas < len(refs):
                await self._remove_many(
                    [ref.id for ref in reversed(refs[replicas:])],
                    self.replicas.grace(opts),
                    what=f"scaling down {project}/{service_id}",
                )
            elif replicas > len(refs):
                checks.check_scale(definition.ports, replicas)
                sealer = self._sealer_for(definition.needs_key())
                target = await self._target(definition, opts, sealer)
                async with self._using_network(project):
                    network = await self._network(project)
                    try:
                        await self._volumes(project, opts)
                        missing = _free_numbers(refs, replicas - len(refs))
                        await self._create_many(definition, opts, missing, target)
                    except BaseException:
                        await self._drop_network(project, network)
                        raise
            definition_now, refs = await self._call(
                f"reading {project}/{service_id}", self._observe, project, service_id
            )
        return self._status(project, service_id, definition_now, refs)

    async def stop(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        project = namespace
        async with self.service_locks.hold(project, service_id):
            definition, refs = await self._definition(project, service_id)
            RevisionConflict.check(
                service_id, project, current_change().expected_revision, definition.revision
            )
            opts = parse(definition.options)
            await self._remove_many(
                [ref.id for ref in reversed(refs)],
                self.replicas.grace(opts),
                what=f"stopping {project}/{service_id}",
            )
        return self._status(project, service_id, definition, [])

    async def delete(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE, allow_missing: bool = False
    ) -> bool:
        """Remove the replicas, the definition and revision volumes (spec, config, sealed
        secrets, history) and, when no other service of the project is left, the project
        network if it is ours.

        The project's named data volumes (``volumes`` option) stay, as with ``docker
        compose down`` without ``-v``: they hold data, and other services may mount them.
        """
        project = namespace
        async with self.service_locks.hold(project, service_id):
            definition, refs = await self._call(
                f"reading {project}/{service_id}", self._observe, project, service_id
            )
            if definition is None and not refs:
                if allow_missing:
                    return False
                raise DeploymentNotFoundError(service_id, project)
            RevisionConflict.check(
                service_id,
                project,
                current_change().expected_revision,
                definition.revision if definition else 0,
            )
            opts = _options_or_defaults(definition)
            await self._remove_many(
                [ref.id for ref in reversed(refs)],
                self.replicas.grace(opts),
                what=f"deleting {project}/{service_id}",
            )
            await self._forget(project, service_id)
            await self._remove_project_network(project)
        return True

    async def _remove_project_network(self, project: str) -> None:
        """Remove the project network when no service of the project is left, it is ours
        and no container is attached (``networks.remove_if_ours_and_unused``); and no call
        of this process is about to use it."""
        async with self._network_locks.setdefault(project, asyncio.Lock()):
            if self._network_users[project]:
                return

            def remove() -> bool:
                api = self._client()
                if definitions.read_all(api, project) or self._containers(project):
                    return False  # another service of the project: the network is shared
                network = networks.find(api, project)
                if network is None:
                    return False
                return networks.remove_if_ours_and_unused(api, project, str(network["Id"]))

            await self._call(f"removing network {compose.network_name(project)}", remove)

    # -- revisions ---------------------------------------------------------------------------

    def _readable_config(self, definition: Definition) -> dict[str, str]:
        """The config with its secrets in clear where this controller's key opens them,
        masked where it cannot (a revision sealed under an earlier key)."""
        if not definition.secrets:
            return dict(definition.config)
        try:
            values = definition.secret_values(self._sealer_for(True))
        except (SettingInvalid, SecretsUnreadable):
            values = dict.fromkeys(definition.secrets, SECRET_MASK)
        return {**definition.config, **values}

    async def definition(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> models.Definition:
        project = namespace
        definition, refs = await self._observed(project, service_id)
        if definition is None:  # started by Docker Compose; adopted at its first change
            definition = await self._call(
                f"reading {project}/{service_id}",
                self.replicas.adopted,
                project,
                service_id,
                refs,
            )
            definition = replace(definition, revision=0)
        return revisions.current(definition, len(refs), self._readable_config(definition))

    async def list_revisions(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> list[Revision]:
        """The current revision and the kept earlier ones, newest first (at most
        ``history.HISTORY``)."""
        project = namespace
        head, _ = await self._observed(project, service_id)
        if head is None:
            return []  # started by Docker Compose: no revision until its first change
        earlier = await self._call(
            f"reading the history of {project}/{service_id}",
            history.read,
            self._client(),
            project,
            service_id,
            head.revision,
        )
        return [
            revisions.revision_of(kept, self._readable_config(kept))
            for kept in revisions.newest(head, earlier)
        ]

    async def rollback(
        self, service_id: str, to_revision: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        project = namespace
        async with self.service_locks.hold(project, service_id):
            head, refs = await self._definition(project, service_id)
            RevisionConflict.check(
                service_id, project, current_change().expected_revision, head.revision
            )
            earlier = await self._call(
                f"reading the history of {project}/{service_id}",
                history.read,
                self._client(),
                project,
                service_id,
                head.revision,
            )
            target = revisions.find(head, earlier, to_revision)
            if target is None:
                raise RevisionNotFound(service_id, project, to_revision)
            wanted = revisions.restored(head, target, current_change().change_cause)
            await self._apply(head, wanted, refs, len(refs), new_revision=True)
            definition, refs = await self._call(
                f"reading {project}/{service_id}", self._observe, project, service_id
            )
        return self._status(project, service_id, definition, refs)

    # -- config ------------------------------------------------------------------------------

    async def get_config(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> ServiceConfig:
        project = namespace
        definition, _ = await self._observed(project, service_id)
        if definition is None:
            return ServiceConfig(service_id, project, {}, "0")
        return ServiceConfig(
            service_id, project, definition.shown_config(), str(definition.config_version)
        )

    async def apply_config(self, patch: ConfigMapPatch) -> ServiceConfig:
        """A new config version and revision, rolled out to the replicas one at a time
        (their environment changes); a patch that changes nothing changes nothing."""
        project, service = patch.namespace, patch.service_id
        async with self.service_locks.hold(project, service):
            definition, refs = await self._definition(project, service)
            current = str(definition.config_version)
            if patch.expected_version and patch.expected_version != current:
                raise ConfigVersionConflict(
                    service, project, expected=patch.expected_version, actual=current
                )
            RevisionConflict.check(
                service, project, current_change().expected_revision, definition.revision
            )
            sets_secret = any(is_secret_key(key) for key in patch.set)
            sealer = self._sealer_for(definition.needs_key() or sets_secret)
            in_force = {**definition.config, **definition.secret_values(sealer)}
            data = patch.applied_to(in_force)
            checks.check_config(data)
            if data == in_force and not definition.legacy_plain:
                return ServiceConfig(service, project, definition.shown_config(), current)
            updated = definition.with_config(data, sealer, in_force).as_next_revision(
                current_change().change_cause
            )

            def conflict() -> Exception:
                return ConfigVersionConflict(
                    service, project, expected=patch.expected_version or current, actual="newer"
                )

            stored = await self._apply(
                definition, updated, refs, len(refs), new_revision=True, conflict=conflict
            )
        return ServiceConfig(service, project, stored.shown_config(), str(stored.config_version))

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
        marks: dict[str, CpuMark] = {}
        cadence = Cadence(interval_seconds)
        try:
            while True:
                sample = await self._sample(project, service_id, held, marks)
                yield sample
                await cadence.wait()
        finally:
            self.stats.release_all(held)

    async def _sample(
        self, project: str, service: str, held: set[str], marks: dict[str, CpuMark]
    ) -> MetricSample:
        """Aggregate the latest stats frame of each running replica; track replica churn.

        CPU is measured over the interval since this stream's previous sample (``marks``
        holds each replica's counters then), in percent of one core, summed.
        """
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
            marks.pop(gone, None)
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
            m, r, t = usage(frame)
            cpu += cpu_percent(frame, since=marks.get(container_id))
            marks[container_id] = cpu_mark(frame)
            memory, rx, tx = memory + m, rx + r, tx + t
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

    # -- logs --------------------------------------------------------------------------------

    async def stream_logs(
        self, service_id: str, query: LogQuery, *, namespace: str = DEFAULT_NAMESPACE
    ) -> AsyncGenerator[LogEntry, None]:
        """The engine's logs of the service's containers (``GET /containers/{id}/logs``
        with timestamps), merged by time; with follow, new lines and new replicas too."""
        project = namespace
        listed_ns = time.time_ns()  # later starts come through the event stream
        _, refs = await self._observed(project, service_id)  # NOT_FOUND at the first anext
        await self._call("connecting for logs", self._logs_client)

        async def relist() -> list[ContainerRef]:
            return await self._call(
                f"listing {project}/{service_id}", self._containers, project, service_id
            )

        session = LogSession(
            self._logs_client, self.log_slots, query, project, service_id, relist=relist
        )
        self.log_sessions.add(session)
        try:
            session.open(refs, listed_ns)
            while (entry := await session.next()) is not None:
                yield entry
        finally:
            session.close()
            self.log_sessions.discard(session)


class _Skipped(Exception):
    """A bounded job not started because an earlier one failed."""


@dataclass(frozen=True, slots=True)
class _Target:
    """What a service's replicas run: image id, Compose config-hash, environment."""

    image_id: str
    digest: str
    env: Mapping[str, str]


_NO_TARGET = _Target("", "", {})


def _free_numbers(refs: list[ContainerRef], count: int) -> list[int]:
    """The ``count`` lowest container numbers not taken, as Compose numbers new replicas."""
    taken = {ref.number for ref in refs}
    free = (n for n in range(1, len(taken) + count + 1) if n not in taken)
    return [next(free) for _ in range(count)]


def _options_or_defaults(definition: Definition | None) -> Options:
    """The definition's options, or Compose's defaults when there are none or they no
    longer parse (written by another release): a delete must not depend on them."""
    if definition is None:
        return Options()
    try:
        return parse(definition.options)
    except InvalidSpecError:
        return Options()


__all__ = ["DockerComposeProvider"]
