"""Blocking engine operations on one service's replicas, the steps the provider composes.

Each method is one short sequence of Engine API calls, run by the provider on its
bounded runner; none keeps state between calls, so the engine stays the only
source of truth.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import docker.errors

from alphaswarm_core.providers.errors import (
    BackendConflictError,
    BackendRejectedError,
    BackendTimeoutError,
)
from alphaswarm_core.providers.models import PortSpec, Resources
from alphaswarm_core.providers.reasons import ErrorReason

from . import compose, definitions
from .compose import ContainerRef
from .definitions import Definition
from .engine import (
    MAX_POLL_INTERVAL,
    POLL_INTERVAL,
    DeadlineAPIClient,
    deadline_left,
    polls,
    remaining,
    undoing,
)
from .options import Options
from .rollouts import DEFAULT_CRASH_LOOP_EXITS, ReplicaFailed, RolloutClock, RolloutRecord

#: Seconds kept, when the caller's deadline is near, between the SIGKILL that ends a
#: shortened stop grace and the deadline: the kill and the removal take that long.
STOP_MARGIN = 2.0
#: The change cause of revision 1 of a service that Docker Compose started.
ADOPTED = "adopted: started by Docker Compose"
#: The engine's answer when another client is already removing the container
#: (moby daemon/delete.go: "removal of container %s is already in progress").
_REMOVAL_IN_PROGRESS = "already in progress"


class Replicas:
    """Creating, replacing and removing Compose-labelled containers of a service."""

    def __init__(
        self,
        client: Callable[[], DeadlineAPIClient],
        *,
        ready_timeout: float,
        min_ready: float,
        stop_grace: int,
        crash_loop_exits: int = DEFAULT_CRASH_LOOP_EXITS,
    ) -> None:
        self._client = client
        self.ready_timeout = ready_timeout
        self.min_ready = min_ready
        self.stop_grace = stop_grace
        self.crash_loop_exits = crash_loop_exits

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
            "env": definition.hashed_env(),
            "labels": dict(sorted(definition.labels.items())),
            "ports": [[p.container_port, p.host_port, p.protocol] for p in definition.ports],
            "cpu": definition.resources.cpu,
            "memory": definition.resources.memory,
            "restart": opts.restart,
            "healthcheck": opts.healthcheck_config(),
            "stop_grace": opts.stop_grace_period,
            "volumes": [[v.name, v.target, v.read_only] for v in opts.volumes],
        }

    def create_replica(  # noqa: PLR0917 - one value per part of a replica
        self,
        definition: Definition,
        opts: Options,
        number: int,
        digest: str,
        image_id: str,
        env: Mapping[str, str],
        *,
        start: bool = True,
    ) -> str:
        """Create (and start) replica ``number`` with ``env`` (secrets in clear); remove
        it again if starting fails."""
        api = self._client()
        project, service = definition.project, definition.service
        name = compose.container_name(project, service, number)
        network = compose.network_name(project)
        port_bindings: dict[int | str, Any] = {}
        exposed: list[tuple[int, str]] = []
        for port in definition.ports:
            key = f"{port.container_port}/{port.protocol}"
            if (port.container_port, port.protocol) not in exposed:
                exposed.append((port.container_port, port.protocol))
            if port.host_port:
                # One container port may be published on several host ports.
                port_bindings.setdefault(key, []).append(("0.0.0.0", port.host_port))
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
            project, service, number, digest, image_id, definition.labels, definition.revision
        )
        networking = _untyped(api).create_networking_config(
            {network: api.create_endpoint_config(aliases=[service, name])}
        )
        try:
            created = api.create_container(
                image=definition.image,
                command=list(definition.command) or None,
                environment=[f"{k}={v}" for k, v in sorted(env.items())],
                labels=labels,
                name=name,
                ports=[(p, proto) for p, proto in exposed] or None,
                host_config=host_config,
                networking_config=networking,
                healthcheck=opts.healthcheck_config(),
                stop_timeout=int(opts.stop_grace_period) if opts.stop_grace_period else None,
            )
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise self._name_taken(name, project, service) from exc
            raise
        container_id = str(created["Id"])
        if start:
            try:
                api.start(container_id)
            except BaseException:
                with undoing(), contextlib.suppress(Exception):
                    api.remove_container(container_id, force=True)
                raise
        return container_id

    def _name_taken(self, name: str, project: str, service: str) -> Exception:
        """Why ``name`` is taken: a concurrent writer of this service (retry), or a
        container that is not this service's (the caller must free the name)."""
        try:
            holder = self._client().inspect_container(name)
        except docker.errors.NotFound:
            return BackendConflictError(
                f"container name {name} was taken and released while creating it; retry"
            )
        labels = (holder.get("Config") or {}).get("Labels") or {}
        if labels.get(compose.PROJECT) == project and labels.get(compose.SERVICE) == service:
            return BackendConflictError(
                f"replica {name} was created concurrently by another writer; retry",
                metadata={"cause": "REPLICA_EXISTS", "container": name},
            )
        owner = (
            f"a replica of {labels[compose.PROJECT]}/{labels.get(compose.SERVICE, '?')}"
            if labels.get(compose.PROJECT)
            else "a container that is not part of any Compose project"
        )
        return BackendRejectedError(
            f"the container name {name} is taken by {owner} "
            f"({str(holder.get('Id', ''))[:12]}); remove or rename it, or use another "
            "namespace or service id",
            metadata={"cause": "NAME_IN_USE", "container": name},
        )

    def remove_replica(self, container_id: str, grace: int) -> None:
        """Stop gracefully, then remove; anonymous and named volumes stay.

        Near the caller's deadline the grace is shortened so the stop (SIGKILL at its
        end) still finishes in time. Another client already removing the container
        (409) is waited for: the replica is going, which is what was asked.
        """
        api = self._client()
        try:
            api.stop(container_id, timeout=_grace_in_time(grace))
            api.remove_container(container_id, v=False, force=True)
        except docker.errors.NotFound:
            pass  # already gone: what we wanted
        except docker.errors.APIError as exc:
            if exc.status_code != 409 or _REMOVAL_IN_PROGRESS not in str(exc.explanation):
                raise
            self._wait_gone(container_id)

    def _wait_gone(self, container_id: str) -> None:
        api = self._client()
        timeout = remaining(self.ready_timeout)
        for _ in polls(timeout):
            try:
                api.inspect_container(container_id)
            except docker.errors.NotFound:
                return
        raise BackendTimeoutError(
            f"container {container_id[:12]} was still being removed after {timeout:.0f}s"
        )

    def wait_ready(self, container_id: str, clock: RolloutClock, restart: str) -> None:
        """Block until the new replica is ready or completed; ``ReplicaFailed`` when it
        will not be (``rollouts`` says what each outcome means).

        Ready is healthy, or without a health check, running for ``min_ready`` seconds
        without a restart: a program that dies at once (bad config) is "running" for a
        moment, and must not count. Each exit counts towards a crash loop: the
        engine's RestartCount (raised at each restart it makes) plus a final exit.
        """
        api = self._client()
        name = container_id[:12]
        since: tuple[str, float] | None = None
        status = health = ""
        last_exit: int | None = None  # the engine resets ExitCode when it restarts one
        for _ in _polls_within(clock):
            detail = api.inspect_container(container_id)
            state = detail["State"]
            name = str(detail.get("Name", name)).lstrip("/")
            status = str(state.get("Status", ""))
            code = int(state.get("ExitCode") or 0)
            ended = status in ("exited", "dead")
            if ended or status == "restarting":  # these keep the exit's code
                last_exit = code
            if ended and code == 0 and restart in ("no", "on-failure"):
                return  # completed, as a one-shot replica does
            exits = int(detail.get("RestartCount") or 0) + (1 if ended else 0)
            if ended and (restart == "no" or exits < self.crash_loop_exits):
                raise ReplicaFailed(
                    ErrorReason.CRASH_LOOP,
                    f"{name} exited (code {code}) and is not restarted "
                    f"(restart policy {restart!r}, or stopped by someone else)",
                )
            if exits >= self.crash_loop_exits:
                raise ReplicaFailed(
                    ErrorReason.CRASH_LOOP,
                    f"{name} exited {exits} times in a row without becoming ready"
                    + (f" (last exit code {last_exit})" if last_exit is not None else ""),
                )
            health = (state.get("Health") or {}).get("Status", "")
            if status == "running" and not state.get("Restarting"):
                started = str(state.get("StartedAt"))
                if since is None or since[0] != started:
                    since = (started, time.monotonic())
                if health == "healthy" or (
                    not health and time.monotonic() - since[1] >= self.min_ready
                ):
                    clock.progressed()
                    return
        shown = "unhealthy" if health == "unhealthy" else status or "not started"
        raise clock.expired(f"{name} ({shown})")

    def replace_replica(  # noqa: PLR0917 - one value per part of a replica
        self,
        definition: Definition,
        opts: Options,
        ref: ContainerRef,
        digest: str,
        image_id: str,
        env: Mapping[str, str],
        clock: RolloutClock,
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
                api.stop(ref.id, timeout=_grace_in_time(grace))
            new_id = self.create_replica(definition, opts, ref.number, digest, image_id, env)
            self.wait_ready(new_id, clock, opts.restart)
        except BaseException:
            with undoing():
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
        """Store the definition of a service that Compose started, as its revision 1 (its
        replicas, which carry no revision label, run that)."""
        adopted = self.adopted(project, service, refs).as_next_revision(ADOPTED)
        record = RolloutRecord.begun(1, adopted.progress_deadline, "").succeeded()
        return definitions.write(self._client(), adopted.with_rollout(record))

    def adopted(self, project: str, service: str, refs: list[ContainerRef]) -> Definition:
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
        return Definition(
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


def _grace_in_time(grace: int) -> int:
    """The stop grace, shortened near the caller's deadline so that the stop (a SIGKILL
    at the end of the grace) and the removal still finish within it."""
    left = deadline_left()
    return grace if left is None else max(0, min(grace, int(left - STOP_MARGIN)))


def _polls_within(clock: RolloutClock) -> Iterator[int]:
    """Yield before each poll, with the capped backoff of ``engine.polls``, while ``clock`` has
    time left (re-read at each poll: another replica becoming ready extends it)."""
    interval = POLL_INTERVAL
    attempt = 0
    while True:
        yield attempt
        attempt += 1
        left = clock.left()
        if left <= 0:
            return
        time.sleep(min(interval, left))
        interval = min(MAX_POLL_INTERVAL, interval * 1.5)


def _untyped(api: DeadlineAPIClient) -> Any:
    """The client where types-docker's stubs are wrong or missing (dict endpoint configs)."""
    return api


def _nano_cpus(resources: Resources) -> int | None:
    millicores = resources.cpu_millicores()
    return None if millicores is None else millicores * 1_000_000
