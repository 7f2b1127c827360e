"""The project network ``<project>_default``: found by exact name, removed only if ours.

``GET /networks?filters={"name":[...]}`` matches names *unanchored* (moby
``network/filter.go`` uses ``filters.Match``, a regular-expression search), so
asking for ``web_default`` also returns ``myweb_default``. Taking the first
result put project ``web``'s replicas on "the" network that did not exist ("network
web_default not found") and let the clean-up of a failed start remove another
project's network. Here a name filter only narrows the engine's answer; the
network is the one whose ``Name`` is exactly the name, and it must carry the
Compose labels of this project (as Compose itself requires of a project network).

A network is removed only when it is the one this provider created in the same
call (by ID), still carries our ``managed-by`` label and has no container
attached: never a Compose-created or another project's network.
"""

from __future__ import annotations

from typing import Any

import docker.errors

from alphaswarm_core.providers.errors import BackendRejectedError

from . import compose
from .engine import DeadlineAPIClient


def find(api: DeadlineAPIClient, project: str) -> dict[str, Any] | None:
    """The network named exactly ``<project>_default``, or None."""
    name = compose.network_name(project)
    for network in api.networks(names=[name]) or []:
        if network.get("Name") == name:
            return dict(network)
    return None


def check_belongs(network: dict[str, Any], project: str) -> None:
    """Refuse a network of that name that is not this Compose project's default network."""
    labels = network.get("Labels") or {}
    if labels.get(compose.PROJECT) != project or labels.get(compose.NETWORK) != "default":
        raise BackendRejectedError(
            f"network {network.get('Name')} exists but is not the default network of "
            f"Compose project {project!r} (its labels {compose.PROJECT}="
            f"{labels.get(compose.PROJECT, '')!r}, {compose.NETWORK}="
            f"{labels.get(compose.NETWORK, '')!r}); remove it or use another namespace",
            metadata={"cause": "NETWORK_NOT_OURS", "network": str(network.get("Name", ""))},
        )


def ensure(api: DeadlineAPIClient, project: str) -> tuple[str, bool]:
    """The ID of the project's network, created with Compose's labels (and ours) if
    missing; and whether this call created it."""
    existing = find(api, project)
    if existing is not None:
        check_belongs(existing, project)
        return str(existing["Id"]), False
    try:
        created = api.create_network(
            compose.network_name(project),
            driver="bridge",
            labels=compose.network_labels(project),
            check_duplicate=True,
        )
    except docker.errors.APIError as exc:
        if exc.status_code != 409:
            raise
        # Created concurrently (another start in this project): use it if it is right.
        existing = find(api, project)
        if existing is None:
            raise
        check_belongs(existing, project)
        return str(existing["Id"]), False
    return str(created["Id"]), True


def remove_if_ours_and_unused(api: DeadlineAPIClient, project: str, network_id: str) -> bool:
    """Remove the network ``network_id`` when it is ours and empty; True if removed."""
    try:
        detail = api.inspect_network(network_id)
    except docker.errors.NotFound:
        return False
    labels = detail.get("Labels") or {}
    ours = (
        detail.get("Name") == compose.network_name(project)
        and labels.get(compose.PROJECT) == project
        and labels.get(compose.MANAGED_BY) == compose.MANAGED_BY_VALUE
    )
    if not ours or detail.get("Containers"):
        return False
    try:
        api.remove_network(network_id)
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as exc:
        # 403/409 "has active endpoints": a replica joined since the inspect. Keep it.
        if exc.status_code in (403, 409):
            return False
        raise
    return True


__all__ = ["check_belongs", "ensure", "find", "remove_if_ours_and_unused"]
