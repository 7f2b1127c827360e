"""What the emulated containers print, and the Containers - List Logs answer built from it.

The real operation (``GET .../containerGroups/{group}/containers/{container}/logs``,
operationId ``Containers_ListLogs`` in the containerinstance OpenAPI document, api-version
2023-05-01, Azure/azure-rest-api-specs ``.../stable/2023-05-01/containerInstance.json``):

* ``tail`` (int32, optional): "The number of lines to show from the tail of the container
  instance log. If not provided, all available logs are shown up to 4mb." (SPEC)
* ``timestamps`` (boolean, optional): "If true, adds a timestamp at the beginning of every
  line of log output. If not provided, defaults to false." (SPEC) The stamp is the
  container runtime's RFC 3339 time with nanoseconds followed by one space, the form
  ``kubectl logs --timestamps`` shows: virtual-kubelet's ACI provider asks for
  ``timestamps=true`` and hands the content to kubectl unchanged
  (virtual-kubelet/azure-aci ``pkg/client/client_apis.go`` ``ListLogs``).
* 200 with the ``Logs`` schema, ``{"content": "<the text>"}`` (SPEC and its example
  ``Containers_ListLogs.json``).
* A container whose log does not exist yet (not started) is 404 ``ContainerLogNotAvailable``
  "Log of container '<c>' in container group '<g>' is not available yet. Please check
  container 'InstanceView' for more information or retry later." (the service's answer
  quoted in virtual-kubelet/virtual-kubelet#237).
* Only the current container instance's log is kept: when the container restarts the
  earlier lines are gone (the Azure CLI's ``az container logs --follow`` warns "the
  container ... was just restarted; the tail of the current log might be missing" when
  the content shrinks: azure-cli ``command_modules/container/custom.py`` ``_stream_logs``).

The emulated container of a running group writes one line every ``LINE_INTERVAL``
seconds from the moment it started running, ``line <n> of <command>`` (the image when it
has no command): deterministic, so tests can tell which container and which instance
wrote a line. A stopped and restarted group starts again at line 0, with new times.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from .arm_rules import ArmError, bad

LINE_INTERVAL = 0.2
"""Seconds between two lines of an emulated container."""
MAX_CONTENT_BYTES = 4 * 1024 * 1024
"""SPEC: "all available logs are shown up to 4mb" (also the most a tail returns here)."""


def not_available(group: str, container: str) -> ArmError:
    return ArmError(
        404,
        "ContainerLogNotAvailable",
        f"Log of container '{container}' in container group '{group}' is not available yet. "
        "Please check container 'InstanceView' for more information or retry later.",
    )


def container_not_found(group: str, container: str) -> ArmError:
    # No public report shows the code ACI uses here; 404 is what ARM answers for a
    # nested resource that does not exist.
    return ArmError(
        404,
        "ContainerNotFound",
        f"The container '{container}' is not found in container group '{group}'.",
    )


def parse_tail(raw: str | None) -> int | None:
    """``tail`` as the SPEC types it (int32). Non-integers are refused as ARM refuses a
    malformed typed parameter (400); zero and negative counts are undocumented, so they
    are refused too rather than given a meaning a provider could come to rely on."""
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 0 < value < 2**31:
        raise bad("InvalidParameter", f"The value '{raw}' of parameter 'tail' is not valid.")
    return value


def parse_timestamps(raw: str | None) -> bool:
    if raw is None:
        return False
    if raw.lower() not in ("true", "false"):
        raise bad("InvalidParameter", f"The value '{raw}' of parameter 'timestamps' is not valid.")
    return raw.lower() == "true"


def stamp(epoch: float) -> str:
    """RFC 3339 UTC with nine fractional digits, as the container runtime writes it."""
    seconds = int(epoch)
    nanos = round((epoch - seconds) * 1e9)
    if nanos >= 1_000_000_000:
        seconds, nanos = seconds + 1, nanos - 1_000_000_000
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def label(container: dict[str, Any]) -> str:
    props = container.get("properties") or {}
    command = props.get("command") or []
    return " ".join(str(part) for part in command) or str(props.get("image", ""))


def written(started_epoch: float, now_epoch: float) -> int:
    """How many lines a container running since ``started_epoch`` has written."""
    return max(0, int((now_epoch - started_epoch) / LINE_INTERVAL))


def _lines_backwards(
    container: dict[str, Any], started_epoch: float, written: int, count: int, timestamps: bool
) -> Iterator[str]:
    """The last ``count`` of the ``written`` lines, newest first."""
    text = label(container)
    for n in range(written - 1, written - 1 - count, -1):
        line = f"line {n} of {text}"
        if timestamps:
            line = f"{stamp(started_epoch + (n + 1) * LINE_INTERVAL)} {line}"
        yield line + "\n"


def content(
    container: dict[str, Any],
    started_epoch: float,
    now_epoch: float,
    *,
    tail: int | None,
    timestamps: bool,
) -> str:
    """The log text of one running container: its last ``tail`` lines (all when None),
    never more than ``MAX_CONTENT_BYTES`` (the newest lines are kept)."""
    total = written(started_epoch, now_epoch)
    count = total if tail is None else min(total, tail)
    kept: list[str] = []
    size = 0
    for line in _lines_backwards(container, started_epoch, total, count, timestamps):
        size += len(line.encode())
        if size > MAX_CONTENT_BYTES:
            break
        kept.append(line)
    return "".join(reversed(kept))
