"""The project network ``<project>_default``: found by exact name, removed only if ours.

``GET /networks?filters={"name":[...]}`` matches names *unanchored* (moby
``network/filter.go`` uses ``filters.Match``, a regular-expression search), so
asking for ``web_default`` also returns ``myweb_default``. Taking the first
result put project ``web``'s replicas on "the" network that did not exist ("network
web_default not found") and let the clean-up of a failed start remove another
project's network. Here a name filter only narrows the engine's answer; the
network is the one whose ``Name`` is exactly the name, and it must carry the
Compose labels of this project (as Compose itself requires of a project network).

A network is removed only when it is the one this provider created (by ID), still
carries our ``managed-by`` label and no existing container is attached: never a
Compose-created or another project's network.
"""

from __future__ import annotations

import logging
from typing import Any

import docker.errors

from alphaswarm_core.providers.errors import BackendRejectedError

from . import compose
from .engine import DeadlineAPIClient, polls, remaining

log = logging.getLogger(__name__)

#: Seconds a removal waits for the engine to release the endpoints of containers that
#: are already gone before it takes them for stale. Releasing takes milliseconds; on a
#: loaded machine a delete that gave up at the first inspect left the network behind.
ENDPOINT_RELEASE_SECONDS = 5.0


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
    """Remove the network ``network_id`` when it is ours and no container uses it; True if
    removed.

    An endpoint whose container is gone does not count as a use. The engine lists the
    endpoint of a replica removed a moment ago until its exit handler has released it,
    and refuses the removal meanwhile ("has active endpoints"); so this waits, within
    ``ENDPOINT_RELEASE_SECONDS`` and the call's deadline, for such endpoints to go. One
    still listed after that is stale (the engine lost track of it, moby#33156 and
    #17217): it is disconnected by force, as ``docker network disconnect -f`` does, and
    the network removed. An endpoint of a container that exists means a replica (ours,
    or anyone's) uses the network: it is kept.
    """
    gone: set[str] = set()  # container IDs found gone: an ID never names another one
    for _ in polls(remaining(ENDPOINT_RELEASE_SECONDS)):
        detail = _inspect_if_ours(api, project, network_id)
        if detail is None or _in_use(api, detail, gone):
            return False
        if not detail.get("Containers") and _remove(api, network_id):
            return True
        # Endpoints of removed containers (or one that joined since the inspect): again.
    detail = _inspect_if_ours(api, project, network_id)
    if detail is None or _in_use(api, detail, gone):
        return False
    for endpoint in (detail.get("Containers") or {}).values():
        _disconnect_stale(api, network_id, str(endpoint.get("Name", "")))
    return _remove(api, network_id)


def _inspect_if_ours(
    api: DeadlineAPIClient, project: str, network_id: str
) -> dict[str, Any] | None:
    """The network's detail if it exists, has the project's name and our labels."""
    try:
        detail: dict[str, Any] = api.inspect_network(network_id)
    except docker.errors.NotFound:
        return None
    labels = detail.get("Labels") or {}
    ours = (
        detail.get("Name") == compose.network_name(project)
        and labels.get(compose.PROJECT) == project
        and labels.get(compose.MANAGED_BY) == compose.MANAGED_BY_VALUE
    )
    return detail if ours else None


def _exists(api: DeadlineAPIClient, container: str) -> bool:
    try:
        api.inspect_container(container)
    except docker.errors.NotFound:
        return False
    return True


def _in_use(api: DeadlineAPIClient, detail: dict[str, Any], gone: set[str]) -> bool:
    """Whether a container that exists is attached (the keys are container IDs; a stale
    endpoint's key is ``ep-<endpoint id>``, which names no container). Keys in ``gone``
    are not asked again; keys found gone are added to it."""
    for key in detail.get("Containers") or {}:
        if key in gone:
            continue
        if _exists(api, key):
            return True
        gone.add(key)
    return False


def _disconnect_stale(api: DeadlineAPIClient, network_id: str, name: str) -> None:
    """Force the endpoint ``name`` of a removed container off the network. The engine
    takes the name for a container's first: a replica created since under the same name
    would be disconnected, so a name that names a container now is left alone."""
    if not name or _exists(api, name):
        return
    try:
        api.disconnect_container_from_network(name, network_id, force=True)
    except docker.errors.NotFound:
        return  # released meanwhile
    log.warning("disconnected the stale endpoint %s from network %s", name, network_id[:12])


def _remove(api: DeadlineAPIClient, network_id: str) -> bool:
    try:
        api.remove_network(network_id)
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as exc:
        # 403 (engine 20.10) or 409 (later) "has active endpoints": one is still attached.
        if exc.status_code in (403, 409):
            return False
        raise
    return True


__all__ = ["check_belongs", "ensure", "find", "remove_if_ours_and_unused"]
