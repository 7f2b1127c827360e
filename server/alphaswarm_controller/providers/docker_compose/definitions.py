"""Service definitions kept on the engine, in labelled volumes.

The controller keeps no state (DESIGN: the backend is the source of truth), yet a
stopped service must stay known with its spec and config, and its config must
survive a controller restart. Containers cannot hold that: stop removes them. So
each service has a *definition volume*: an empty local volume whose labels hold
the spec, the config data and the config version as JSON.

Volume labels cannot change, so each write creates the next *generation*
(``alphaswarm.<project>.<service>.<generation>``) and then removes the older
ones; readers take the highest generation. Creating a volume whose name exists
returns the existing one unchanged, so a write stamps a random nonce into its
labels and wins only when the volume the engine returns carries that nonce: of
two controllers writing the same generation, exactly one wins and the other
gets ``BackendConflictError``. That is the compare-and-swap behind
``apply_config``'s ``expected_version``.

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
from typing import Any

import docker.errors

from alphaswarm_core.providers.errors import BackendConflictError
from alphaswarm_core.providers.models import (
    DeploymentSpec,
    PortSpec,
    Resources,
    config_environment,
)

from .engine import DeadlineAPIClient

KIND = "dev.alphaswarm.definition"
PROJECT = "dev.alphaswarm.project"
SERVICE = "dev.alphaswarm.service"
GENERATION = "dev.alphaswarm.generation"
NONCE = "dev.alphaswarm.nonce"
BODY = "dev.alphaswarm.body"

SCHEMA = 1


@dataclass(frozen=True, slots=True)
class Definition:
    """What a service is, without how many replicas it has (the containers say that)."""

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
    config_version: int = 0
    generation: int = 0
    """0 when not stored yet."""

    @classmethod
    def from_spec(cls, spec: DeploymentSpec, *, keep: Definition | None = None) -> Definition:
        """The definition of ``spec``, carrying over config and generation from ``keep``."""
        return cls(
            project=spec.namespace,
            service=spec.service_id,
            image=spec.image,
            command=tuple(spec.command),
            env=dict(spec.env),
            labels=dict(spec.labels),
            ports=tuple(spec.ports),
            resources=spec.resources,
            options=dict(spec.provider_options),
            config=dict(keep.config) if keep else {},
            config_version=keep.config_version if keep else 0,
            generation=keep.generation if keep else 0,
        )

    def same_spec(self, other: Definition) -> bool:
        return self._spec_body() == other._spec_body()

    def with_config(self, config: Mapping[str, str]) -> Definition:
        return replace(self, config=dict(config), config_version=self.config_version + 1)

    def effective_env(self) -> dict[str, str]:
        """Config data reaches the replicas as environment variables over the spec's env."""
        merged = dict(self.env)
        merged.update(config_environment(self.config))
        return merged

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
        body = self._spec_body()
        body.update(
            schema=SCHEMA,
            config=dict(sorted(self.config.items())),
            config_version=self.config_version,
        )
        return json.dumps(body, separators=(",", ":"))

    @classmethod
    def from_volume(cls, volume: Mapping[str, Any]) -> Definition | None:
        labels: Mapping[str, str] = volume.get("Labels") or {}
        try:
            body = json.loads(labels[BODY])
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
                config=dict(body["config"]),
                config_version=int(body["config_version"]),
                generation=int(labels[GENERATION]),
            )
        except (KeyError, ValueError, TypeError):
            return None  # not ours, or written by an incompatible release: ignore it


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
    """Store ``definition`` as the generation after its own; conflict if another writer won."""
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
            BODY: definition.to_body(),
        },
    )
    if (created.get("Labels") or {}).get(NONCE) != nonce:
        raise BackendConflictError(
            f"the definition of {definition.project}/{definition.service} was changed "
            "concurrently by another writer; read it again and retry",
            metadata={"generation": str(generation)},
        )
    prune(api, definition.project, definition.service, keep=generation)
    return replace(definition, generation=generation)


def prune(api: DeadlineAPIClient, project: str, service: str, *, keep: int | None) -> None:
    """Remove generations other than ``keep`` (all of them when ``keep`` is None)."""
    for volume in _volumes(api, project, service):
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
