"""``provider_options`` of a docker_compose spec, validated, and Compose's defaults.

Each option has the name and meaning of the Compose file key it stands for, so a
team moving a service between a compose file and ProviderService finds the same
knobs. Unknown keys are rejected rather than ignored: a typo must not silently
drop a health check.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass

from alphaswarm_core.providers.errors import FieldViolation, InvalidSpecError

RESTART_POLICIES = ("no", "always", "unless-stopped", "on-failure")
PULL_POLICIES = ("missing", "always", "never")
# Volume names as the engine accepts them (moby volume/local: "[a-zA-Z0-9][a-zA-Z0-9_.-]");
# targets are absolute paths without ':' or ',' (the separators here) or control
# characters, which Docker's mount parser would split on or reject.
_VOLUME = re.compile(r"([a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}):(/[^:,\x00-\x1f\x7f]*)(:ro)?")
MAX_VOLUMES = 32

KNOWN = {
    "restart": "restart policy: no, always, unless-stopped (default) or on-failure",
    "pull": "pull policy: missing (default), always or never",
    "healthcheck": "shell command run in the container (CMD-SHELL); ready means healthy",
    "healthcheck_interval": "seconds between health checks (default 2)",
    "healthcheck_timeout": "seconds a health check may take (default 5)",
    "healthcheck_retries": "failures before unhealthy (default 3)",
    "healthcheck_start_period": "seconds of grace after start (default 0)",
    "stop_grace_period": "seconds between SIGTERM and SIGKILL on stop (default 10)",
    "volumes": "named volumes of the project, 'name:/path[:ro]' separated by commas",
}


@dataclass(frozen=True, slots=True)
class VolumeMount:
    name: str
    target: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class Options:
    restart: str = "unless-stopped"
    pull: str = "missing"
    healthcheck: str = ""
    healthcheck_interval: float = 2.0
    healthcheck_timeout: float = 5.0
    healthcheck_retries: int = 3
    healthcheck_start_period: float = 0.0
    stop_grace_period: float | None = None
    volumes: tuple[VolumeMount, ...] = ()

    def healthcheck_config(self) -> dict[str, object] | None:
        if not self.healthcheck:
            return None
        second = 1_000_000_000
        return {
            "test": ["CMD-SHELL", self.healthcheck],
            "interval": int(self.healthcheck_interval * second),
            "timeout": int(self.healthcheck_timeout * second),
            "retries": self.healthcheck_retries,
            "start_period": int(self.healthcheck_start_period * second),
        }


def parse(options: Mapping[str, str], prefix: str = "spec.provider_options") -> Options:
    violations: list[FieldViolation] = []
    values: dict[str, object] = {}
    for key, value in options.items():
        path = f"{prefix}[{key!r}]"
        if key not in KNOWN:
            violations.append(
                FieldViolation(path, f"unknown option; known: {', '.join(sorted(KNOWN))}")
            )
        elif key == "restart":
            _choice(violations, path, value, RESTART_POLICIES, values, key)
        elif key == "pull":
            _choice(violations, path, value, PULL_POLICIES, values, key)
        elif key == "healthcheck":
            if not value.strip():
                violations.append(FieldViolation(path, "must not be empty"))
            values[key] = value
        elif key == "healthcheck_retries":
            if not re.fullmatch(r"[0-9]{1,3}", value) or not 1 <= int(value) <= 100:
                violations.append(FieldViolation(path, "an integer between 1 and 100"))
            else:
                values[key] = int(value)
        elif key == "volumes":
            values[key] = _volumes(violations, path, value)
        else:
            seconds = _seconds(value)
            if seconds is None or (key != "healthcheck_start_period" and seconds <= 0):
                violations.append(FieldViolation(path, "a positive number of seconds"))
            else:
                values[key] = seconds
    if violations:
        raise InvalidSpecError(violations)
    return Options(**values)  # type: ignore[arg-type]


def _volumes(violations: list[FieldViolation], path: str, value: str) -> tuple[VolumeMount, ...]:
    """``name:/path[:ro]`` items; each target once, absolute, normalised and not ``/``
    (the engine refuses a duplicate mount point and a mount over the root)."""
    mounts: list[VolumeMount] = []
    targets: set[str] = set()
    items = [part.strip() for part in value.split(",") if part.strip()]
    if len(items) > MAX_VOLUMES:
        violations.append(FieldViolation(path, f"at most {MAX_VOLUMES} volumes"))
        return ()
    for item in items:
        match = _VOLUME.fullmatch(item)
        shown = item if len(item) <= 64 else item[:61] + "..."
        if match is None:
            violations.append(FieldViolation(path, f"{shown!r} is not 'name:/path[:ro]'"))
            continue
        target = match[2]
        if target == "/" or posixpath.normpath(target) != target:
            violations.append(
                FieldViolation(path, f"{shown!r}: the target must be a normalised path below /")
            )
        elif target in targets:
            violations.append(FieldViolation(path, f"{shown!r}: {target} is mounted twice"))
        targets.add(target)
        mounts.append(VolumeMount(match[1], target, bool(match[3])))
    return tuple(mounts)


def _choice(  # noqa: PLR0917
    violations: list[FieldViolation],
    path: str,
    value: str,
    allowed: tuple[str, ...],
    values: dict[str, object],
    key: str,
) -> None:
    if value not in allowed:
        violations.append(FieldViolation(path, f"one of {', '.join(allowed)}"))
    else:
        values[key] = value


def _seconds(value: str) -> float | None:
    """``2``, ``2.5`` or ``2.5s``: seconds from 0 to 3600, else None."""
    match = re.fullmatch(r"([0-9]{1,4}(?:\.[0-9]{1,3})?)s?", value.strip())
    if match is None:
        return None
    seconds = float(match[1])
    return seconds if seconds <= 3600 else None
