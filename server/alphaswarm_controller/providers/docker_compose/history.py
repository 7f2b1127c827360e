"""Earlier revisions of a service, one labelled volume each, beside its definition.

The definition volume holds the current revision; when a change supersedes it, the
change first copies it into a *revision volume* ``alphaswarm.<project>.<service>.r<N>``
(labels: ``dev.alphaswarm.revision-record``, project, service, number, and the
definition's body, secrets sealed as in the definition). Its content is fixed by
revision N, so two controllers that both copy it write the same record, and the
copy made before the definition's compare-and-swap is right whichever of them
wins. Only the newest ``HISTORY`` revisions are kept (the current one included);
older volumes are removed by the next change.

These volumes carry no ``dev.alphaswarm.definition`` label, so listing services
never reads them; their ``dev.alphaswarm.project``/``service`` labels let delete
and ``docker volume ls --filter`` find them.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import docker.errors

from .definitions import BODY, PROJECT, SERVICE, Definition
from .engine import DeadlineAPIClient

#: Revisions a service keeps, the current one included (as Kubernetes' default
#: revisionHistoryLimit keeps 10 old ReplicaSets).
HISTORY = 10

RECORD = "dev.alphaswarm.revision-record"
NUMBER = "dev.alphaswarm.revision-number"
_NUMBER = re.compile(r"[1-9][0-9]{0,9}")


def volume_name(project: str, service: str, revision: int) -> str:
    return f"alphaswarm.{project}.{service}.r{revision}"


def _volumes(api: DeadlineAPIClient, project: str, service: str) -> list[Any]:
    labels = [RECORD, f"{PROJECT}={project}", f"{SERVICE}={service}"]
    found = api.volumes(filters={"label": labels}) or {}
    return list(found.get("Volumes") or [])


def _number(volume: Any) -> int:
    text = str((volume.get("Labels") or {}).get(NUMBER, ""))
    return int(text) if _NUMBER.fullmatch(text) else 0


def keep(api: DeadlineAPIClient, definition: Definition) -> None:
    """Copy ``definition`` (the revision being superseded) into its revision volume.

    A volume of that name that exists already holds the same revision (copied by
    another writer, or by an earlier attempt of this change): creating it again
    returns it unchanged, which is what is wanted.
    """
    if definition.revision < 1:
        return
    api.create_volume(
        volume_name(definition.project, definition.service, definition.revision),
        driver="local",
        labels={
            RECORD: "1",
            PROJECT: definition.project,
            SERVICE: definition.service,
            NUMBER: str(definition.revision),
            BODY: definition.to_body(),
        },
    )


def read(api: DeadlineAPIClient, project: str, service: str, below: int) -> list[Definition]:
    """The kept revisions before revision ``below``, newest first (one engine call).

    Records at or above ``below`` are not history: left by a service of the same name
    that was removed while a write was under way.
    """
    found: dict[int, Definition] = {}
    for volume in _volumes(api, project, service):
        labels = volume.get("Labels") or {}
        number = _number(volume)
        if not 0 < number < below:
            continue
        parsed = Definition.from_labels(labels, volume, generation="0")
        if parsed is not None and (parsed.project, parsed.service) == (project, service):
            found[number] = parsed
    return [found[n] for n in sorted(found, reverse=True)]


def prune(api: DeadlineAPIClient, project: str, service: str, *, current: int | None) -> None:
    """Remove the records that fell out of the history of revision ``current`` (all of
    them when ``current`` is None: the service is being removed)."""
    for volume in _volumes(api, project, service):
        number = _number(volume)
        if current is not None and number > current - HISTORY:
            continue
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_volume(volume["Name"])
