"""Spec files and the compact K=V / port syntaxes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alphaswarm.provider.v1 import types_pb2
from alphaswarm_client.specfile import (
    DEFAULT_REPLICAS,
    SpecError,
    load_spec_file,
    parse_key_value,
    parse_port,
    spec_from_mapping,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=b", ("A", "b")),
        ("A=", ("A", "")),
        ("URL=http://x/?a=b", ("URL", "http://x/?a=b")),
    ],
)
def test_key_value(text: str, expected: tuple[str, str]) -> None:
    assert parse_key_value(text) == expected


@pytest.mark.parametrize("text", ["A", "=b", ""])
def test_key_value_rejects(text: str) -> None:
    with pytest.raises(SpecError, match="KEY=VALUE"):
        parse_key_value(text)


@pytest.mark.parametrize(
    ("text", "container", "host", "protocol"),
    [
        ("8080", 8080, 0, ""),
        ("8080:80", 80, 8080, ""),
        ("53/udp", 53, 0, "udp"),
        ("5353:53/UDP", 53, 5353, "udp"),
        ("9000/tcp", 9000, 0, "tcp"),
    ],
)
def test_port(text: str, container: int, host: int, protocol: str) -> None:
    assert parse_port(text) == types_pb2.PortSpec(
        container_port=container, host_port=host, protocol=protocol
    )


@pytest.mark.parametrize(
    ("text", "match"),
    [("http", "HOST"), ("80/sctp", "tcp or udp"), ("a:80", "HOST"), ("-1", "negative")],
)
def test_port_rejects(text: str, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        parse_port(text)


def test_yaml_file_with_every_field(tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(
        """
service_id: web
namespace: shop
image: nginx:1.27
command: [python3, -m, http.server, 8000]
replicas: 2
env: {PORT: 8000, DEBUG: true, EMPTY: null, NAME: web}
labels: {tier: frontend}
ports: [8000, "8080:80/tcp", {container_port: 53, protocol: udp}]
resources: {cpu: 500m, memory: 256Mi}
provider_options: {restart_policy: always}
""",
        encoding="utf-8",
    )
    spec = load_spec_file(str(path))
    assert spec.service_id == "web"
    assert spec.namespace == "shop"
    assert spec.image == "nginx:1.27"
    # Numbers in an argv are the strings the user meant, never re-split.
    assert list(spec.command) == ["python3", "-m", "http.server", "8000"]
    assert spec.replicas == 2
    assert dict(spec.env) == {"PORT": "8000", "DEBUG": "true", "EMPTY": "", "NAME": "web"}
    assert dict(spec.labels) == {"tier": "frontend"}
    assert list(spec.ports) == [
        types_pb2.PortSpec(container_port=8000),
        types_pb2.PortSpec(container_port=80, host_port=8080, protocol="tcp"),
        types_pb2.PortSpec(container_port=53, protocol="udp"),
    ]
    assert (spec.resources.cpu, spec.resources.memory) == ("500m", "256Mi")
    assert dict(spec.provider_options) == {"restart_policy": "always"}


def test_json_file_with_camel_case_and_request_shape(tmp_path: Path) -> None:
    # The body a grpcurl user sends to StartDeployment works as a spec file too.
    path = tmp_path / "req.json"
    path.write_text(
        json.dumps(
            {
                "provider": "local",
                "spec": {
                    "serviceId": "api",
                    "command": ["sleep", "300"],
                    "providerOptions": {"a": "b"},
                },
            }
        ),
        encoding="utf-8",
    )
    spec = load_spec_file(str(path))
    assert spec.service_id == "api"
    assert list(spec.command) == ["sleep", "300"]
    assert dict(spec.provider_options) == {"a": "b"}
    assert spec.replicas == DEFAULT_REPLICAS


def test_explicit_zero_replicas_is_kept() -> None:
    assert spec_from_mapping({"service_id": "a", "replicas": 0}).replicas == 0


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (
            {"service_id": "a", "replica": 2},
            "^replica: not a DeploymentSpec field; the fields are service_id, namespace, "
            "image, command, env, replicas, labels, ports, resources, provider_options, "
            "progress_deadline, auto_rollback$",
        ),
        (
            {"service_id": "a", "resources": {"cpus": "1"}},
            "^resources.cpus: not a Resources field; the fields are cpu, memory$",
        ),
        (
            {"service_id": "a", "ports": [{"containerPort": 80, "host": 8080}]},
            r"^ports\[0\].host: not a PortSpec field; the fields are container_port, host_port",
        ),
        ({"service_id": "a", "command": "sleep 300"}, "command: expected a list"),
        ({"service_id": "a", "env": ["A=b"]}, "env: expected a mapping"),
        ({"service_id": "a", "env": {"A": {"nested": 1}}}, r"env\.A: expected a string"),
        ({"service_id": "a", "replicas": "many"}, "replicas"),
        ({"service_id": "a", "ports": "80"}, "ports: expected a list"),
        (["service_id", "a"], "mapping of DeploymentSpec fields"),
    ],
)
def test_bad_spec_names_the_key(data: object, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        spec_from_mapping(data)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec_file(str(tmp_path / "missing.yaml"))
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("service_id: [unclosed\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"bad\.yaml: not valid YAML"):
        load_spec_file(str(bad_yaml))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{'single': 'quotes'}", encoding="utf-8")
    with pytest.raises(SpecError, match=r"bad\.json: not valid JSON"):
        load_spec_file(str(bad_json))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("service_id: a\nreplica: 3\n", encoding="utf-8")
    with pytest.raises(SpecError, match=r"unknown\.yaml: .*replica"):
        load_spec_file(str(unknown))
