"""Rolling an ACI service onto its newest revision, one replica at a time (I/O).

ACI cannot keep two definitions of one container group, so a replica is replaced in
place: its group is deleted and created again from the revision (spec, and config with
the secret values the record keeps), then polled (one GET per poll interval) until it
runs, fails (``aci_rollout.group_failure``: image pull, crash loop, quota, provisioning)
or its time runs out: the spec's progress deadline since the rollout started or last
made progress, never past the caller's deadline less ``CALL_RESERVE`` (kept to put the
replica back). A replacement that fails ends the roll: its group is put back as the
revision it ran before (from the record, so secrets come back too), the other
replicas were not touched yet, and the record says FAILED with the reason. The replicas
not yet reached keep running meanwhile: at most one replica is down at any time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from azure.mgmt.containerinstance import models as aci_models

from alphaswarm_core.providers.concurrency import remaining_timeout
from alphaswarm_core.providers.conditions import Verdict
from alphaswarm_core.providers.models import Revision
from alphaswarm_core.providers.protocol import (
    BackendQuotaExceeded,
    BackendRejectedError,
    InfrastructureProviderError,
)
from alphaswarm_core.providers.reasons import ErrorReason

from . import aci, config
from .aci_rollout import group_failure, revision_of
from .gateway import AciGateway
from .revision_record import ServiceRecord
from .status import running_state

log = logging.getLogger(__name__)

CALL_RESERVE = 5.0
"""Seconds a call keeps, before its deadline, to put a replica back and record why."""


def build(revision: Revision, ordinal: int, location: str) -> aci_models.ContainerGroup:
    """Replica ``ordinal`` running ``revision``: its spec, its config (secrets included)."""
    spec = revision.spec
    return aci.build_group(
        spec,
        ordinal=ordinal,
        location=location,
        environment=config.environment(spec.env, revision.config),
        config_version=revision.config_version,
        revision=revision.number,
    )


@dataclass(frozen=True, slots=True)
class Failure:
    replica: aci.Replica
    verdict: Verdict


class Roller:
    """Replaces stale replicas of one service with its newest revision."""

    def __init__(self, gateway: AciGateway, location: str, poll: float) -> None:
        self._gateway = gateway
        self._location = location
        self._poll = poll

    async def roll(self, record: ServiceRecord, stale: Sequence[aci.Replica]) -> Failure | None:
        """Replace ``stale`` in ordinal order; the first that fails is put back and
        returned (None: every one runs the newest revision)."""
        target = record.current
        if target is None:
            return None
        deadline = record.progress_deadline_seconds
        for replica in sorted(stale, key=lambda r: r.ordinal):
            verdict = await self._replace(replica, target, deadline)
            if verdict is not None:
                await self._put_back(replica, record)
                return Failure(replica, verdict)
        return None

    async def _replace(
        self, replica: aci.Replica, target: Revision, deadline: float
    ) -> Verdict | None:
        wait = min(deadline, remaining_timeout(deadline + CALL_RESERVE) - CALL_RESERVE)
        if wait <= 0:
            return Verdict(
                ErrorReason.PROGRESS_DEADLINE_EXCEEDED,
                "the call's deadline left no time to replace a replica",
            )
        gateway = self._gateway
        await gateway.delete(replica.name)
        try:
            await gateway.create(replica.name, build(target, replica.ordinal, self._location))
        except BackendQuotaExceeded as exc:
            return Verdict(ErrorReason.BACKEND_QUOTA_EXCEEDED, exc.message)
        except BackendRejectedError as exc:
            return Verdict(ErrorReason.BACKEND_REJECTED, exc.message)
        return await self._await_running(replica.name, target.number, wait)

    async def _await_running(self, name: str, number: int, wait: float) -> Verdict | None:
        ends = time.monotonic() + wait
        detail = "not created yet"
        while True:
            group = await self._gateway.get(name)
            found = group_failure(group)
            if found is not None:
                return found
            state, detail = running_state(group) if group is not None else ("pending", detail)
            if state == "running":
                return None
            if time.monotonic() + self._poll >= ends:
                return Verdict(
                    ErrorReason.PROGRESS_DEADLINE_EXCEEDED,
                    f"replica {name} of revision {number} was not running within {wait:g}s "
                    f"(spec.progress_deadline, or the call's deadline): {detail}",
                )
            await asyncio.sleep(self._poll)

    async def _put_back(self, replica: aci.Replica, record: ServiceRecord) -> None:
        """Recreate ``replica`` as the revision it ran; best effort (the failure being
        reported matters more): a put-back that fails is logged, and ``start`` again
        creates the missing replica."""
        before = record.find(revision_of(replica))
        gateway = self._gateway
        try:
            await gateway.delete(replica.name)
            if before is not None:
                group = build(before, replica.ordinal, self._location)
            elif not config.unreadable_secrets(config.read_config(replica.group)):
                group = aci.clone_group(replica.group, ordinal=replica.ordinal)
            else:
                log.warning("cannot put %s back: its secret values are unknown", replica.name)
                return
            await gateway.create(replica.name, group, wait=replica.stopped)
            if replica.stopped:
                fresh = aci.as_replica(await gateway.get(replica.name) or group)
                if fresh is not None:
                    await gateway.stop(fresh)
        except InfrastructureProviderError as exc:
            log.warning("could not put replica %s back: %s", replica.name, exc.message)
