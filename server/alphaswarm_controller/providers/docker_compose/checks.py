"""What the engine would refuse, refused before any engine call (INVALID_ARGUMENT).

The shared model bounds sizes and names for every backend; these are the Docker
engine's own rules on top, each with where it comes from. Checked up front, a
mistake costs the caller one round trip and leaves nothing behind, instead of
failing halfway through a start (after the definition and network were written).
"""

from __future__ import annotations

from collections.abc import Mapping

from alphaswarm_core.providers.errors import FieldViolation, InvalidSpecError
from alphaswarm_core.providers.models import (
    SECRET_PREFIX,
    DeploymentSpec,
    PortSpec,
    Resources,
    is_secret_key,
)

from . import images, options
from .options import Options

#: The smallest CPU limit that runs: the engine turns NanoCpus into a CFS quota per
#: 100 ms period, and the kernel refuses a quota under 1 ms ("failed to write 100:
#: cpu.cfs_quota_us: invalid argument" from runc at start), i.e. under 0.01 CPU.
MIN_MILLICORES = 10
#: moby daemon/daemon_unix.go ``linuxMinMemory``: "Minimum memory limit allowed is 6MB".
MIN_MEMORY_BYTES = 6 * 1024 * 1024


def checked_options(spec: DeploymentSpec) -> Options:
    """The spec's ``provider_options``, parsed; ``InvalidSpecError`` naming every field
    the engine would refuse (options included), all at once."""
    violations: list[FieldViolation] = []
    try:
        parsed = options.parse(spec.provider_options)
    except InvalidSpecError as exc:
        violations += exc.violations
    try:
        check_spec(spec)
    except InvalidSpecError as exc:
        violations += exc.violations
    if violations:
        raise InvalidSpecError(violations)
    return parsed


def check_spec(spec: DeploymentSpec) -> None:
    """Raise ``InvalidSpecError`` naming every field the engine would refuse."""
    violations = images.check_reference(spec.image, "spec.image") if spec.image else []
    if not spec.image:
        violations.append(FieldViolation("spec.image", "the docker_compose provider runs images"))
    violations += _resources(spec.resources, "spec.resources")
    violations += _ports(spec.ports, spec.replicas, "spec")
    if violations:
        raise InvalidSpecError(violations)


def check_scale(ports: tuple[PortSpec, ...], replicas: int) -> None:
    """A service publishing a fixed host port runs one replica: only one can bind it."""
    fixed = sorted({p.host_port for p in ports if p.host_port})
    if replicas > 1 and fixed:
        raise InvalidSpecError.single(
            "replicas",
            f"the service publishes fixed host port(s) {', '.join(map(str, fixed))}, which "
            "only one replica can bind; use host_port 0 (an ephemeral port per replica) "
            "to run more",
        )


def check_config(data: Mapping[str, str], path: str = "patch.set") -> None:
    """Config keys become environment variables (``secret.NAME`` as ``NAME``): each
    variable must have a name, and come from one key only."""
    violations: list[FieldViolation] = []
    for key in data:
        if is_secret_key(key):
            name = key.removeprefix(SECRET_PREFIX)
            if not name:
                violations.append(FieldViolation(f"{path}[{key!r}]", "names no variable"))
            elif name in data:
                violations.append(
                    FieldViolation(
                        f"{path}[{key!r}]",
                        f"{key} and {name} would both set the variable {name}; keep one",
                    )
                )
    if violations:
        raise InvalidSpecError(violations)


def _resources(resources: Resources, path: str) -> list[FieldViolation]:
    violations = []
    millicores = resources.cpu_millicores()
    if millicores is not None and millicores < MIN_MILLICORES:
        violations.append(
            FieldViolation(f"{path}.cpu", f"at least {MIN_MILLICORES}m (0.01 CPU) on Docker")
        )
    memory = resources.memory_bytes()
    if memory is not None and memory < MIN_MEMORY_BYTES:
        violations.append(
            FieldViolation(f"{path}.memory", "at least 6Mi: the engine's minimum memory limit")
        )
    return violations


def _ports(ports: tuple[PortSpec, ...], replicas: int, path: str) -> list[FieldViolation]:
    violations = []
    seen: set[tuple[int, str]] = set()
    for index, port in enumerate(ports):
        if not port.host_port:
            continue
        key = (port.host_port, port.protocol)
        if key in seen:
            violations.append(
                FieldViolation(
                    f"{path}.ports[{index}].host_port",
                    f"host port {port.host_port}/{port.protocol} is published twice",
                )
            )
        seen.add(key)
    try:
        check_scale(ports, replicas)
    except InvalidSpecError as exc:
        violations += [FieldViolation(f"{path}.replicas", v.description) for v in exc.violations]
    return violations
