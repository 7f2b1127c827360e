"""Revisions of an ECS service: the task-definition revisions of its family.

Every change of what a service runs is one RegisterTaskDefinition in the service's
family (``alphaswarm_<namespace>_<service>``), deployed with UpdateService: a start
whose spec differs in anything but ``replicas``, ``progress_deadline`` and
``auto_rollback``, an apply_config that changes the config (the new revision names
the new config generation), a rollback. The revision *number* is ECS's own revision
number of that task definition, so every controller reads the same one from ECS
itself. Numbers only grow (ECS never reuses one); they are dense from 1 for a new
service, and skip only where a registration was deregistered before it ran (a change
that failed half-way). ``change_cause``, ``rollback_of`` and ``automatic`` are in the
registration itself (taskdef.py, ``alphaswarm.revision``).

History is the ACTIVE task definitions of the family: the newest
``ALPHASWARM_AWS_REVISION_HISTORY`` (default 10) are kept; each change deregisters
and deletes older ones (never one a deployment still runs; "Existing tasks and
services that reference an INACTIVE task definition continue to run",
DeregisterTaskDefinition), and sweeps their config generations and claims.

A change holds the claim (claims.py) of the revision it starts from: changes of one
service are serialised across controllers, and ``expected_revision`` is a true
check-and-set. A rollback registers the target revision's spec (and restores its
config generation as the next one) as a new revision with ``rollback_of``.

Rollouts are ECS deployments, judged by rollout.py. What the provider does about
them happens when it reads them (GetDeploymentStatus, WatchDeployment's polls) or
before a change, as the controller keeps no loop of its own:

* ECS's circuit breaker (with ``auto_rollback``) rolled the service back to the
  revision C it ran before the failed N: the read records that as revision N+1, a
  copy of C with ``rollback_of`` C and ``automatic``, and deploys it (ECS replaces
  the tasks once more, with identical ones). Until then the status shows N FAILED.
* a failure the breaker does not see (CRASH_LOOP, a stalled rollout) with
  ``auto_rollback``: the read rolls back to the last revision known to have served,
  as an automatic revision, unless the failed revision is itself automatic.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from alphaswarm_core.call import current_change
from alphaswarm_core.providers.concurrency import remaining_timeout
from alphaswarm_core.providers.protocol import (
    BackendConflictError,
    ConfigMapPatch,
    Definition,
    DeploymentNotFoundError,
    DeploymentSpec,
    DeploymentStatus,
    InfrastructureProviderError,
    Revision,
    RevisionConflict,
    RevisionNotFound,
    ServiceConfig,
)

from .claims import DONE, Claim, RevisionClaims
from .clients import JsonDict
from .config import SsmConfig, base_path
from .ecs import EcsDeployments, Evidence
from .rollout import Judgement, primary_deployment
from .taskdef import (
    EcsPlan,
    RevisionFacts,
    auto_rollback_of,
    config_path_of,
    deadline_of,
    facts_of,
    parse_service_name,
    revision_number,
    same_family,
    service_name,
    spec_hash_of,
    spec_of,
    with_config_path,
    with_facts,
)

log = logging.getLogger(__name__)

DEFAULT_HISTORY = 10
WAIT_SECONDS = 20.0
"""How long a change waits for another controller's change of the same service."""
POLL_SECONDS = 0.5
LIST_PAGE_SIZE = 100
DELETE_BATCH = 10
CONFIG_CACHE = 128

Planner = Callable[[DeploymentSpec], EcsPlan]
Work = Callable[[JsonDict | None, Claim], int]


@dataclass(frozen=True, slots=True)
class Observed:
    service: JsonDict
    status: DeploymentStatus
    judgement: Judgement


class EcsRevisions:
    """The revision side of one provider's ECS services."""

    def __init__(
        self,
        ecs: EcsDeployments,
        store: SsmConfig,
        claims: RevisionClaims,
        planner: Planner,
        *,
        history: int = DEFAULT_HISTORY,
    ) -> None:
        self.ecs = ecs
        self.store = store
        self.claims = claims
        self.planner = planner
        self.history = history
        self._configs: OrderedDict[tuple[str, str, str], tuple[str, dict[str, str]]] = OrderedDict()

    # -- reads ------------------------------------------------------------------------------

    def _rolled_back(self, service: JsonDict) -> tuple[int, datetime | None]:
        """(N, when N was registered) when ECS rolled ``service`` back from revision N (the
        newest), else (0, None): the service runs an older revision than the newest, and
        the claim of the revision it runs says a change to a newer one was deployed."""
        name = str(service["serviceName"])
        running = revision_number(str(service.get("taskDefinition", "")))
        newest = self.ecs.latest_revision(name)
        number = revision_number(str(newest["taskDefinitionArn"])) if newest else 0
        if newest is None or number <= running:
            return 0, None
        parsed = _parse(name)
        for record in reversed(self.claims.records(base_path(*parsed), running)):
            if record.busy:
                return 0, None  # a change from it is on its way
            if record.state == DONE:
                if record.target <= running:
                    return 0, None
                registered = newest.get("registeredAt")
                return number, registered if isinstance(registered, datetime) else None
        return 0, None

    def observe(self, namespace: str, service_id: str) -> Observed:
        service = self.ecs.require(namespace, service_id)
        name = str(service["serviceName"])
        tasks = self.ecs.tasks(name).get(name, [])
        rolled_back_from, since = self._rolled_back(service)
        stopped: list[JsonDict] = []
        running = sum(1 for task in tasks if task.get("lastStatus") == "RUNNING")
        short = running < int(service.get("desiredCount", 0))
        if (
            rolled_back_from
            or short
            or primary_deployment(service).get("rolloutState") != "COMPLETED"
        ):
            stopped = self.ecs.stopped_tasks(name)
        status, judgement = self.ecs.status_of(
            service,
            tasks,
            namespace,
            service_id,
            Evidence(tuple(stopped), rolled_back_from, since),
        )
        return Observed(service, status, judgement)

    def revision_at(self, service: JsonDict | None) -> int:
        """The service's current revision as its status shows it (0: no service)."""
        if service is None:
            return 0
        rolled_back_from, _ = self._rolled_back(service)
        return rolled_back_from or revision_number(str(service.get("taskDefinition", "")))

    def check_expected(self, namespace: str, service_id: str) -> None:
        """The caller's ``expected_revision`` against the service, for changes that make no
        revision (scale, stop, delete): a read, then the change."""
        expected = current_change().expected_revision
        if expected:
            service = self.ecs.describe_one(namespace, service_id)
            RevisionConflict.check(service_id, namespace, expected, self.revision_at(service))

    def _config(self, namespace: str, service_id: str, path: str) -> tuple[str, dict[str, str]]:
        """A generation's version and data (masked); generations never change."""
        key = (namespace, service_id, path)
        cached = self._configs.get(key)
        if cached is None:
            cached = self.store.data_at(namespace, service_id, path)
            self._configs[key] = cached
            while len(self._configs) > CONFIG_CACHE:
                self._configs.popitem(last=False)
        return cached[0], dict(cached[1])

    def _with_policy(self, spec: DeploymentSpec, service: JsonDict) -> DeploymentSpec:
        return replace(
            spec,
            progress_deadline_seconds=deadline_of(list(service.get("tags", []))),
            auto_rollback=auto_rollback_of(service),
        )

    def definition(self, namespace: str, service_id: str) -> Definition:
        service = self.ecs.require(namespace, service_id)
        name = str(service["serviceName"])
        number = self.revision_at(service)
        described = self.ecs.task_definition(f"{name}:{number}")
        spec = spec_of(
            described, namespace, service_id, replicas=int(service.get("desiredCount", 0))
        )
        version, data = self._config(namespace, service_id, config_path_of(described))
        return Definition(self._with_policy(spec, service), data, version, number)

    def _active(self, family: str) -> list[str]:
        """ARNs of the family's ACTIVE revisions, newest first."""
        arns: list[str] = []
        for page in self.ecs.clients.pages(
            "ecs",
            "ListTaskDefinitions",
            familyPrefix=family,
            status="ACTIVE",
            sort="DESC",
            maxResults=LIST_PAGE_SIZE,
        ):
            arns.extend(a for a in page.get("taskDefinitionArns", []) if same_family(a, family))
        return sorted(arns, key=revision_number, reverse=True)

    def list_revisions(self, namespace: str, service_id: str) -> list[Revision]:
        self.ecs.require(namespace, service_id)
        revisions = []
        for arn in self._active(service_name(namespace, service_id)):
            described = self.ecs.task_definition(arn)
            facts = facts_of(described)
            version, data = self._config(namespace, service_id, config_path_of(described))
            registered = described.get("registeredAt")
            revisions.append(
                Revision(
                    number=revision_number(arn),
                    spec=spec_of(described, namespace, service_id),
                    config=data,
                    config_version=version,
                    created_at=registered
                    if isinstance(registered, datetime)
                    else datetime.fromtimestamp(0, UTC),
                    change_cause=facts.change_cause,
                    rollback_of=facts.rollback_of,
                    automatic=facts.automatic,
                )
            )
        return revisions

    def _target(self, namespace: str, service_id: str, number: int) -> JsonDict:
        """Revision ``number`` of the service, while it is in the history."""
        family = service_name(namespace, service_id)
        if number <= 0 or f"{family}:{number}" not in {
            a.rsplit("/", 1)[-1] for a in self._active(family)
        }:
            raise RevisionNotFound(service_id, namespace, number)
        return self.ecs.task_definition(f"{family}:{number}")

    # -- the claim a change holds -----------------------------------------------------------

    def _changing(
        self,
        namespace: str,
        service_id: str,
        work: Work,
        *,
        expected: int,
        wait: bool = True,
    ) -> int | None:
        """Run ``work`` on the service (None: absent) holding the claim of the revision it is
        at; the revision it made (0: none). Without ``wait``, None when another change is
        on its way; with it, that change is waited for (bounded) and the service read
        again."""
        base = base_path(namespace, service_id)
        deadline = time.monotonic() + min(WAIT_SECONDS, remaining_timeout(WAIT_SECONDS))
        while True:
            service = self.ecs.describe_one(namespace, service_id)
            at = revision_number(str(service["taskDefinition"])) if service else 0
            RevisionConflict.check(service_id, namespace, expected, at)
            claim = self.claims.try_claim(base, at)
            if claim is None:
                if not wait:
                    return None
                if time.monotonic() + POLL_SECONDS > deadline:
                    raise BackendConflictError(
                        f"another change of {namespace}/{service_id} is in progress; retry",
                        metadata={"revision": str(at)},
                    )
                time.sleep(POLL_SECONDS)
                continue
            try:
                again = self.ecs.describe_one(namespace, service_id)
                if (revision_number(str(again["taskDefinition"])) if again else 0) != at:
                    claim.abort()  # it moved between the read and the claim
                    continue
                made = work(again, claim)
            except BaseException:
                claim.abort()
                raise
            if made and made != at:
                claim.done(made)
            else:
                claim.abort()
            return made

    def _deploy(
        self,
        service: JsonDict,
        claim: Claim,
        registration: JsonDict,
        tags: list[dict[str, str]],
        *,
        plan: EcsPlan | None = None,
        replicas: int | None = None,
    ) -> int:
        """Register ``registration`` (a new revision) and deploy it onto ``service``."""
        if not claim.check_time():
            raise BackendConflictError("the change took longer than its claim; retry")
        arn = self.ecs.register(registration, tags)
        try:
            self.ecs.update_service(service, plan=plan, replicas=replicas, task_definition=arn)
        except BaseException:
            self.ecs.deregister(arn)
            raise
        return revision_number(arn)

    def _config_for(self, namespace: str, service_id: str, path: str) -> str:
        """``path`` when it is the current generation, else its data restored as the next."""
        generation = self.store.restore(namespace, service_id, path)
        return generation.path(base_path(namespace, service_id))

    def _restore(
        self,
        service: JsonDict | None,
        claim: Claim,
        target: JsonDict,
        facts: RevisionFacts,
        *,
        literal: bool,
    ) -> int:
        """A new revision running ``target``'s spec and config. ``literal``: its very
        registration (what ECS rolled back to), the service's network left alone."""
        namespace, service_id = _parse(str(target["family"]))
        if service is None:
            raise DeploymentNotFoundError(service_id, namespace)
        path = self._config_for(namespace, service_id, config_path_of(target))
        if literal:
            registration = with_facts(with_config_path(target, path), facts)
            return self._deploy(service, claim, registration, list(target.get("tags", [])))
        spec = spec_of(target, namespace, service_id, replicas=int(service.get("desiredCount", 0)))
        plan = self.planner(self._with_policy(spec, service))
        registration = with_facts(plan.registration(path), facts)
        made = self._deploy(service, claim, registration, plan.tags, plan=plan)
        self.ecs.sync_tags(service, plan)
        return made

    # -- acting on rollouts -----------------------------------------------------------------

    def settle(self, namespace: str, service_id: str, *, strict: bool = True) -> bool:
        """Record a rollback ECS made as a revision (see the module doc); whether it did."""
        observed = self.observe(namespace, service_id)
        return self._record(observed, strict=strict)

    def _record(self, observed: Observed, *, strict: bool) -> bool:
        judgement, service = observed.judgement, observed.service
        running = revision_number(str(service["taskDefinition"]))
        if judgement.revision == running or judgement.rollout is None:
            return False
        namespace, service_id = observed.status.namespace, observed.status.service_id
        target = self.ecs.task_definition(str(service["taskDefinition"]))
        facts = RevisionFacts(
            change_cause=f"auto_rollback: revision {judgement.revision} failed "
            f"({judgement.rollout.reason})",
            rollback_of=running,
            automatic=True,
        )

        def work(now: JsonDict | None, claim: Claim) -> int:
            if now is None or revision_number(str(now["taskDefinition"])) != running:
                return 0  # it moved since it was observed: nothing of this to record
            return self._restore(now, claim, target, facts, literal=True)

        made = self._changing(namespace, service_id, work, expected=0, wait=strict)
        if made:
            self.trim(namespace, service_id, config_changed=True)
        return bool(made)

    def _auto_rollback(self, observed: Observed) -> bool:
        """Roll a service whose rollout failed unseen by ECS back to its last good revision
        when its spec asks for it."""
        judgement, service = observed.judgement, observed.service
        if not (judgement.failed and judgement.good and auto_rollback_of(service)):
            return False
        current = self.ecs.task_definition(str(service["taskDefinition"]))
        if facts_of(current).automatic:
            return False  # an automatic revision that fails is not rolled back again
        namespace, service_id = observed.status.namespace, observed.status.service_id
        try:
            target = self._target(namespace, service_id, judgement.good)
        except RevisionNotFound:
            return False
        assert judgement.rollout is not None
        facts = RevisionFacts(
            change_cause=f"auto_rollback: revision {judgement.revision} failed "
            f"({judgement.rollout.reason})",
            rollback_of=judgement.good,
            automatic=True,
        )
        made = self._changing(
            namespace,
            service_id,
            lambda now, claim: self._restore(now, claim, target, facts, literal=False),
            expected=judgement.revision,
            wait=False,
        )
        if made:
            self.trim(namespace, service_id, config_changed=True)
        return bool(made)

    def status(self, namespace: str, service_id: str) -> DeploymentStatus:
        """The status, after acting on what it shows (a rollback ECS made is recorded; a
        failed rollout with ``auto_rollback`` is rolled back). Acting is best effort: a
        failure leaves it to the next read and the status is returned all the same."""
        observed = self.observe(namespace, service_id)
        try:
            acted = self._record(observed, strict=False) or self._auto_rollback(observed)
        except InfrastructureProviderError as exc:
            log.warning("could not act on the rollout of %s/%s: %s", namespace, service_id, exc)
            acted = False
        return self.observe(namespace, service_id).status if acted else observed.status

    # -- changes ----------------------------------------------------------------------------

    def start(self, spec: DeploymentSpec, plan: EcsPlan) -> None:
        namespace, service_id = spec.namespace, spec.service_id
        existing = self.ecs.prepare(spec, plan)
        if existing is not None and self.settle(namespace, service_id):
            existing = self.ecs.require(namespace, service_id)
        change = current_change()
        if existing is not None:
            running = self.ecs.task_definition(str(existing["taskDefinition"]))
            if spec_hash_of(running) == plan.spec_hash:  # what runs: no revision
                RevisionConflict.check(
                    service_id, namespace, change.expected_revision, self.revision_at(existing)
                )
                self._converge(existing, spec, plan)
                return
        facts = RevisionFacts(change_cause=change.change_cause)

        def work(service: JsonDict | None, claim: Claim) -> int:
            if service is None:
                path = self.store.current(namespace, service_id).path(
                    base_path(namespace, service_id)
                )
                registration = with_facts(plan.registration(path), facts)
                if not claim.check_time():
                    raise BackendConflictError("the change took longer than its claim; retry")
                arn = self.ecs.register(registration, plan.tags)
                try:
                    self.ecs.create_service(spec, plan, arn)
                except BaseException:
                    self.ecs.deregister(arn)
                    raise
                return revision_number(arn)
            running = self.ecs.task_definition(str(service["taskDefinition"]))
            if spec_hash_of(running) == plan.spec_hash:
                self._converge(service, spec, plan)
                return 0
            registration = with_facts(plan.registration(config_path_of(running)), facts)
            made = self._deploy(
                service, claim, registration, plan.tags, plan=plan, replicas=spec.replicas
            )
            self.ecs.sync_tags(service, plan)
            return made

        made = self._changing(namespace, service_id, work, expected=change.expected_revision)
        if made:
            self.trim(namespace, service_id)

    def _converge(self, service: JsonDict, spec: DeploymentSpec, plan: EcsPlan) -> None:
        """Bring a service that runs ``spec`` already to its replicas, network, policy and
        labels; a start of the spec whose deployment ECS failed deploys it again."""
        changed = self.ecs.update_service(service, plan=plan, replicas=spec.replicas)
        if not changed and primary_deployment(service).get("rolloutState") == "FAILED":
            self.ecs.retry_deployment(service)
        self.ecs.sync_tags(service, plan)

    def apply_config(self, patch: ConfigMapPatch) -> ServiceConfig:
        """Commit the new config generation and roll the service onto it as a new revision
        (the running revision's registration, naming the new generation)."""
        namespace, service_id = patch.namespace, patch.service_id
        self.ecs.require(namespace, service_id)
        self.settle(namespace, service_id)
        change = current_change()
        facts = RevisionFacts(change_cause=change.change_cause)
        applied: list[ServiceConfig] = []

        def work(service: JsonDict | None, claim: Claim) -> int:
            if service is None:
                raise DeploymentNotFoundError(service_id, namespace)
            config, generation = self.store.apply(patch)
            applied.append(config)
            path = generation.path(base_path(namespace, service_id))
            running = self.ecs.task_definition(str(service["taskDefinition"]))
            if config_path_of(running) == path:
                return 0
            registration = with_facts(with_config_path(running, path), facts)
            return self._deploy(service, claim, registration, list(running.get("tags", [])))

        made = self._changing(namespace, service_id, work, expected=change.expected_revision)
        if made:
            self.trim(namespace, service_id, config_changed=True)
        return applied[-1]

    def rollback(self, namespace: str, service_id: str, to_revision: int) -> None:
        """A new revision running revision ``to_revision`` (0: the one before the newest)."""
        self.ecs.require(namespace, service_id)
        self.settle(namespace, service_id)
        if to_revision == 0:
            active = self._active(service_name(namespace, service_id))
            if len(active) < 2:
                raise RevisionNotFound(service_id, namespace, 0)
            to_revision = revision_number(active[1])
        target = self._target(namespace, service_id, to_revision)
        change = current_change()
        facts = RevisionFacts(change_cause=change.change_cause, rollback_of=to_revision)
        made = self._changing(
            namespace,
            service_id,
            lambda service, claim: self._restore(service, claim, target, facts, literal=False),
            expected=change.expected_revision,
        )
        if made:
            self.trim(namespace, service_id, config_changed=True)

    # -- history ----------------------------------------------------------------------------

    def trim(self, namespace: str, service_id: str, *, config_changed: bool = False) -> None:
        """Keep the newest ``history`` revisions (and any a deployment runs); deregister and
        delete older ones, their claims and the config generations only they named
        (swept when some left the history or the config changed). Best effort: what is
        left is trimmed by the next change."""
        family = service_name(namespace, service_id)
        base = base_path(namespace, service_id)
        try:
            active = self._active(family)
            service = self.ecs.describe_one(namespace, service_id)
            used = {str(d.get("taskDefinition")) for d in (service or {}).get("deployments", [])}
            used.add(str((service or {}).get("taskDefinition")))
            kept = active[: self.history]
            doomed = [a for a in active[self.history :] if a not in used]
            kept += [a for a in active[self.history :] if a in used]
            for arn in doomed:
                self.ecs.clients.call("ecs", "DeregisterTaskDefinition", taskDefinition=arn)
            for start in range(0, len(doomed), DELETE_BATCH):
                self.ecs.clients.call(
                    "ecs",
                    "DeleteTaskDefinitions",
                    taskDefinitions=doomed[start : start + DELETE_BATCH],
                )
            if doomed and kept:
                self.claims.trim(base, min(revision_number(a) for a in kept))
            if doomed or config_changed:
                paths = [config_path_of(self.ecs.task_definition(a)) for a in kept]
                current = self.store.current(namespace, service_id)
                self.store.sweep(namespace, service_id, current, paths)
        except InfrastructureProviderError as exc:
            log.warning("could not trim the history of %s/%s: %s", namespace, service_id, exc)


def _parse(name: str) -> tuple[str, str]:
    """(namespace, service_id) of one of this provider's service or family names."""
    parsed = parse_service_name(name)
    if parsed is None:  # pragma: no cover - names come from this provider
        raise ValueError(f"not an alphaswarm service: {name}")
    return parsed
