"""A service's revisions as callers see them, from the definitions kept on the engine.

Every change of what a service runs (its spec through start, its config through
apply_config, a rollback) makes the next revision; a scale does not. The current
revision is the definition volume, earlier ones its revision volumes
(``history``). Pure translations live here; the provider does the engine calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from alphaswarm_core.providers import models
from alphaswarm_core.providers.models import DeploymentSpec, Revision

from .definitions import Definition
from .history import HISTORY

#: When a definition written before revisions does not say when it was made.
_UNKNOWN_TIME = datetime.fromtimestamp(0, UTC)


def spec_of(definition: Definition, replicas: int = 0) -> DeploymentSpec:
    return DeploymentSpec(
        service_id=definition.service,
        namespace=definition.project,
        image=definition.image,
        command=definition.command,
        env=dict(definition.env),
        replicas=replicas,
        labels=dict(definition.labels),
        ports=definition.ports,
        resources=definition.resources,
        provider_options=dict(definition.options),
        progress_deadline_seconds=definition.progress_deadline,
        auto_rollback=definition.auto_rollback,
    )


def revision_of(definition: Definition, config: Mapping[str, str]) -> Revision:
    """``definition`` as its revision; ``config`` is its config with secrets readable."""
    return Revision(
        number=definition.revision,
        spec=spec_of(definition),
        config=dict(config),
        config_version=str(definition.config_version),
        created_at=definition.created_at or _UNKNOWN_TIME,
        change_cause=definition.change_cause,
        rollback_of=definition.rollback_of,
        automatic=definition.automatic,
    )


def current(definition: Definition, replicas: int, config: Mapping[str, str]) -> models.Definition:
    return models.Definition(
        spec=spec_of(definition, replicas),
        config=dict(config),
        config_version=str(definition.config_version),
        revision=definition.revision,
    )


def newest(head: Definition, earlier: Sequence[Definition]) -> list[Definition]:
    """The history as callers get it: the current revision, then the kept earlier
    ones, newest first, at most ``HISTORY``."""
    return [head, *earlier][:HISTORY]


def find(head: Definition, earlier: Sequence[Definition], number: int) -> Definition | None:
    """Revision ``number`` (0: the one before the current) among the kept ones."""
    kept = newest(head, earlier)
    if number == 0:
        return kept[1] if len(kept) > 1 else None
    return next((d for d in kept if d.revision == number), None)


def restored(
    head: Definition, target: Definition, change_cause: str, *, automatic: bool = False
) -> Definition:
    """The next revision of ``head``, running what revision ``target`` ran: its spec,
    rollout policy and config (secrets as sealed then). The config version moves on
    when the config differs from the current one, as any config change does."""
    same_config = (target.config, target.secrets) == (head.config, head.secrets)
    back = replace(
        target,
        generation=head.generation,
        nonce=head.nonce,
        config_version=head.config_version if same_config else head.config_version + 1,
        revision=head.revision,
        rollout=head.rollout,
        last_good=head.last_good,
    )
    return back.as_next_revision(change_cause, rollback_of=target.revision, automatic=automatic)
