"""The revision side of mutating calls: plans, expected revisions, change causes.

A mutating request may ask for a plan only (``validate_only``), make its change
conditional (``expected_revision``) and say why (``change_cause``). All three need a
provider that keeps revisions (capability ``revisions``); elsewhere they are
UNIMPLEMENTED rather than silently ignored. The plan is computed here, from the
provider's current ``Definition``, the same way for every backend
(``alphaswarm_core.providers.plans``); the check-and-set of a real change is the
provider's own, where its backend can make it atomic.
"""

from __future__ import annotations

from collections.abc import Callable

from alphaswarm_core.call import CallContext
from alphaswarm_core.providers.errors import (
    CapabilityUnsupported,
    DeploymentNotFoundError,
    RevisionConflict,
)
from alphaswarm_core.providers.models import (
    NO_CHANGE_REQUEST,
    ChangeRequest,
    Definition,
    DeploymentStatus,
    Plan,
)
from alphaswarm_core.providers.protocol import InfrastructureProvider


def keeps_revisions(provider: InfrastructureProvider) -> bool:
    return "revisions" in provider.capabilities()


async def current_definition(
    provider: InfrastructureProvider, call: CallContext
) -> Definition | None:
    try:
        return await provider.definition(call.service_id, namespace=call.namespace)
    except DeploymentNotFoundError:
        return None


async def prepare(
    provider: InfrastructureProvider,
    call: CallContext,
    change: ChangeRequest,
    validate_only: bool,
    plan_of: Callable[[Definition | None], Plan] | None,
) -> Plan | None:
    """The plan of the change (None when the provider keeps no revisions, or when the
    change has none: ``plan_of`` None, stop and delete); publishes ``change`` for the
    provider; with ``validate_only`` checks ``expected_revision``."""
    if not keeps_revisions(provider):
        if validate_only or change != NO_CHANGE_REQUEST:
            raise CapabilityUnsupported(
                provider.provider_alias,
                "revisions",
                "validate_only, expected_revision and change_cause need a provider that "
                "keeps revisions",
            )
        return None
    call.change = change
    if plan_of is None:
        return None
    plan = plan_of(await current_definition(provider, call))
    if validate_only:
        RevisionConflict.check(
            call.service_id, call.namespace, change.expected_revision, plan.revision
        )
    return plan


def existing(current: Definition | None, call: CallContext) -> Definition:
    """``current``, or the NOT_FOUND of a change that needs the service to exist."""
    if current is None:
        raise DeploymentNotFoundError(call.service_id, call.namespace)
    return current


async def status_if_any(
    provider: InfrastructureProvider, call: CallContext
) -> DeploymentStatus | None:
    try:
        return await provider.status(call.service_id, namespace=call.namespace)
    except DeploymentNotFoundError:
        return None
