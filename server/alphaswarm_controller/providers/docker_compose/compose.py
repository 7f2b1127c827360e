"""What makes a container a Compose container: its labels, its name and its network.

The Compose v2 CLI finds a project's containers by these labels alone, so a
container carrying them is listed by ``docker compose -p <project> ps`` and
removed by ``docker compose -p <project> down`` whoever created it; and a
container Compose created is, by the same labels, one of our services. The
namespace is the Compose project, the service id the Compose service.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"
NUMBER = "com.docker.compose.container-number"
CONFIG_HASH = "com.docker.compose.config-hash"
ONEOFF = "com.docker.compose.oneoff"
VERSION = "com.docker.compose.version"
IMAGE = "com.docker.compose.image"
WORKING_DIR = "com.docker.compose.project.working_dir"
CONFIG_FILES = "com.docker.compose.project.config_files"
DEPENDS_ON = "com.docker.compose.depends_on"
NETWORK = "com.docker.compose.network"
VOLUME = "com.docker.compose.volume"

#: Compose release whose label set and naming this module follows.
COMPOSE_VERSION = "2.29.7"

#: Marks containers this provider created (Compose-created ones lack it).
MANAGED_BY = "dev.alphaswarm.managed-by"
MANAGED_BY_VALUE = "alphaswarm-docker-compose"
#: The revision of the service a replica was created for (absent: made by Compose, or
#: by a release before revisions, which the service's revision 1 stands for).
REVISION = "dev.alphaswarm.revision"

RESERVED_PREFIXES = ("com.docker.compose.", "dev.alphaswarm.")


def container_name(project: str, service: str, number: int) -> str:
    """Compose v2's container name: ``<project>-<service>-<number>``."""
    return f"{project}-{service}-{number}"


def network_name(project: str) -> str:
    """The project's default network, as Compose names it."""
    return f"{project}_default"


def volume_name(project: str, volume: str) -> str:
    """A project's named volume, as Compose names it."""
    return f"{project}_{volume}"


def network_labels(project: str) -> dict[str, str]:
    """Compose's labels of a project network, plus ours: only networks carrying
    ``MANAGED_BY`` are ever removed by this provider."""
    return {
        PROJECT: project,
        NETWORK: "default",
        VERSION: COMPOSE_VERSION,
        MANAGED_BY: MANAGED_BY_VALUE,
    }


def volume_labels(project: str, volume: str) -> dict[str, str]:
    return {PROJECT: project, VOLUME: volume, VERSION: COMPOSE_VERSION}


def container_labels(  # noqa: PLR0917 - one value per Compose label
    project: str,
    service: str,
    number: int,
    config_hash: str,
    image_id: str,
    user_labels: Mapping[str, str],
    revision: int = 0,
) -> dict[str, str]:
    """User labels plus Compose's own (which win: they are what makes it a Compose container)."""
    labels = {k: v for k, v in user_labels.items() if not k.startswith(RESERVED_PREFIXES)}
    labels.update(
        {
            PROJECT: project,
            SERVICE: service,
            NUMBER: str(number),
            CONFIG_HASH: config_hash,
            ONEOFF: "False",
            VERSION: COMPOSE_VERSION,
            IMAGE: image_id,
            # Compose records where the compose file lives; services started through
            # the API have none, and an empty value keeps `compose ps/down -p` working.
            WORKING_DIR: "",
            CONFIG_FILES: "",
            DEPENDS_ON: "",
            MANAGED_BY: MANAGED_BY_VALUE,
        }
    )
    if revision:
        labels[REVISION] = str(revision)
    return labels


def user_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """A container's labels without Compose's and ours: what the caller asked for."""
    return {k: v for k, v in labels.items() if not k.startswith(RESERVED_PREFIXES)}


def config_hash(container_config: Mapping[str, Any]) -> str:
    """A stable digest of everything that, when changed, requires a new container."""
    canonical = json.dumps(container_config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """One replica as the engine's container list shows it (no per-container inspect)."""

    id: str
    name: str
    project: str
    service: str
    number: int
    config_hash: str
    state: str
    """created, running, paused, restarting, removing, exited or dead."""
    health: str
    """healthy, unhealthy, starting, or empty when the container has no health check."""
    status_text: str
    managed: bool
    labels: Mapping[str, str]
    image: str
    created: float = 0.0
    """When the engine created the container (unix seconds; 0 when not reported)."""

    @property
    def ready(self) -> bool:
        return self.state == "running" and self.health in ("", "healthy")

    @property
    def exit_code(self) -> int | None:
        """The exit code of an exited replica (the list API has it only in its text)."""
        if self.state != "exited":
            return None
        match = _EXITED.match(self.status_text)
        return int(match[1]) if match else None

    @property
    def revision(self) -> int:
        """The revision it was created for; 1 when unlabelled (see ``REVISION``)."""
        text = str(self.labels.get(REVISION, ""))
        return int(text) if _REVISION.fullmatch(text) else 1

    @classmethod
    def from_list_entry(cls, entry: Mapping[str, Any]) -> ContainerRef | None:
        """Parse an entry of ``GET /containers/json``; None when it is not a service replica."""
        labels: Mapping[str, str] = entry.get("Labels") or {}
        project, service = labels.get(PROJECT), labels.get(SERVICE)
        if not project or not service or labels.get(ONEOFF, "False") == "True":
            return None
        try:
            number = int(labels.get(NUMBER, "0"))
        except ValueError:
            number = 0
        names = entry.get("Names") or []
        status_text = str(entry.get("Status", ""))
        return cls(
            id=str(entry["Id"]),
            name=str(names[0]).lstrip("/") if names else str(entry["Id"])[:12],
            project=project,
            service=service,
            number=number,
            config_hash=labels.get(CONFIG_HASH, ""),
            state=str(entry.get("State", "")),
            health=_health_from_status(status_text),
            status_text=status_text,
            managed=labels.get(MANAGED_BY) == MANAGED_BY_VALUE,
            labels=labels,
            image=str(entry.get("Image", "")),
            created=float(entry.get("Created") or 0),
        )


_EXITED = re.compile(r"Exited \((-?[0-9]{1,3})\)")
_REVISION = re.compile(r"[1-9][0-9]{0,9}")


def _health_from_status(status: str) -> str:
    """The list API reports health only inside its human status ("Up 3s (healthy)")."""
    if "(healthy)" in status:
        return "healthy"
    if "(unhealthy)" in status:
        return "unhealthy"
    if "(health: starting)" in status:
        return "starting"
    return ""
