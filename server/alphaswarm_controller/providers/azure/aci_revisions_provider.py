"""``AciRevisionsProvider``: the aci mode with revisions (capability ``revisions``).

Served for the ``azure`` alias when ``ALPHASWARM_AZURE_REVISIONS_ACCOUNT_URL`` (or
``_CONNECTION_STRING``) is set (``revision_settings``). Everything ``AciProvider`` does,
plus: every change of what a service runs (start with another spec, apply_config,
rollback) is a revision numbered in the service's record in Blob Storage
(``revision_record``, ``revision_store``: compare-and-swap on the blob's ETag, so
controllers side by side agree on numbers and a stale ``expected_revision`` is
REVISION_CONFLICT with nothing changed). Replicas are built from the record, so secret
config values survive recreation (scale up, rollback, a changed spec). Each replica's
``alphaswarm-revision`` tag says which revision it runs; a change rolls them one at a
time (``aci_roll``) and its outcome is judged from ACI's own states (``aci_rollout``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from azure.core.credentials import TokenCredential

from alphaswarm_core.call import current_change
from alphaswarm_core.providers.concurrency import BlockingRunner
from alphaswarm_core.providers.models import (
    DEFAULT_PROGRESS_DEADLINE_SECONDS,
    masked_config,
)
from alphaswarm_core.providers.protocol import (
    DEFAULT_NAMESPACE,
    ConfigMapPatch,
    ConfigVersionConflict,
    Definition,
    DeploymentSpec,
    DeploymentStatus,
    InfrastructureProviderError,
    ProviderHealth,
    Revision,
    RevisionConflict,
    RevisionNotFound,
    RolloutState,
    ServiceConfig,
)
from alphaswarm_core.providers.service_locks import one_change_at_a_time

from . import aci, config
from .aci_provider import AciProvider, check_owners, secrets_unreadable
from .aci_roll import Roller, build
from .aci_rollout import judge, revision_of
from .revision_record import ServiceRecord
from .revision_settings import read_revision_settings
from .revision_store import LostRace, RevisionStore
from .status import deployment_status

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def _as_written(spec: DeploymentSpec) -> DeploymentSpec:
    """What a revision keeps of a spec: not the replicas, not the rollout policy."""
    return replace(
        spec,
        replicas=0,
        progress_deadline_seconds=DEFAULT_PROGRESS_DEADLINE_SECONDS,
        auto_rollback=False,
    )


def _next_version(current: Revision, data: Mapping[str, str]) -> str:
    if dict(data) == dict(current.config):
        return current.config_version
    return str(int(current.config_version) + 1 if current.config_version.isdigit() else 1)


class AciRevisionsProvider(AciProvider):
    """Container groups as in ``AciProvider``; revision records in Azure Blob Storage."""

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        runner: BlockingRunner | None = None,
        credential: TokenCredential | None = None,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            env=env, runner=runner, credential=credential, client_options=client_options
        )
        self._store: RevisionStore | None = None

    # -- plumbing ------------------------------------------------------------------------------

    def _check_credentials(self) -> None:
        super()._check_credentials()
        read_revision_settings(self)

    @property
    def store(self) -> RevisionStore:
        if self._store is None:
            access = self.access
            self._store = RevisionStore(
                self,
                read_revision_settings(self),
                lambda: access.clients.credential,
                self.settings.max_parallel,
            )
        return self._store

    @property
    def roller(self) -> Roller:
        return Roller(self.gateway, self.settings.location, self.settings.poll_interval)

    async def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            store.close()
        await super().close()

    async def health(self) -> ProviderHealth:
        found = await super().health()
        await self.store.probe()
        details = {
            **found.details,
            "revisions_container": self.store.settings.container,
            "revision_history": str(self.store.history),
        }
        return replace(found, details=details)

    async def _live(self, service_id: str, namespace: str) -> ServiceRecord | None:
        record, _ = await self.store.read(namespace, service_id)
        return record if record is not None and record.current is not None else None

    # -- changes -------------------------------------------------------------------------------

    @one_change_at_a_time
    async def start(self, spec: DeploymentSpec) -> DeploymentStatus:
        aci.check_spec(spec)
        namespace, service = spec.namespace, spec.service_id
        change = current_change()
        groups = await self.gateway.list_groups()
        check_owners(spec, groups)
        replicas = aci.group_replicas(groups, namespace).get((namespace, service), [])
        adopted = self._adopted(replicas)
        history, now = self.store.history, _now()

        def decide(record: ServiceRecord | None) -> ServiceRecord | None:
            live = record if record is not None and replicas else None
            number = live.number if live is not None else 0
            RevisionConflict.check(service, namespace, change.expected_revision, number)
            base = (live or ServiceRecord(namespace, service)).with_policy(spec)
            current = live.current if live is not None else None
            if current is not None and current.spec.runs_as(spec):
                return None if base == live else base
            data, version = (current.config, current.config_version) if current else adopted
            unreadable = config.unreadable_secrets(data)
            if unreadable:
                raise secrets_unreadable(unreadable, "create container groups")
            made = Revision(number + 1, _as_written(spec), data, version, now, change.change_cause)
            return base.with_revision(made, history, now)

        record = await self.store.update(namespace, service, decide)
        if record is None or record.current is None:  # pragma: no cover - decide always writes
            raise AssertionError("no revision record after start")
        await self._converge(record, spec.replicas)
        return await self.status(service, namespace=namespace)

    def _adopted(self, replicas: Sequence[aci.Replica]) -> tuple[dict[str, str], str]:
        """The config of a service made before revisions were kept (from its groups)."""
        if not replicas:
            return {}, "0"
        newest = self._newest(replicas)
        return config.read_config(newest.group), str(newest.config_version)

    async def _converge(self, record: ServiceRecord, wanted: int, *, roll: bool = True) -> None:
        """Replicas 0..wanted-1 on the record's newest revision (with ``roll`` False, a
        scale: new replicas run what the others run). Zero keeps replica 0, stopped."""
        namespace, service = record.namespace, record.service_id
        target = record.current
        if target is None:
            return
        replicas = await self._replicas(service, namespace)
        await self._delete_all([r for r in replicas if r.ordinal >= max(wanted, 1)])
        kept = [r for r in replicas if r.ordinal < max(wanted, 1)]
        template = target
        running = [revision_of(r) for r in kept if not r.stopped]
        if not roll and running:
            template = record.find(min(running)) or target
        by_ordinal = {r.ordinal: r for r in kept}
        missing = [i for i in range(max(wanted, 1)) if i not in by_ordinal]
        location = self.settings.location
        await self._create_all(
            {aci.group_name(namespace, service, i): build(template, i, location) for i in missing},
            wait=wanted == 0,
        )
        stale = [r for r in kept if revision_of(r) != target.number] if roll else []
        if stale:
            await self._rolled(record, stale)
        fresh = await self._replicas(service, namespace)
        if wanted == 0:
            await self._stop_keeping_first(fresh)
            return
        restart = [r for r in fresh if r.stopped and r.ordinal < wanted]
        for _, error in await self.gateway.bounded(restart, self.gateway.start):
            if error is not None:
                raise error

    async def _rolled(self, record: ServiceRecord, stale: Sequence[aci.Replica]) -> None:
        """Roll ``stale`` onto the newest revision; on failure record it FAILED and, when
        the policy says so, roll back to the revision the replicas still run."""
        target = record.current
        failure = await self.roller.roll(record, stale)
        if failure is None or target is None:
            return
        verdict = failure.verdict
        message = f"revision {target.number}, replica {failure.replica.name}: {verdict.message}"
        log.info("rollout of %s/%s failed: %s", record.namespace, record.service_id, message)
        number = target.number

        def failed(current: ServiceRecord | None) -> ServiceRecord | None:
            if current is None:
                return None
            ended = current.finished(number, RolloutState.FAILED, verdict.reason.value, message)
            return None if ended == current else ended

        latest = await self.store.update(record.namespace, record.service_id, failed)
        good = revision_of(failure.replica)
        if latest is None or not latest.auto_rollback or target.automatic:
            return
        back_to = latest.find(good)
        if back_to is None or latest.number != number:
            return
        cause = f"auto_rollback: revision {number} failed ({verdict.reason.value})"
        await self._restore(latest, back_to, cause, automatic=True, expected=number)

    async def _restore(
        self,
        record: ServiceRecord,
        target: Revision,
        cause: str,
        *,
        automatic: bool,
        expected: int,
    ) -> None:
        """A new revision running ``target``'s spec and config, rolled like any change."""
        namespace, service = record.namespace, record.service_id
        history, now = self.store.history, _now()

        def restore(current: ServiceRecord | None) -> ServiceRecord:
            if current is None or current.current is None:
                raise RevisionNotFound(service, namespace, target.number)
            RevisionConflict.check(service, namespace, expected, current.number)
            made = Revision(
                current.number + 1,
                target.spec,
                target.config,
                _next_version(current.current, target.config),
                now,
                cause,
                rollback_of=target.number,
                automatic=automatic,
            )
            return current.with_revision(made, history, now)

        written = await self.store.update(namespace, service, restore)
        if written is None:  # pragma: no cover - restore always writes
            return
        replicas = await self._replicas(service, namespace)
        await self._converge(written, len([r for r in replicas if not r.stopped]))

    @one_change_at_a_time
    async def scale(
        self, service_id: str, replicas: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        aci.check_group_names(namespace, service_id, replicas, field="replicas")
        current = await self._found(service_id, namespace)
        record = await self._live(service_id, namespace)
        expected = current_change().expected_revision
        RevisionConflict.check(service_id, namespace, expected, record.number if record else 0)
        if record is None:
            return await super().scale(service_id, replicas, namespace=namespace)
        if len([r for r in current if not r.stopped]) != replicas:
            await self._converge(record, replicas, roll=False)
        return await self.status(service_id, namespace=namespace)

    @one_change_at_a_time
    async def stop(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        await self._found(service_id, namespace)
        record = await self._live(service_id, namespace)
        expected = current_change().expected_revision
        RevisionConflict.check(service_id, namespace, expected, record.number if record else 0)
        return await super().stop(service_id, namespace=namespace)

    @one_change_at_a_time
    async def delete(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE, allow_missing: bool = False
    ) -> bool:
        """The container groups, then the revision record (also when the groups are gone
        already: a delete interrupted between the two is finished by the next)."""
        replicas = await self._replicas(service_id, namespace)
        record = await self._live(service_id, namespace) if replicas else None
        expected = current_change().expected_revision
        RevisionConflict.check(service_id, namespace, expected, record.number if record else 0)
        found = await super().delete(service_id, namespace=namespace, allow_missing=True)
        await self.store.delete(namespace, service_id)
        if not found and not allow_missing:
            return await super().delete(service_id, namespace=namespace)
        return found

    # -- config --------------------------------------------------------------------------------

    async def get_config(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> ServiceConfig:
        await self._found(service_id, namespace)
        record = await self._live(service_id, namespace)
        if record is None or record.current is None:
            return await super().get_config(service_id, namespace=namespace)
        current = record.current
        return ServiceConfig(
            service_id, namespace, masked_config(current.config), current.config_version
        )

    @one_change_at_a_time
    async def apply_config(self, patch: ConfigMapPatch) -> ServiceConfig:
        config.check_patch_values(patch.set)
        namespace, service = patch.namespace, patch.service_id
        replicas = await self._found(service, namespace)
        adopted = self._adopted(replicas)
        change = current_change()
        history, now = self.store.history, _now()
        template = self._newest(replicas)
        made: list[Revision] = []

        def decide(record: ServiceRecord | None) -> ServiceRecord | None:
            live = record if record is not None and record.current is not None else None
            number = live.number if live is not None else 0
            data, version = (
                (live.current.config, live.current.config_version)
                if live is not None and live.current is not None
                else adopted
            )
            if patch.expected_version and patch.expected_version != version:
                raise ConfigVersionConflict(
                    service, namespace, expected=patch.expected_version, actual=version
                )
            RevisionConflict.check(service, namespace, change.expected_revision, number)
            merged = patch.applied_to(data)
            unreadable = config.unreadable_secrets(merged)
            if unreadable:
                raise secrets_unreadable(unreadable, "roll the replicas onto the new config")
            new_version = str(int(version) + 1 if version.isdigit() else 1)
            spec = (
                live.current.spec
                if live is not None and live.current is not None
                else self._legacy_spec(template, namespace, service)
            )
            revision = Revision(number + 1, spec, merged, new_version, now, change.change_cause)
            made[:] = [revision]
            return (live or ServiceRecord(namespace, service)).with_revision(revision, history, now)

        record = await self.store.update(namespace, service, decide)
        if record is not None:
            await self._converge(record, len([r for r in replicas if not r.stopped]))
        revision = made[0]
        return ServiceConfig(
            service, namespace, masked_config(revision.config), revision.config_version
        )

    def _legacy_spec(self, replica: aci.Replica, namespace: str, service: str) -> DeploymentSpec:
        """The spec of a replica made before revisions were kept, read from its group."""
        group = replica.group
        container = group.containers[0] if group.containers else None
        labels = {k: v for k, v in replica.tags.items() if not k.startswith("alphaswarm-")}
        return DeploymentSpec(
            service_id=service,
            namespace=namespace,
            image=str(container.image or "") if container is not None else "",
            command=tuple(container.command or ()) if container is not None else (),
            env=config.spec_environment(group),
            replicas=0,
            labels=labels,
        )

    # -- reads ---------------------------------------------------------------------------------

    async def status(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        replicas = await self._found(service_id, namespace)
        views = await self.gateway.views([r for r in replicas if not r.stopped])
        base = deployment_status(self.provider_alias, namespace, service_id, replicas, views)
        record, etag = await self.store.read(namespace, service_id)
        if record is None or record.current is None:
            return base
        judgement = judge(record, replicas, views, ready=base.ready_replicas)
        rollout = judgement.rollout
        if (
            rollout is not None
            and rollout.state is RolloutState.SUCCEEDED
            and record.rollout is not None
            and record.rollout.state is RolloutState.IN_PROGRESS
        ):
            await self._settle(record, etag)
        failed = rollout is not None and rollout.state is RolloutState.FAILED
        return replace(
            base,
            spec=self._spec(record, replicas),
            revision=record.number,
            observed_revision=judgement.observed,
            rollout=rollout,
            conditions=judgement.conditions,
            message=rollout.message if failed and rollout is not None else base.message,
        )

    async def _settle(self, record: ServiceRecord, etag: str) -> None:
        """Keep a rollout seen SUCCEEDED as such (a replica that crashes later does not
        make it fail after the fact). Best effort: a lost race is the next read's."""
        ended = record.finished(record.number, RolloutState.SUCCEEDED)
        try:
            await self.store.write(ended, etag)
        except (LostRace, InfrastructureProviderError) as exc:
            log.info("rollout outcome of %s not recorded: %s", record.service_id, exc)

    def _spec(self, record: ServiceRecord, replicas: Sequence[aci.Replica]) -> DeploymentSpec:
        current = record.current
        if current is None:  # pragma: no cover - callers check
            raise AssertionError("no current revision")
        return replace(
            current.spec,
            replicas=len([r for r in replicas if not r.stopped]),
            progress_deadline_seconds=record.progress_deadline_seconds,
            auto_rollback=record.auto_rollback,
        )

    async def definition(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> Definition:
        replicas = await self._found(service_id, namespace)
        record = await self._live(service_id, namespace)
        if record is None or record.current is None:
            newest = self._newest(replicas)
            active = len([r for r in replicas if not r.stopped])
            spec = replace(self._legacy_spec(newest, namespace, service_id), replicas=active)
            data, version = self._adopted(replicas)
            return Definition(spec, data, version, 0)
        current = record.current
        return Definition(
            self._spec(record, replicas), current.config, current.config_version, record.number
        )

    async def list_revisions(
        self, service_id: str, *, namespace: str = DEFAULT_NAMESPACE
    ) -> list[Revision]:
        await self._found(service_id, namespace)
        record = await self._live(service_id, namespace)
        return list(record.revisions) if record is not None else []

    @one_change_at_a_time
    async def rollback(
        self, service_id: str, to_revision: int, *, namespace: str = DEFAULT_NAMESPACE
    ) -> DeploymentStatus:
        await self._found(service_id, namespace)
        record = await self._live(service_id, namespace)
        change = current_change()
        number = record.number if record is not None else 0
        RevisionConflict.check(service_id, namespace, change.expected_revision, number)
        if record is None:
            raise RevisionNotFound(service_id, namespace, to_revision)
        if to_revision == 0:
            older = [r for r in record.revisions if r.number < record.number]
            target = older[0] if older else None
        else:
            target = record.find(to_revision)
        if target is None:
            raise RevisionNotFound(service_id, namespace, to_revision)
        expected = change.expected_revision or record.number
        await self._restore(record, target, change.change_cause, automatic=False, expected=expected)
        return await self.status(service_id, namespace=namespace)
