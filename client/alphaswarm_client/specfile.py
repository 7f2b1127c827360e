"""DeploymentSpec input: spec files (YAML or JSON) and the CLI's compact value syntaxes.

A spec file uses the proto's field names (``service_id``, ``command``,
``provider_options``, ...; the JSON camelCase names work too), so what a
caller writes for grpcurl works here. People write YAML loosely, so the
loader forgives what is unambiguous (numbers and booleans in string maps,
``"8080:80/udp"`` ports) and rejects the rest with the offending key named.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor

from alphaswarm.provider.v1 import types_pb2

#: Replicas when neither the file nor a flag gives any: one, like a Kubernetes Deployment.
DEFAULT_REPLICAS = 1

_STRING_MAPS = ("env", "labels", "provider_options", "providerOptions")
_PROTOCOLS = ("tcp", "udp")


class SpecError(ValueError):
    """A spec file or a spec flag cannot be turned into a DeploymentSpec."""


def parse_key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (the value may be empty or contain '='), as a pair."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SpecError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_port(text: str) -> types_pb2.PortSpec:
    """``[HOST:]CONTAINER[/tcp|udp]`` in Docker's order: ``8080:80`` publishes 80 on 8080."""
    ports, _, protocol = text.partition("/")
    protocol = protocol.lower()
    if protocol and protocol not in _PROTOCOLS:
        raise SpecError(f"port {text!r}: protocol must be tcp or udp")
    host, _, container = ports.rpartition(":")
    try:
        container_port = int(container)
        host_port = int(host) if host else 0
    except ValueError:
        raise SpecError(f"port {text!r}: expected [HOST:]CONTAINER[/tcp|udp]") from None
    for port in (container_port, host_port):
        # Range checks beyond syntax are the server's job; a negative number is a typo here.
        if port < 0:
            raise SpecError(f"port {text!r}: ports are not negative")
    return types_pb2.PortSpec(container_port=container_port, host_port=host_port, protocol=protocol)


def _scalar_to_str(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if value is None:
        return ""
    raise SpecError(f"{where}: expected a string, got {type(value).__name__}")


def _normalize(data: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(data)
    for key in _STRING_MAPS:
        if key in out and out[key] is not None:
            if not isinstance(out[key], Mapping):
                raise SpecError(f"{key}: expected a mapping of KEY: VALUE")
            out[key] = {str(k): _scalar_to_str(v, f"{key}.{k}") for k, v in out[key].items()}
    command = out.get("command")
    if command is not None:
        if isinstance(command, str):
            # An argv vector is never split by a shell, so guessing word boundaries is wrong.
            raise SpecError("command: expected a list of arguments, e.g. [sleep, '300']")
        if not isinstance(command, list):
            raise SpecError("command: expected a list of arguments")
        out["command"] = [_scalar_to_str(arg, f"command[{i}]") for i, arg in enumerate(command)]
    ports = out.get("ports")
    if ports is not None:
        if not isinstance(ports, list):
            raise SpecError("ports: expected a list")
        out["ports"] = [
            json_format.MessageToDict(parse_port(str(p)), preserving_proto_field_name=True)
            if isinstance(p, str | int) and not isinstance(p, bool)
            else p
            for p in ports
        ]
    return out


def _check_fields(data: Mapping[str, Any], message: Descriptor, where: str) -> None:
    """Name an unknown key with the fields allowed there, in the proto's spelling (the
    file format's): protobuf's own error lists the JSON camelCase names."""
    fields = {field.name: field for field in message.fields}
    by_key = {**{field.json_name: field for field in message.fields}, **fields}
    for key, value in data.items():
        field = by_key.get(key)
        if field is None:
            raise SpecError(
                f"{where}{key}: not a {message.name} field; the fields are {', '.join(fields)}"
            )
        nested = field.message_type
        if nested is None or nested.GetOptions().map_entry:
            continue
        if field.is_repeated and isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    _check_fields(item, nested, f"{where}{field.name}[{index}].")
        elif isinstance(value, Mapping):
            _check_fields(value, nested, f"{where}{field.name}.")


def spec_from_mapping(data: Any) -> types_pb2.DeploymentSpec:
    """A DeploymentSpec from parsed YAML/JSON (a request-shaped ``{spec: ...}`` too)."""
    if not isinstance(data, Mapping):
        raise SpecError("a spec file must hold a mapping of DeploymentSpec fields")
    if set(data) <= {"spec", "provider"} and isinstance(data.get("spec"), Mapping):
        data = data["spec"]
    spec = types_pb2.DeploymentSpec()
    normalized = _normalize(data)
    _check_fields(normalized, spec.DESCRIPTOR, "")
    try:
        json_format.ParseDict(normalized, spec)
    except json_format.ParseError as error:
        raise SpecError(" ".join(str(error).split())) from None
    if "replicas" not in data:
        spec.replicas = DEFAULT_REPLICAS
    return spec


def load_spec_file(path: str) -> types_pb2.DeploymentSpec:
    """Read a YAML or JSON spec file (``-`` reads standard input)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise SpecError(f"cannot read {path}: {error.strerror}") from None
    try:
        # YAML 1.2 is a superset of JSON, but a .json file gets JSON's stricter errors.
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise SpecError(
            f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: "
            f"{' '.join(str(error).split())}"
        ) from None
    try:
        return spec_from_mapping(data)
    except SpecError as error:
        raise SpecError(f"{path}: {error}") from None
