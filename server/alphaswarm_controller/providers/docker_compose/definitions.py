"""Service definitions kept on the engine, in labelled volumes.

The controller keeps no state (DESIGN: the backend is the source of truth), yet a
stopped service must stay known with its spec and config, and its config must
survive a controller restart. Containers cannot hold that: stop removes them. So
each service has a *definition volume*: an empty local volume whose labels hold
the spec, the config data and the config version as JSON. ``secret.*`` values
are sealed by the controller first (``sealing``): labels are readable by anyone
who can list volumes, so they hold only ciphertext.

Volume labels cannot change, so each write creates the next *generation*
(``alphaswarm.<project>.<service>.<generation>``) and then removes the older
ones; readers take the highest generation. Creating a volume whose name exists
returns the existing one unchanged, so a write stamps a random nonce into its
labels and wins only when the volume the engine returns carries that nonce: of
two controllers writing the same generation, exactly one wins and the other
gets ``BackendConflictError``. That is the compare-and-swap behind
``apply_config``'s ``expected_version``.

The definition also holds the service's current *revision* (its number, when and
why it was made, whether it rolls back to an earlier one), its rollout policy and
the record of its latest rollout (``rollouts.RolloutRecord``); the compare-and-swap
of a write is the check-and-set of ``expected_revision``. Earlier revisions are
kept in volumes of their own (``history``).

These volumes carry no Compose labels, so ``docker compose down`` (even with
``-v``) leaves them: after it the service is known and stopped. Removing the
volume (``docker volume rm``/``prune``) forgets the service.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import docker.errors

from alphaswarm_core.providers.errors import BackendConflictError
from alphaswarm_core.providers.models import (
    DEFAULT_PROGRESS_DEADLINE_SECONDS,
    MAX_CHANGE_CAUSE_LENGTH,
    DeploymentSpec,
    PortSpec,
    Resources,
    RolloutState,
    config_environment,
    is_secret_key,
    masked_config,
)

from .engine import DeadlineAPIClient
from .rollouts import RolloutRecord
from .sealing import Sealer, SecretsUnreadable

KIND = "dev.alphaswarm.definition"
PROJECT = "dev.alphaswarm.project"
SERVICE = "dev.alphaswarm.service"
GENERATION = "dev.alphaswarm.generation"
NONCE = "dev.alphaswarm.nonce"
PARENT = "dev.alphaswarm.parent"
"""The nonce of the generation a generation was written on (see ``write``)."""
BODY = "dev.alphaswarm.body"

#: 3: revisions and rollouts; 2: ``secret.*`` values sealed (``sealing``); 1 kept them
#: in ``config``, in clear. A definition of schema 1 or 2 reads as revision 1.
SCHEMA = 3


@dataclass(frozen=True, slots=True)
class Definition:
    """What a service is, without how many replicas it has (the containers say that).

    ``config`` holds the plain config keys; ``secrets`` the ``secret.*`` keys, each
    value sealed (``sealing.Sealer``) under the key ``key_id`` names. Only a
    definition read from a schema-1 volume has ``legacy_plain`` set: its secrets are
    still in clear, and the next write seals them.
    """

    project: str
    service: str
    image: str
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[PortSpec, ...] = ()
    resources: Resources = field(default_factory=Resources)
    options: Mapping[str, str] = field(default_factory=dict)
    config: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    key_id: str = ""
    legacy_plain: bool = False
    config_version: int = 0
    generation: int = 0
    """0 when not stored yet."""
    nonce: str = field(default="", compare=False)
    """The nonce of the volume this generation was read from or written as."""
    revision: int = 0
    """The revision this definition is (0: none yet)."""
    created_at: datetime | None = None
    change_cause: str = ""
    rollback_of: int = 0
    automatic: bool = False
    progress_deadline: float = DEFAULT_PROGRESS_DEADLINE_SECONDS
    auto_rollback: bool = False
    rollout: RolloutRecord | None = None
    last_good: int = 0
    """The newest revision whose rollout succeeded (0: none): where auto_rollback goes."""

    @classmethod
    def from_spec(cls, spec: DeploymentSpec, *, keep: Definition | None = None) -> Definition:
        """The definition of ``spec``, carrying over config, version and generation
        from ``keep``."""
        definition = cls(
            project=spec.namespace,
            service=spec.service_id,
            image=spec.image,
            command=tuple(spec.command),
            env=dict(spec.env),
            labels=dict(spec.labels),
            ports=tuple(spec.ports),
            resources=spec.resources,
            options=dict(spec.provider_options),
            progress_deadline=spec.progress_deadline_seconds,
            auto_rollback=spec.auto_rollback,
        )
        if keep is None:
            return definition
        return replace(
            definition.with_config_of(keep),
            config_version=keep.config_version,
            generation=keep.generation,
            nonce=keep.nonce,
            revision=keep.revision,
            created_at=keep.created_at,
            change_cause=keep.change_cause,
            rollback_of=keep.rollback_of,
            automatic=keep.automatic,
            rollout=keep.rollout,
            last_good=keep.last_good,
        )

    def same_spec(self, other: Definition) -> bool:
        """Whether both run the same thing (the rollout policy aside)."""
        return self._spec_body() == other._spec_body()

    def same_policy(self, other: Definition) -> bool:
        return (self.progress_deadline, self.auto_rollback) == (
            other.progress_deadline,
            other.auto_rollback,
        )

    def as_next_revision(
        self, change_cause: str, *, rollback_of: int = 0, automatic: bool = False
    ) -> Definition:
        """This definition as the service's next revision, made now for ``change_cause``."""
        return replace(
            self,
            revision=self.revision + 1,
            created_at=datetime.now(UTC),
            change_cause=change_cause[:MAX_CHANGE_CAUSE_LENGTH],
            rollback_of=rollback_of,
            automatic=automatic,
            rollout=None,
        )

    def with_rollout(self, record: RolloutRecord) -> Definition:
        good = record.state is RolloutState.SUCCEEDED and record.revision == self.revision
        return replace(self, rollout=record, last_good=self.revision if good else self.last_good)

    def with_config_of(self, other: Definition) -> Definition:
        """This definition (version and generation included) holding ``other``'s config."""
        return replace(
            self,
            config=dict(other.config),
            secrets=dict(other.secrets),
            key_id=other.key_id,
            legacy_plain=other.legacy_plain,
        )

    def with_config(
        self, data: Mapping[str, str], sealer: Sealer | None, current: Mapping[str, str]
    ) -> Definition:
        """The next config version holding ``data``; ``current`` is the clear config now
        in force, so an unchanged secret keeps its sealed value (and replicas stay)."""
        config = {k: v for k, v in data.items() if not is_secret_key(k)}
        wanted = {k: v for k, v in data.items() if is_secret_key(k)}
        secrets: dict[str, str] = {}
        for name, value in wanted.items():
            if not self.legacy_plain and name in self.secrets and current.get(name) == value:
                secrets[name] = self.secrets[name]
                continue
            if sealer is None:
                raise AssertionError("secret.* keys are sealed: a sealer is required")
            secrets[name] = sealer.seal(self.project, self.service, name, value)
        return replace(
            self,
            config=config,
            secrets=secrets,
            key_id=sealer.key_id if secrets and sealer else "",
            legacy_plain=False,
            config_version=self.config_version + 1,
        )

    def sealed(self, sealer: Sealer | None) -> Definition:
        """This definition with schema-1 clear secrets sealed (itself when there are none)."""
        if not self.legacy_plain:
            return self
        if not self.secrets:
            return replace(self, legacy_plain=False)
        if sealer is None:
            raise AssertionError("secret.* keys are sealed: a sealer is required")
        return replace(
            self,
            secrets={
                name: sealer.seal(self.project, self.service, name, value)
                for name, value in self.secrets.items()
            },
            key_id=sealer.key_id,
            legacy_plain=False,
        )

    def secret_values(self, sealer: Sealer | None) -> dict[str, str]:
        """The secrets in clear (``secret.NAME`` -> value), for replicas only."""
        if self.legacy_plain or not self.secrets:
            return dict(self.secrets)
        if sealer is None:
            raise AssertionError("secret.* keys are sealed: a sealer is required")
        if sealer.key_id != self.key_id:
            raise SecretsUnreadable(
                f"the secrets of {self.project}/{self.service} were sealed with the key "
                f"{self.key_id}, and this controller holds the key {sealer.key_id}: give it "
                "the same ALPHASWARM_DOCKER_COMPOSE_SECRET_KEY_FILE as the controller that "
                "stored them, or set the secrets again with ApplyConfig",
                metadata={"cause": "SECRET_KEY_MISMATCH", "key_id": self.key_id},
            )
        return {
            name: sealer.unseal(self.project, self.service, name, token)
            for name, token in self.secrets.items()
        }

    def needs_key(self) -> bool:
        """Whether creating replicas (or writing this definition) needs the secret key."""
        return bool(self.secrets)

    def shown_config(self) -> dict[str, str]:
        """The config as callers may read it: secret values masked."""
        return masked_config({**self.config, **dict.fromkeys(self.secrets, "")})

    def effective_env(self, secret_values: Mapping[str, str]) -> dict[str, str]:
        """Config data reaches the replicas as environment variables over the spec's env."""
        merged = dict(self.env)
        merged.update(config_environment({**self.config, **secret_values}))
        return merged

    def hashed_env(self) -> dict[str, str]:
        """What stands for the environment in the Compose config-hash: secrets by their
        sealed value, never in clear (the hash is a label anyone may read)."""
        merged = dict(self.env)
        merged.update(self.config)
        merged.update({name: f"sealed:{token}" for name, token in self.secrets.items()})
        return dict(sorted(merged.items()))

    def _spec_body(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "command": list(self.command),
            "env": dict(sorted(self.env.items())),
            "labels": dict(sorted(self.labels.items())),
            "ports": [[p.container_port, p.host_port, p.protocol] for p in self.ports],
            "resources": {"cpu": self.resources.cpu, "memory": self.resources.memory},
            "options": dict(sorted(self.options.items())),
        }

    def to_body(self) -> str:
        if self.legacy_plain and self.secrets:
            raise AssertionError("clear secrets must be sealed before the definition is stored")
        body = self._spec_body()
        body.update(
            schema=SCHEMA,
            config=dict(sorted(self.config.items())),
            sealed={"key_id": self.key_id, "values": dict(sorted(self.secrets.items()))},
            config_version=self.config_version,
            revision={
                "number": self.revision,
                "created_at": self.created_at.isoformat() if self.created_at else None,
                "change_cause": self.change_cause,
                "rollback_of": self.rollback_of,
                "automatic": self.automatic,
            },
            policy={
                "progress_deadline": self.progress_deadline,
                "auto_rollback": self.auto_rollback,
            },
            rollout=self.rollout.to_json() if self.rollout else None,
            last_good=self.last_good,
        )
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_volume(cls, volume: Mapping[str, Any]) -> Definition | None:
        labels: Mapping[str, str] = volume.get("Labels") or {}
        if GENERATION not in labels:
            return None
        return cls.from_labels(labels, volume, generation=labels[GENERATION])

    @classmethod
    def from_labels(
        cls, labels: Mapping[str, str], volume: Mapping[str, Any], *, generation: str
    ) -> Definition | None:
        """The definition in a volume's labels (``volume`` gives the creation time of a
        definition written before revisions); None when not ours or unreadable."""
        try:
            body = json.loads(labels[BODY])
            config = {str(k): str(v) for k, v in dict(body["config"]).items()}
            legacy = int(body.get("schema", 1)) < 2
            if legacy:
                secrets = {k: v for k, v in config.items() if is_secret_key(k)}
                config = {k: v for k, v in config.items() if not is_secret_key(k)}
                key_id = ""
            else:
                sealed = dict(body["sealed"])
                secrets = {str(k): str(v) for k, v in dict(sealed["values"]).items()}
                key_id = str(sealed["key_id"])
            return cls(
                project=labels[PROJECT],
                service=labels[SERVICE],
                image=str(body["image"]),
                command=tuple(body["command"]),
                env=dict(body["env"]),
                labels=dict(body["labels"]),
                ports=tuple(PortSpec(int(c), int(h), str(p)) for c, h, p in body["ports"]),
                resources=Resources(**body["resources"]),
                options=dict(body["options"]),
                config=config,
                secrets=secrets,
                key_id=key_id,
                legacy_plain=legacy and bool(secrets),
                config_version=int(body["config_version"]),
                generation=int(generation),
                nonce=str(labels.get(NONCE, "")),
                **_revision_fields(body, volume),
            )
        except (KeyError, ValueError, TypeError, AttributeError):
            return None  # not ours, or written by an incompatible release: ignore it


def _revision_fields(body: Mapping[str, Any], volume: Mapping[str, Any]) -> dict[str, Any]:
    """The revision, policy and rollout of a body; schema 1 and 2 bodies (written
    before revisions) are revision 1, made when their volume was."""
    if int(body.get("schema", 1)) < 3:
        return {"revision": 1, "created_at": _volume_created(volume), "last_good": 0}
    revision = dict(body["revision"])
    policy = dict(body["policy"])
    created = revision.get("created_at")
    return {
        "revision": int(revision["number"]),
        "created_at": datetime.fromisoformat(str(created)) if created else None,
        "change_cause": str(revision.get("change_cause", "")),
        "rollback_of": int(revision.get("rollback_of", 0)),
        "automatic": bool(revision.get("automatic", False)),
        "progress_deadline": float(policy["progress_deadline"]),
        "auto_rollback": bool(policy["auto_rollback"]),
        "rollout": RolloutRecord.from_json(dict(body["rollout"])) if body.get("rollout") else None,
        "last_good": int(body.get("last_good", 0)),
    }


def _volume_created(volume: Mapping[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(volume["CreatedAt"]))
    except (KeyError, ValueError):
        return None


def volume_name(project: str, service: str, generation: int) -> str:
    return f"alphaswarm.{project}.{service}.{generation}"


def _filters(project: str | None, service: str | None) -> dict[str, list[str]]:
    labels = [KIND]
    if project is not None:
        labels.append(f"{PROJECT}={project}")
    if service is not None:
        labels.append(f"{SERVICE}={service}")
    return {"label": labels}


def _volumes(api: DeadlineAPIClient, project: str | None, service: str | None) -> list[Any]:
    found = api.volumes(filters=_filters(project, service)) or {}
    return list(found.get("Volumes") or [])


def latest(volumes: list[Any]) -> dict[tuple[str, str], Definition]:
    """The highest generation of each (project, service) among ``volumes``."""
    best: dict[tuple[str, str], Definition] = {}
    for volume in volumes:
        definition = Definition.from_volume(volume)
        if definition is None:
            continue
        key = (definition.project, definition.service)
        if key not in best or best[key].generation < definition.generation:
            best[key] = definition
    return best


def read(api: DeadlineAPIClient, project: str, service: str) -> Definition | None:
    """One service's definition (one engine call), or None when it has none."""
    return latest(_volumes(api, project, service)).get((project, service))


def read_all(api: DeadlineAPIClient, project: str | None) -> dict[tuple[str, str], Definition]:
    """Every definition in ``project`` (or everywhere), in one engine call."""
    return latest(_volumes(api, project, None))


def write(api: DeadlineAPIClient, definition: Definition) -> Definition:
    """Store ``definition`` as the generation after its own; conflict if another writer won.

    Creating the volume of generation N+1 is the compare-and-swap: of two writers that
    read N, the engine creates it for one, and the other gets the existing volume (not
    its nonce). A name is freed again when a later write prunes it, so a writer that read
    N long ago could create N+1 after others wrote N+1 and N+2 (ABA): the new volume then
    has a newer generation beside it that was not written on it (its ``PARENT`` is not
    this nonce), and the write is a conflict and its volume removed.
    """
    generation = definition.generation + 1
    nonce = uuid.uuid4().hex
    name = volume_name(definition.project, definition.service, generation)
    created = api.create_volume(
        name,
        driver="local",
        labels={
            KIND: "1",
            PROJECT: definition.project,
            SERVICE: definition.service,
            GENERATION: str(generation),
            NONCE: nonce,
            PARENT: definition.nonce,
            BODY: definition.to_body(),
        },
    )
    if (created.get("Labels") or {}).get(NONCE) != nonce:
        raise _conflict(definition, generation)
    volumes = _volumes(api, definition.project, definition.service)
    if not _written_on_or_newest(volumes, generation, nonce):
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_volume(name)
        raise _conflict(definition, generation)
    _prune(api, volumes, keep=generation)
    return replace(definition, generation=generation, nonce=nonce)


def _conflict(definition: Definition, generation: int) -> BackendConflictError:
    return BackendConflictError(
        f"the definition of {definition.project}/{definition.service} was changed "
        "concurrently by another writer; read it again and retry",
        metadata={"generation": str(generation)},
    )


def _written_on_or_newest(volumes: list[Any], generation: int, nonce: str) -> bool:
    """Whether generation ``generation`` (nonce ``nonce``) is the newest among
    ``volumes``, or the next one was written on it."""
    newer: dict[int, Mapping[str, str]] = {}
    for volume in volumes:
        labels = volume.get("Labels") or {}
        with contextlib.suppress(ValueError):
            if int(labels.get(GENERATION, "0")) > generation:
                newer[int(labels[GENERATION])] = labels
    if not newer:
        return True
    first = min(newer)
    return first == generation + 1 and newer[first].get(PARENT) == nonce


def prune(api: DeadlineAPIClient, project: str, service: str, *, keep: int | None) -> None:
    """Remove generations other than ``keep`` (all of them when ``keep`` is None)."""
    _prune(api, _volumes(api, project, service), keep=keep)


def _prune(api: DeadlineAPIClient, volumes: list[Any], *, keep: int | None) -> None:
    for volume in volumes:
        labels = volume.get("Labels") or {}
        if keep is not None and labels.get(GENERATION) == str(keep):
            continue
        try:
            if keep is not None and int(labels.get(GENERATION, "0")) > keep:
                continue  # a newer writer's generation: not ours to remove
        except ValueError:
            pass
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_volume(volume["Name"])
