"""Plans: what a change would do, computed from what a service runs now, changing nothing.

Every provider with revisions gives its current ``Definition`` (spec, config,
revision); the plan of a start, scale, config patch or rollback is the same
computation everywhere, so it lives here once. Field changes name dotted paths
(``spec.image``, ``spec.env['MODE']``, ``config['LEVEL']``); the values of secret
config keys are masked on both sides, so a plan can be shown to anyone who may
read the service.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import replace

from .models import (
    SECRET_MASK,
    ConfigMapPatch,
    Definition,
    DeploymentSpec,
    FieldChange,
    Plan,
    PlanAction,
    Revision,
    is_secret_key,
)


def plan_start(current: Definition | None, spec: DeploymentSpec) -> Plan:
    if current is None:
        return Plan(0, PlanAction.CREATE, tuple(spec_changes(None, spec)))
    changes = spec_changes(current.spec, spec)
    if not spec.runs_as(current.spec):
        action = PlanAction.REPLACE
    elif spec.replicas != current.spec.replicas:
        action = PlanAction.IN_PLACE
    else:
        action = PlanAction.NOTHING  # the same thing, perhaps with another rollout policy
    return Plan(current.revision, action, tuple(changes))


def plan_scale(current: Definition, replicas: int) -> Plan:
    if replicas == current.spec.replicas:
        return Plan(current.revision, PlanAction.NOTHING)
    change = FieldChange("spec.replicas", str(current.spec.replicas), str(replicas))
    return Plan(current.revision, PlanAction.IN_PLACE, (change,))


def plan_config(current: Definition, patch: ConfigMapPatch) -> Plan:
    changes = config_changes(current.config, patch.applied_to(current.config))
    action = PlanAction.ROLLING_RESTART if changes else PlanAction.NOTHING
    return Plan(current.revision, action, tuple(changes))


def plan_rollback(current: Definition, target: Revision) -> Plan:
    """Back to ``target``'s spec and config, at the current replica count."""
    spec = replace(target.spec, replicas=current.spec.replicas)
    changes = [*spec_changes(current.spec, spec), *config_changes(current.config, target.config)]
    if not spec.runs_as(current.spec):
        action = PlanAction.REPLACE
    elif changes:
        action = PlanAction.ROLLING_RESTART
    else:
        action = PlanAction.NOTHING
    return Plan(current.revision, action, tuple(changes))


def spec_changes(old: DeploymentSpec | None, new: DeploymentSpec) -> list[FieldChange]:
    """Field by field, maps key by key. ``old`` None: every field the new spec sets."""
    changes: list[FieldChange] = []
    # A new service: what it sets beyond the defaults, from nothing.
    before = _scalars(old or DeploymentSpec(new.service_id, new.namespace))
    for path, after in _scalars(new).items():
        if before[path] != after:
            shown = "" if old is None else _text(before[path])
            changes.append(FieldChange(path, shown, _text(after)))
    for name in ("env", "labels", "provider_options"):
        _mapping(changes, f"spec.{name}", getattr(old, name) if old else {}, getattr(new, name))
    return changes


def _scalars(spec: DeploymentSpec) -> dict[str, object]:
    return {
        "spec.image": spec.image,
        "spec.command": spec.command,
        "spec.replicas": spec.replicas,
        "spec.ports": spec.ports,
        "spec.resources.cpu": spec.resources.cpu,
        "spec.resources.memory": spec.resources.memory,
        "spec.progress_deadline": spec.progress_deadline_seconds,
        "spec.auto_rollback": spec.auto_rollback,
    }


def config_changes(old: Mapping[str, str], new: Mapping[str, str]) -> list[FieldChange]:
    changes: list[FieldChange] = []
    _mapping(changes, "config", old, new, secret=is_secret_key)
    return changes


def _mapping(
    changes: list[FieldChange],
    path: str,
    old: Mapping[str, str],
    new: Mapping[str, str],
    *,
    secret: Callable[[str], bool] = lambda _: False,
) -> None:
    for key in sorted({*old, *new}):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        hide = secret(key)
        changes.append(
            FieldChange(
                f"{path}[{key!r}]",
                "" if before is None else (SECRET_MASK if hide else before),
                "" if after is None else (SECRET_MASK if hide else after),
            )
        )


def _text(value: object) -> str:
    """A field's value as a plan shows it: scalars as they are, sequences as JSON."""
    if value is None or value == "":
        return ""
    if isinstance(value, tuple):
        return json.dumps([_plain(item) for item in value])
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}s"
    return str(value)


def _plain(item: object) -> object:
    fields = getattr(item, "__dataclass_fields__", None)
    if fields is None:
        return item
    return {name: getattr(item, name) for name in fields}
