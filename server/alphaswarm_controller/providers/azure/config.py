"""Service config carried as the containers' environment.

Config keys become environment variables next to the spec's own ``env``; the
variable ``ALPHASWARM_CONFIG_KEYS`` lists which ones are config, so the config
can be read back from any replica. Keys written ``secret.NAME`` become the
variable ``NAME`` with ACI's ``secureValue``: Azure never returns such a value,
so reads show ``SECRET_PLACEHOLDER`` and any operation that must create a
container group again needs the secret values supplied anew (see the
package docstring).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from azure.mgmt.containerinstance import models as aci

from alphaswarm_core.providers.models import SECRET_MASK as SECRET_PLACEHOLDER
from alphaswarm_core.providers.models import SECRET_PREFIX
from alphaswarm_core.providers.protocol import FieldViolation, InvalidSpecError

CONFIG_KEYS_VAR = "ALPHASWARM_CONFIG_KEYS"
# ACI refuses other variable names: "A valid environment variable name must start with
# alphabetic character or `_`, followed by a string of alphanumeric characters or `_`"
# (the service's message, quoted in Azure/aci-deploy#29; dots: azure-rest-api-specs#19173).
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def variable_name(key: str) -> str:
    return key[len(SECRET_PREFIX) :] if key.startswith(SECRET_PREFIX) else key


def check_patch_values(values: Mapping[str, str]) -> None:
    violations = []
    for key, value in values.items():
        if key.startswith(SECRET_PREFIX) and not variable_name(key):
            violations.append(FieldViolation(f"patch.set[{key!r}]", "name the secret"))
        elif not _VARIABLE_NAME.fullmatch(variable_name(key)):
            violations.append(
                FieldViolation(
                    f"patch.set[{key!r}]",
                    "on Azure Container Instances config keys are environment variables: "
                    "a letter or '_' then letters, digits or '_' (after an optional 'secret.')",
                )
            )
        if key == CONFIG_KEYS_VAR:
            violations.append(FieldViolation(f"patch.set[{key!r}]", "reserved by alphaswarm"))
        if value == SECRET_PLACEHOLDER and key.startswith(SECRET_PREFIX):
            violations.append(
                FieldViolation(
                    f"patch.set[{key!r}]",
                    f"{SECRET_PLACEHOLDER!r} is what reads show for a secret; set its real value",
                )
            )
    if violations:
        raise InvalidSpecError(violations)


def environment(
    spec_env: Mapping[str, str], config: Mapping[str, str]
) -> list[aci.EnvironmentVariable]:
    """Spec env, then config (config wins on a clash), then the list of config keys."""
    variables = {k: aci.EnvironmentVariable(name=k, value=v) for k, v in spec_env.items()}
    for key, value in config.items():
        name = variable_name(key)
        if key.startswith(SECRET_PREFIX):
            variables[name] = aci.EnvironmentVariable(name=name, secure_value=value)
        else:
            variables[name] = aci.EnvironmentVariable(name=name, value=value)
    variables[CONFIG_KEYS_VAR] = aci.EnvironmentVariable(
        name=CONFIG_KEYS_VAR, value=",".join(sorted(config))
    )
    return list(variables.values())


def _variables(group: aci.ContainerGroup) -> list[aci.EnvironmentVariable]:
    if not group.containers:
        return []
    return list(group.containers[0].environment_variables or [])


def config_keys(group: aci.ContainerGroup) -> list[str]:
    for variable in _variables(group):
        if variable.name == CONFIG_KEYS_VAR:
            return [k for k in (variable.value or "").split(",") if k]
    return []


def read_config(group: aci.ContainerGroup) -> dict[str, str]:
    """Config data of a replica; secret values read as ``SECRET_PLACEHOLDER``."""
    values = {v.name: v.value or "" for v in _variables(group)}
    data = {}
    for key in config_keys(group):
        data[key] = SECRET_PLACEHOLDER if key.startswith(SECRET_PREFIX) else values.get(key, "")
    return data


def spec_environment(group: aci.ContainerGroup) -> dict[str, str]:
    """The replica's non-config environment (the spec's ``env``)."""
    config_names = {variable_name(k) for k in config_keys(group)} | {CONFIG_KEYS_VAR}
    return {
        v.name: v.value or ""
        for v in _variables(group)
        if v.name not in config_names and v.secure_value is None
    }


def unreadable_secrets(config: Mapping[str, str]) -> list[str]:
    """Secret keys whose value Azure kept to itself (so a new group cannot get it)."""
    return sorted(
        k for k, v in config.items() if k.startswith(SECRET_PREFIX) and v == SECRET_PLACEHOLDER
    )
