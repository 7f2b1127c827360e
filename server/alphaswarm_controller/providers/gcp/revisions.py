"""What a Cloud Run revision records for the controller (pure functions, no I/O).

Every change of what a service runs is one new Cloud Run revision: the provider
changes the service's template (``RevisionTemplate``), and Cloud Run creates a revision
from it. Cloud Run names revisions itself (``<service>-<5 digits>-<suffix>``), so the
controller's number (1, 2, 3... per service) and what it knows of the change travel in
the template's annotations, which Cloud Run copies onto the revision it creates
(``Revision.annotations``, revision.proto) and never changes afterwards:

* ``alphaswarm.dev/revision``: the number, one more than the number the template it
  replaces carried. The update that writes it carries the etag of the service it was
  read with (AIP-154), so two controllers that read the same number cannot both write
  the next one: the second is ABORTED, reads again and sees the new number;
* ``alphaswarm.dev/change-cause``, ``alphaswarm.dev/rollback-of``,
  ``alphaswarm.dev/automatic``: the caller's change cause, the revision a rollback
  restored, whether the controller made it on its own (auto_rollback);
* ``alphaswarm.dev/spec``: what Cloud Run does not keep as given (the spec's labels,
  ports and resources as the caller wrote them: Cloud Run keeps normalised limits and
  may fill in a default port), as compact JSON. Image, command and env are the container's.

Annotations, not labels: label values are at most 63 lowercase letters, digits, ``_``
and ``-`` (Google Cloud label rules), which no free-text change cause fits; template
annotations "follow Kubernetes annotations' namespacing, limits, and rules"
(revision_template.proto), whose values take any string. The prefix is not one of the
namespaces Cloud Run v2 rejects (``run.googleapis.com``, ``cloud.googleapis.com``,
``serving.knative.dev``, ``autoscaling.knative.dev``, same comment).

The rollout policy (``progress_deadline``, ``auto_rollback``) changes no revision, so it
is in the *service's* annotations (``alphaswarm.dev/progress-deadline``,
``alphaswarm.dev/auto-rollback``), as the replica count is in the service's scaling.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from google.cloud import run_v2

from alphaswarm_core.providers.models import (
    DEFAULT_PROGRESS_DEADLINE_SECONDS,
    DeploymentSpec,
    PortSpec,
    Resources,
)

PREFIX = "alphaswarm.dev/"
NUMBER_KEY = f"{PREFIX}revision"
CHANGE_CAUSE_KEY = f"{PREFIX}change-cause"
ROLLBACK_OF_KEY = f"{PREFIX}rollback-of"
AUTOMATIC_KEY = f"{PREFIX}automatic"
SPEC_KEY = f"{PREFIX}spec"
#: The facts of one revision: what changes with every revision, not with what it runs.
FACT_KEYS = frozenset({NUMBER_KEY, CHANGE_CAUSE_KEY, ROLLBACK_OF_KEY, AUTOMATIC_KEY})
DEADLINE_KEY = f"{PREFIX}progress-deadline"
AUTO_ROLLBACK_KEY = f"{PREFIX}auto-rollback"
POLICY_KEYS = frozenset({DEADLINE_KEY, AUTO_ROLLBACK_KEY})


@dataclass(frozen=True, slots=True)
class RevisionFacts:
    """What a revision records beside what it runs."""

    number: int
    change_cause: str = ""
    rollback_of: int = 0
    automatic: bool = False


def _int(text: str | None) -> int:
    try:
        value = int(text or 0)
    except ValueError:
        return 0
    return max(value, 0)


def facts_of(annotations: Mapping[str, str]) -> RevisionFacts:
    """The facts in a template's or a revision's annotations (number 0: none recorded)."""
    return RevisionFacts(
        number=_int(annotations.get(NUMBER_KEY)),
        change_cause=str(annotations.get(CHANGE_CAUSE_KEY, "")),
        rollback_of=_int(annotations.get(ROLLBACK_OF_KEY)),
        automatic=annotations.get(AUTOMATIC_KEY) == "true",
    )


def number_of(template: run_v2.RevisionTemplate) -> int:
    """The revision number a service's template carries (0: none, a service made before
    the controller kept revisions or by someone else)."""
    return facts_of(template.annotations).number


def with_facts(annotations: Mapping[str, str], facts: RevisionFacts) -> dict[str, str]:
    """``annotations`` with ``facts`` in place of any the template had."""
    kept = {k: v for k, v in annotations.items() if k not in FACT_KEYS}
    kept[NUMBER_KEY] = str(facts.number)
    if facts.change_cause:
        kept[CHANGE_CAUSE_KEY] = facts.change_cause
    if facts.rollback_of:
        kept[ROLLBACK_OF_KEY] = str(facts.rollback_of)
    if facts.automatic:
        kept[AUTOMATIC_KEY] = "true"
    return kept


def spec_record(spec: DeploymentSpec) -> str:
    """The part of ``spec`` the template keeps in ``alphaswarm.dev/spec``."""
    return json.dumps(
        {
            "labels": dict(sorted(spec.labels.items())),
            "ports": [[p.container_port, p.host_port, p.protocol] for p in spec.ports],
            "resources": [spec.resources.cpu, spec.resources.memory],
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def _record(raw: str) -> dict[str, Any]:
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _strings(value: object) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _ports(value: object) -> tuple[PortSpec, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(
        PortSpec(int(p[0]), int(p[1]), str(p[2]))
        for p in value
        if isinstance(p, list) and len(p) == 3
    )


def spec_of(
    containers: Sequence[run_v2.Container],
    annotations: Mapping[str, str],
    namespace: str,
    service_id: str,
    *,
    config_env: str,
    replicas: int = 0,
) -> DeploymentSpec:
    """The spec a template (or a revision made from one) runs, at ``replicas``.

    ``containers`` and ``annotations`` are a ``RevisionTemplate``'s or a ``Revision``'s
    (the two messages share these fields). Without the spec record (a template written
    before it) the ports and limits are read back as Cloud Run keeps them."""
    container = containers[0] if containers else run_v2.Container()
    record = _record(str(annotations.get(SPEC_KEY, "")))
    if record:
        ports = _ports(record.get("ports"))
        sized = record.get("resources")
        resources = (
            Resources(str(sized[0]), str(sized[1]))
            if isinstance(sized, list) and len(sized) == 2
            else Resources()
        )
    else:
        ports = tuple(PortSpec(int(p.container_port)) for p in container.ports)
        limits = container.resources.limits
        resources = Resources(str(limits.get("cpu", "")), str(limits.get("memory", "")))
    return DeploymentSpec(
        service_id=service_id,
        namespace=namespace,
        image=str(container.image),
        command=tuple(str(c) for c in [*container.command, *container.args]),
        env={str(v.name): str(v.value) for v in container.env if v.name != config_env},
        replicas=replicas,
        labels=_strings(record.get("labels")),
        ports=ports,
        resources=resources,
    )


def policy_annotations(spec: DeploymentSpec) -> dict[str, str]:
    """The service annotations of the spec's rollout policy."""
    return {
        DEADLINE_KEY: f"{spec.progress_deadline_seconds:g}",
        AUTO_ROLLBACK_KEY: "true" if spec.auto_rollback else "false",
    }


def with_policy(spec: DeploymentSpec, annotations: Mapping[str, str]) -> DeploymentSpec:
    """``spec`` with the rollout policy a service's annotations hold (defaults if none)."""
    try:
        deadline = float(annotations.get(DEADLINE_KEY, "") or DEFAULT_PROGRESS_DEADLINE_SECONDS)
    except ValueError:
        deadline = DEFAULT_PROGRESS_DEADLINE_SECONDS
    return replace(
        spec,
        progress_deadline_seconds=deadline,
        auto_rollback=annotations.get(AUTO_ROLLBACK_KEY) == "true",
    )
