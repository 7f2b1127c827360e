"""What the provider reports of a Cloud Run service: status with its rollout, definition,
revisions. Reads only; the changes are the provider's.

Statuses carry ``revision`` (the number the service's template carries: what it is meant
to run), ``observed_revision`` (the number of the revision that serves: the
``latest_ready_revision`` the service's 100 % LATEST traffic target routes to, which a
failed update leaves on the previous one, or the one a traffic split set elsewhere gives
the most), ``rollout`` and ``conditions`` (``rollout.py``), and ``spec`` (the template read
back, ``revisions.spec_of``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from google.cloud import run_v2

from alphaswarm_core.providers.models import Definition, DeploymentSpec, DeploymentStatus, Revision

from . import cloudrun
from .config import SecretConfigStore
from .history import RevisionReader
from .revisions import facts_of, number_of, spec_of, with_policy
from .rollout import judge, time_of

CONFIG_CACHE = 128
EPOCH = datetime.fromtimestamp(0, UTC)


class ServiceViews:
    """Reads of one provider's Cloud Run services and their revisions."""

    def __init__(
        self,
        reader: RevisionReader,
        store: Callable[[], Awaitable[SecretConfigStore]],
        alias: str,
    ) -> None:
        self.reader = reader
        self._store = store
        self.alias = alias
        self._configs: OrderedDict[tuple[str, str], dict[str, str]] = OrderedDict()

    def spec(self, service: run_v2.Service) -> DeploymentSpec:
        """What ``service`` is meant to run, with its replicas and rollout policy."""
        namespace, service_id = cloudrun.owner(service) or ("", "")
        spec = spec_of(
            service.template.containers,
            service.template.annotations,
            namespace,
            service_id,
            config_env=cloudrun.CONFIG_ENV,
            replicas=cloudrun.instance_count(service),
        )
        return with_policy(spec, service.annotations)

    async def config_of(self, containers: Sequence[run_v2.Container]) -> tuple[str, dict[str, str]]:
        """(version, data) of the config a template or revision pins ("0", {}: none)."""
        pinned = cloudrun.pinned_version(containers)
        if pinned is None:
            return "0", {}
        cached = self._configs.get(pinned)
        if cached is None:
            cached = await (await self._store()).read_at(*pinned)
            self._configs[pinned] = cached
            while len(self._configs) > CONFIG_CACHE:
                self._configs.popitem(last=False)
        return pinned[1], dict(cached)

    async def definition(self, service: run_v2.Service) -> Definition:
        version, data = await self.config_of(service.template.containers)
        return Definition(self.spec(service), data, version, number_of(service.template))

    async def _revision(
        self, name: str, service: run_v2.Service, *, ready: bool
    ) -> run_v2.Revision | None:
        """Revision ``name``: from the cache when it is ready (it never changes then)."""
        if not name:
            return None
        cached = self.reader.cached(name, service) if ready else None
        if cached is not None:
            return cached
        revision = await self.reader.get(name)
        if revision is not None and ready:
            self.reader.remember(revision)
        return revision

    async def status(self, service: run_v2.Service) -> DeploymentStatus:
        base = cloudrun.to_status(service, self.alias)
        spec = self.spec(service)
        desired = number_of(service.template)
        if not desired:
            return replace(base, spec=spec)
        ready_name = str(service.latest_ready_revision)
        created_name = str(service.latest_created_revision)
        created = await self._revision(created_name, service, ready=created_name == ready_name)
        serving = cloudrun.serving_revision(service)
        observed = await self.reader.number(serving, service) if serving else 0
        judgement = judge(
            service,
            created,
            desired=desired,
            deadline_seconds=spec.progress_deadline_seconds,
            serving=base.ready_replicas,
            replicas=base.desired_replicas,
        )
        message = base.message
        if judgement.failed and judgement.rollout is not None:
            message = judgement.rollout.message
        return replace(
            base,
            spec=spec,
            message=message,
            revision=desired,
            observed_revision=observed,
            rollout=judgement.rollout,
            conditions=judgement.conditions,
        )

    async def revisions(self, service: run_v2.Service) -> list[Revision]:
        """The newest revisions (``RevisionReader.history``), newest first."""
        namespace, service_id = cloudrun.owner(service) or ("", "")
        found = []
        for revision in await self.reader.newest(str(service.name)):
            facts = facts_of(revision.annotations)
            version, data = await self.config_of(revision.containers)
            spec = spec_of(
                revision.containers,
                revision.annotations,
                namespace,
                service_id,
                config_env=cloudrun.CONFIG_ENV,
            )
            found.append(
                Revision(
                    number=facts.number,
                    spec=spec,
                    config=data,
                    config_version=version,
                    created_at=time_of(revision.create_time, EPOCH),
                    change_cause=facts.change_cause,
                    rollback_of=facts.rollback_of,
                    automatic=facts.automatic,
                )
            )
        return found
