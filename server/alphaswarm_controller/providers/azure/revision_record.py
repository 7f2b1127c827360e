"""The revision record of one ACI service: what the blob holds (pure, no I/O).

Azure Container Instances has no revision object, its tags are too small for a history
(50 tags of 256 characters, shared with the caller's labels) and Azure never returns
secure environment values, so the record lives beside the container groups, in one
JSON blob per service (``revision_store``). It holds:

* ``revisions``: the newest ``history`` revisions, newest first, each with its number,
  the spec as written (replicas aside: a scale is no revision), the config data it ran
  with (secret values included: the blob is the operator's, replicas have no access to
  it), the config version, the change cause, when, ``rollback_of`` and ``automatic``;
* ``policy``: the spec's rollout policy (progress deadline, auto_rollback), which
  changes no revision;
* ``rollout``: the state of the newest revision's rollout as the call that rolled it
  left it (IN_PROGRESS, SUCCEEDED, or FAILED with its reason).

A record read back is checked field by field; anything malformed is ``RecordInvalid``
(never a crash, never a partly read record).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from alphaswarm_core.providers.models import (
    DEFAULT_PROGRESS_DEADLINE_SECONDS,
    DeploymentSpec,
    PortSpec,
    Resources,
    Revision,
    RolloutState,
)

SCHEMA = 1
MAX_MESSAGE = 500
"""Longest rollout message kept (Azure's own texts can be long)."""


class RecordInvalid(ValueError):
    """A record that is not what this module writes."""


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    revision: int
    state: RolloutState
    started_at: datetime
    reason: str = ""
    message: str = ""
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    namespace: str
    service_id: str
    revisions: tuple[Revision, ...] = ()
    """Newest first."""
    progress_deadline_seconds: float = DEFAULT_PROGRESS_DEADLINE_SECONDS
    auto_rollback: bool = False
    rollout: RolloutRecord | None = None

    @property
    def current(self) -> Revision | None:
        return self.revisions[0] if self.revisions else None

    @property
    def number(self) -> int:
        return self.revisions[0].number if self.revisions else 0

    def find(self, number: int) -> Revision | None:
        return next((r for r in self.revisions if r.number == number), None)

    def with_revision(self, revision: Revision, history: int, now: datetime) -> ServiceRecord:
        """A new newest revision (the history cut to ``history``), its rollout started."""
        kept = (revision, *self.revisions)[:history]
        started = RolloutRecord(revision.number, RolloutState.IN_PROGRESS, now)
        return replace(self, revisions=kept, rollout=started)

    def with_policy(self, spec: DeploymentSpec) -> ServiceRecord:
        return replace(
            self,
            progress_deadline_seconds=spec.progress_deadline_seconds,
            auto_rollback=spec.auto_rollback,
        )

    def finished(
        self, revision: int, state: RolloutState, reason: str = "", message: str = ""
    ) -> ServiceRecord:
        """The rollout of ``revision`` ended; unchanged when the record moved past it."""
        rollout = self.rollout
        if rollout is None or rollout.revision != revision or self.number != revision:
            return self
        ended = RolloutRecord(
            revision, state, rollout.started_at, reason, message[:MAX_MESSAGE], _now()
        )
        return replace(self, rollout=ended)


def _now() -> datetime:
    return datetime.now(UTC)


# -- JSON --------------------------------------------------------------------------------------


def spec_json(spec: DeploymentSpec) -> dict[str, Any]:
    """The spec as written, without replicas and names (the record has those)."""
    return {
        "image": spec.image,
        "command": list(spec.command),
        "env": dict(sorted(spec.env.items())),
        "labels": dict(sorted(spec.labels.items())),
        "ports": [[p.container_port, p.host_port, p.protocol] for p in spec.ports],
        "resources": [spec.resources.cpu, spec.resources.memory],
        "provider_options": dict(sorted(spec.provider_options.items())),
    }


def to_json(record: ServiceRecord) -> bytes:
    rollout = record.rollout
    body = {
        "schema": SCHEMA,
        "namespace": record.namespace,
        "service_id": record.service_id,
        "policy": {
            "progress_deadline": record.progress_deadline_seconds,
            "auto_rollback": record.auto_rollback,
        },
        "rollout": None
        if rollout is None
        else {
            "revision": rollout.revision,
            "state": rollout.state.value,
            "started_at": rollout.started_at.isoformat(),
            "reason": rollout.reason,
            "message": rollout.message,
            "finished_at": rollout.finished_at.isoformat() if rollout.finished_at else None,
        },
        "revisions": [
            {
                "number": r.number,
                "spec": spec_json(r.spec),
                "config": dict(sorted(r.config.items())),
                "config_version": r.config_version,
                "created_at": r.created_at.isoformat(),
                "change_cause": r.change_cause,
                "rollback_of": r.rollback_of,
                "automatic": r.automatic,
            }
            for r in record.revisions
        ],
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def _obj(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RecordInvalid(f"{what} is not an object")
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise RecordInvalid(f"{what} is not a string")
    return value


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RecordInvalid(f"{what} is not a non-negative integer")
    return value


def _strings(value: object, what: str) -> dict[str, str]:
    found = _obj(value, what)
    return {_str(k, what): _str(v, what) for k, v in found.items()}


def _time(value: object, what: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(_str(value, what))
    except ValueError as exc:
        raise RecordInvalid(f"{what} is not a time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _spec(value: object, namespace: str, service_id: str) -> DeploymentSpec:
    body = _obj(value, "spec")
    ports = body.get("ports", [])
    resources = body.get("resources", ["", ""])
    if not isinstance(ports, list) or not isinstance(resources, list) or len(resources) != 2:
        raise RecordInvalid("spec ports or resources malformed")
    parsed_ports = []
    for port in ports:
        if not isinstance(port, list) or len(port) != 3:
            raise RecordInvalid("spec port malformed")
        parsed_ports.append(
            PortSpec(_int(port[0], "port"), _int(port[1], "port"), _str(port[2], "protocol"))
        )
    command = body.get("command", [])
    if not isinstance(command, list):
        raise RecordInvalid("spec command malformed")
    return DeploymentSpec(
        service_id=service_id,
        namespace=namespace,
        image=_str(body.get("image", ""), "image"),
        command=tuple(_str(c, "command") for c in command),
        env=_strings(body.get("env", {}), "env"),
        replicas=0,
        labels=_strings(body.get("labels", {}), "labels"),
        ports=tuple(parsed_ports),
        resources=Resources(_str(resources[0], "cpu"), _str(resources[1], "memory")),
        provider_options=_strings(body.get("provider_options", {}), "provider_options"),
    )


def _revision(value: object, namespace: str, service_id: str) -> Revision:
    body = _obj(value, "revision")
    automatic = body.get("automatic", False)
    if not isinstance(automatic, bool):
        raise RecordInvalid("automatic is not a boolean")
    return Revision(
        number=_int(body.get("number"), "number"),
        spec=_spec(body.get("spec"), namespace, service_id),
        config=_strings(body.get("config", {}), "config"),
        config_version=_str(body.get("config_version", "0"), "config_version"),
        created_at=_time(body.get("created_at"), "created_at"),
        change_cause=_str(body.get("change_cause", ""), "change_cause"),
        rollback_of=_int(body.get("rollback_of", 0), "rollback_of"),
        automatic=automatic,
    )


def _rollout(value: object) -> RolloutRecord | None:
    if value is None:
        return None
    body = _obj(value, "rollout")
    try:
        state = RolloutState(_str(body.get("state"), "state"))
    except ValueError as exc:
        raise RecordInvalid("rollout state unknown") from exc
    finished = body.get("finished_at")
    return RolloutRecord(
        revision=_int(body.get("revision"), "rollout revision"),
        state=state,
        started_at=_time(body.get("started_at"), "started_at"),
        reason=_str(body.get("reason", ""), "reason"),
        message=_str(body.get("message", ""), "message"),
        finished_at=None if finished is None else _time(finished, "finished_at"),
    )


def from_json(raw: bytes, namespace: str, service_id: str) -> ServiceRecord:
    """The record in ``raw``; ``RecordInvalid`` when it is not one of ``namespace/service``."""
    try:
        body = _obj(json.loads(raw), "record")
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordInvalid("not JSON") from exc
    if body.get("schema") != SCHEMA:
        raise RecordInvalid(f"schema is not {SCHEMA}")
    if (body.get("namespace"), body.get("service_id")) != (namespace, service_id):
        raise RecordInvalid("it names another service")
    policy = _obj(body.get("policy", {}), "policy")
    deadline = policy.get("progress_deadline", DEFAULT_PROGRESS_DEADLINE_SECONDS)
    auto = policy.get("auto_rollback", False)
    if not isinstance(deadline, int | float) or isinstance(deadline, bool) or deadline <= 0:
        raise RecordInvalid("progress_deadline malformed")
    if not isinstance(auto, bool):
        raise RecordInvalid("auto_rollback malformed")
    listed = body.get("revisions", [])
    if not isinstance(listed, list):
        raise RecordInvalid("revisions is not a list")
    revisions = tuple(_revision(r, namespace, service_id) for r in listed)
    numbers = [r.number for r in revisions]
    if numbers != sorted(set(numbers), reverse=True) or 0 in numbers:
        raise RecordInvalid("revision numbers are not distinct, positive and newest first")
    return ServiceRecord(
        namespace,
        service_id,
        revisions,
        float(deadline),
        auto,
        _rollout(body.get("rollout")),
    )
