"""Blocking engine operations on one service's replicas, the steps the provider composes.

Each method is one short sequence of Engine API calls, run by the provider on its
bounded runner; none keeps state between calls, so the engine stays the only
source of truth.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

import docker.errors
from docker.utils import parse_repository_tag

from alphaswarm_core.providers.concurrency import remaining_timeout
from alphaswarm_core.providers.errors import (
    BackendRejectedError,
    BackendTimeoutError,
    ResourceNotFoundError,
)
from alphaswarm_core.providers.models import PortSpec, Resources

from . import compose, definitions
from .compose import ContainerRef
from .definitions import Definition
from .engine import DeadlineAPIClient
from .options import Options


class Replicas:
    """Creating, replacing and removing Compose-labelled containers of a service."""

    def __init__(
        self,
        client: Callable[[], DeadlineAPIClient],
        *,
        ready_timeout: float,
        min_ready: float,
        stop_grace: int,
    ) -> None:
        self._client = client
        self.ready_timeout = ready_timeout
        self.min_ready = min_ready
        self.stop_grace = stop_grace

    def ensure_image(self, image: str, policy: str) -> str:
        """The image's id, pulling it per ``policy``; NOT_FOUND when it cannot be had."""
        api = self._client()
        if policy != "always":
            try:
                return str(_untyped(api).inspect_image(image)["Id"])
            except docker.errors.NotFound:
                if policy == "never":
                    raise ResourceNotFoundError(
                        f"image {image!r} is not present on the engine (pull policy: never)",
                        metadata={"cause": "IMAGE_NOT_FOUND", "image": image},
                    ) from None
        repository, tag = parse_repository_tag(image)
        try:
            api.pull(repository, tag=tag or "latest")
            return str(_untyped(api).inspect_image(image)["Id"])
        except docker.errors.APIError as exc:
            if exc.status_code in (502, 503, 504):
                raise
            detail = str(exc.explanation or exc)[:300]
            raise ResourceNotFoundError(
                f"image {image!r} is not present on the engine and could not be pulled: {detail}",
                metadata={"cause": "IMAGE_NOT_FOUND", "image": image},
            ) from exc

    def ensure_network(self, project: str) -> bool:
        """Create ``<project>_default`` with Compose's labels; True when this call created it."""
        api = self._client()
        name = compose.network_name(project)
        if api.networks(names=[name]):
            return False
        try:
            api.create_network(
                name,
                driver="bridge",
                labels=compose.network_labels(project),
                check_duplicate=True,
            )
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # created concurrently: fine, it exists
                return False
            raise
        return True

    def remove_network_if_unused(self, project: str) -> None:
        api = self._client()
        for network in api.networks(names=[compose.network_name(project)]):
            detail = api.inspect_network(network["Id"])
            if not detail.get("Containers"):
                with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                    api.remove_network(network["Id"])

    def ensure_volumes(self, project: str, opts: Options) -> None:
        api = self._client()
        for mount in opts.volumes:
            name = compose.volume_name(project, mount.name)
            labels = compose.volume_labels(project, mount.name)
            api.create_volume(name, driver="local", labels=labels)

    def container_config(self, definition: Definition, opts: Options) -> dict[str, Any]:
        """Everything that defines a replica; its digest is the Compose config-hash."""
        return {
            "image": definition.image,
            "command": list(definition.command),
            "env": dict(sorted(definition.effective_env().items())),
            "labels": dict(sorted(definition.labels.items())),
            "ports": [[p.container_port, p.host_port, p.protocol] for p in definition.ports],
            "cpu": definition.resources.cpu,
            "memory": definition.resources.memory,
            "restart": opts.restart,
            "healthcheck": opts.healthcheck_config(),
            "stop_grace": opts.stop_grace_period,
            "volumes": [[v.name, v.target, v.read_only] for v in opts.volumes],
        }

    def create_replica(
        self,
        definition: Definition,
        opts: Options,
        number: int,
        digest: str,
        image_id: str,
        *,
        start: bool = True,
    ) -> str:
        """Create (and start) replica ``number``; remove it again if starting fails."""
        api = self._client()
        project, service = definition.project, definition.service
        name = compose.container_name(project, service, number)
        network = compose.network_name(project)
        port_bindings: dict[int | str, Any] = {}
        exposed: list[tuple[int, str]] = []
        for port in definition.ports:
            key = f"{port.container_port}/{port.protocol}"
            exposed.append((port.container_port, port.protocol))
            if port.host_port:
                port_bindings[key] = [("0.0.0.0", port.host_port)]
        restart = {"Name": opts.restart} if opts.restart != "no" else None
        host_config = api.create_host_config(
            network_mode=network,
            port_bindings=port_bindings or None,
            restart_policy=restart,
            nano_cpus=_nano_cpus(definition.resources),
            mem_limit=definition.resources.memory_bytes(),
            binds={
                compose.volume_name(project, v.name): {
                    "bind": v.target,
                    "mode": "ro" if v.read_only else "rw",
                }
                for v in opts.volumes
            }
            or None,
        )
        labels = compose.container_labels(
            project, service, number, digest, image_id, definition.labels
        )
        networking = _untyped(api).create_networking_config(
            {network: api.create_endpoint_config(aliases=[service, name])}
        )
        created = api.create_container(
            image=definition.image,
            command=list(definition.command) or None,
            environment=[f"{k}={v}" for k, v in sorted(definition.effective_env().items())],
            labels=labels,
            name=name,
            ports=[(p, proto) for p, proto in exposed] or None,
            host_config=host_config,
            networking_config=networking,
            healthcheck=opts.healthcheck_config(),
            stop_timeout=int(opts.stop_grace_period) if opts.stop_grace_period else None,
        )
        container_id = str(created["Id"])
        if start:
            try:
                api.start(container_id)
            except BaseException:
                with contextlib.suppress(Exception):
                    api.remove_container(container_id, force=True)
                raise
        return container_id

    def remove_replica(self, container_id: str, grace: int) -> None:
        """Stop gracefully, then remove; anonymous and named volumes stay."""
        api = self._client()
        try:
            api.stop(container_id, timeout=grace)
            api.remove_container(container_id, v=False, force=True)
        except docker.errors.NotFound:
            pass  # already gone: what we wanted

    def wait_ready(self, container_id: str, timeout: float) -> None:
        """Block until the container is healthy, or without a health check, has kept
        running for ``min_ready`` seconds: a program that dies at once (bad config)
        is "running" for a moment, and must not count as a ready replacement."""
        api = self._client()
        deadline = time.monotonic() + timeout
        first_seen: tuple[str, float] | None = None
        while True:
            state = api.inspect_container(container_id)["State"]
            health = (state.get("Health") or {}).get("Status", "")
            restarted = first_seen is not None and state.get("StartedAt") != first_seen[0]
            if state.get("Running") and not restarted:
                if health == "healthy":
                    return
                if not health:
                    if first_seen is None:
                        first_seen = (str(state.get("StartedAt")), time.monotonic())
                    elif time.monotonic() - first_seen[1] >= self.min_ready:
                        return
            if restarted or state.get("Status") in ("exited", "dead", "restarting"):
                raise BackendRejectedError(
                    f"replacement replica stopped (exit code {state.get('ExitCode')}) "
                    f"{state.get('Error') or ''}".strip(),
                    metadata={"cause": "REPLICA_FAILED"},
                )
            if health == "unhealthy":
                raise BackendRejectedError(
                    "replacement replica is unhealthy", metadata={"cause": "REPLICA_UNHEALTHY"}
                )
            if time.monotonic() > deadline:
                raise BackendTimeoutError(
                    f"replacement replica was not ready within {timeout:.0f}s"
                )
            time.sleep(0.1)

    def replace_replica(
        self, definition: Definition, opts: Options, ref: ContainerRef, digest: str, image_id: str
    ) -> None:
        """Replace one replica, Compose's way: rename the old, start the new, remove the old.

        The old replica keeps serving until the new one is ready, unless the
        service publishes a fixed host port, which only one of them can hold:
        then the old one is stopped first. On failure the old one comes back.
        """
        api = self._client()
        grace = self.grace(opts)
        stop_first = any(port.host_port for port in definition.ports)
        api.rename(ref.id, f"{ref.id[:12]}_{ref.name}")
        new_id: str | None = None
        try:
            if stop_first:
                api.stop(ref.id, timeout=grace)
            new_id = self.create_replica(definition, opts, ref.number, digest, image_id)
            self.wait_ready(new_id, remaining_timeout(self.ready_timeout))
        except BaseException:
            if new_id is not None:
                with contextlib.suppress(Exception):
                    api.remove_container(new_id, force=True)
            with contextlib.suppress(Exception):
                api.rename(ref.id, ref.name)
                if stop_first:
                    api.start(ref.id)
            raise
        self.remove_replica(ref.id, grace)

    def grace(self, opts: Options) -> int:
        return int(opts.stop_grace_period) if opts.stop_grace_period else self.stop_grace

    def adopt(self, project: str, service: str, refs: list[ContainerRef]) -> Definition:
        """A definition for a service that Compose started, read from its newest replica.

        Image defaults (its env and labels) are left out so that the definition holds
        what the compose file said, not what the image brought.
        """
        api = self._client()
        detail = api.inspect_container(refs[-1].id)
        config = detail.get("Config") or {}
        host = detail.get("HostConfig") or {}
        image_config: Mapping[str, Any] = {}
        with contextlib.suppress(docker.errors.NotFound):
            image_config = _untyped(api).inspect_image(config.get("Image", ""))["Config"] or {}
        image_env = set(image_config.get("Env") or [])
        image_labels = image_config.get("Labels") or {}
        env = dict(item.split("=", 1) for item in config.get("Env") or [] if item not in image_env)
        labels = {
            k: v
            for k, v in compose.user_labels(config.get("Labels") or {}).items()
            if image_labels.get(k) != v
        }
        ports = []
        for key, bindings in (host.get("PortBindings") or {}).items():
            container_port, _, protocol = key.partition("/")
            host_port = int((bindings or [{}])[0].get("HostPort") or 0)
            ports.append(PortSpec(int(container_port), host_port, protocol or "tcp"))
        command = tuple(config.get("Cmd") or ())
        if command == tuple(image_config.get("Cmd") or ()):
            command = ()
        nano = int(host.get("NanoCpus") or 0)
        memory = int(host.get("Memory") or 0)
        definition = Definition(
            project=project,
            service=service,
            image=str(config.get("Image", "")),
            command=command,
            env=env,
            labels=labels,
            ports=tuple(ports),
            resources=Resources(
                cpu=f"{nano // 1_000_000}m" if nano else "",
                memory=str(memory) if memory else "",
            ),
        )
        return definitions.write(api, definition)


def _untyped(api: DeadlineAPIClient) -> Any:
    """The client where types-docker's stubs are wrong or missing (dict endpoint configs)."""
    return api


def _nano_cpus(resources: Resources) -> int | None:
    millicores = resources.cpu_millicores()
    return None if millicores is None else millicores * 1_000_000
