"""Command-line parsing, spec building from flags, and exit codes that need no server."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from alphaswarm.provider.v1 import types_pb2
from alphaswarm_client import cli
from alphaswarm_client.cli import UsageError, build_spec, make_client, parse_args


def test_start_from_flags_and_command_after_double_dash() -> None:
    args = parse_args(
        [
            "--target",
            "10.0.0.1:9000",
            "start",
            "web",
            "--replicas",
            "2",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--label",
            "tier=web",
            "--port",
            "8080:80/udp",
            "--cpu",
            "500m",
            "--memory",
            "64Mi",
            "--option",
            "k=v",
            "-n",
            "shop",
            "--",
            "sleep",
            "--not-a-flag",
            "300",
        ]
    )
    assert args.target == "10.0.0.1:9000"
    spec = build_spec(args)
    assert spec == types_pb2.DeploymentSpec(
        service_id="web",
        namespace="shop",
        replicas=2,
        env={"A": "1", "B": "x=y"},
        labels={"tier": "web"},
        ports=[types_pb2.PortSpec(container_port=80, host_port=8080, protocol="udp")],
        resources=types_pb2.Resources(cpu="500m", memory="64Mi"),
        provider_options={"k": "v"},
        command=["sleep", "--not-a-flag", "300"],
    )


def test_replicas_default_to_one() -> None:
    assert build_spec(parse_args(["start", "web", "--", "sleep", "1"])).replicas == 1


def test_flags_override_the_spec_file(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        "service_id: web\nreplicas: 2\ncommand: [sleep, '300']\nenv: {A: file, B: file}\n"
        "ports: [80]\n",
        encoding="utf-8",
    )
    args = parse_args(
        [
            "start",
            "-f",
            str(path),
            "--replicas",
            "3",
            "--env",
            "B=flag",
            "--port",
            "81",
            "--",
            "sleep",
            "600",
        ]
    )
    spec = build_spec(args)
    assert spec.service_id == "web"
    assert spec.replicas == 3
    # Map flags add to the file's map; list flags replace the file's list.
    assert dict(spec.env) == {"A": "file", "B": "flag"}
    assert list(spec.ports) == [types_pb2.PortSpec(container_port=81)]
    assert list(spec.command) == ["sleep", "600"]


def test_start_without_service_id_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="service id"):
        build_spec(parse_args(["start", "--", "sleep", "1"]))


def test_global_options_work_after_the_command() -> None:
    args = parse_args(
        [
            "status",
            "web",
            "--json",
            "--provider",
            "local",
            "-n",
            "ns",
            "--timeout",
            "5",
            "--target",
            "h:1",
        ]
    )
    assert (args.output, args.provider, args.namespace, args.timeout, args.target) == (
        "json",
        "local",
        "ns",
        5.0,
        "h:1",
    )
    # ...and given before it, a subcommand's defaults do not reset them.
    args = parse_args(["--json", "-n", "ns", "config", "get", "web"])
    assert (args.output, args.namespace, args.command, args.config_command) == (
        "json",
        "ns",
        "config",
        "get",
    )


def test_target_and_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHASWARM_TARGET", "example:7000")
    monkeypatch.setenv("ALPHASWARM_TOKEN", "s3cret")
    args = parse_args(["providers"])
    client = make_client(args)
    assert args.target == "example:7000"
    assert client.target == "example:7000"
    assert client._metadata == (("authorization", "Bearer s3cret"),)


def test_config_set_pairs_and_removals() -> None:
    args = parse_args(
        [
            "config",
            "set",
            "web",
            "A=1",
            "B=",
            "--remove",
            "C",
            "--remove",
            "D",
            "--expected-version",
            "7",
        ]
    )
    assert args.pairs == [("A", "1"), ("B", "")]
    assert (args.remove, args.expected_version) == (["C", "D"], "7")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["scale", "web"],
        ["scale", "web", "three"],
        ["start", "web", "--env", "NOEQUALS"],
        ["start", "web", "--port", "http"],
        ["config", "set", "web", "novalue"],
        ["metrics", "web", "--interval", "0"],
        ["list", "--page-size", "-1"],
        ["status", "web", "--timeout", "soon"],
        ["status", "web", "--", "extra"],
        ["--client-cert", "c.pem", "providers"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_bad_spec_file_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text("service_id: web\ncommand: sleep 300\n", encoding="utf-8")
    assert cli.main(["start", "-f", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"error: {path}: command: expected a list")


def test_config_set_without_changes_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--target", "127.0.0.1:1", "config", "set", "web"]) == 2
    assert capsys.readouterr().err == "error: config set needs at least one K=V or --remove KEY\n"


def test_unreachable_server_exits_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port once the socket is closed: connection refused.
    assert cli.main(["--target", f"127.0.0.1:{port}", "--timeout", "5", "providers"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: UNAVAILABLE: ")
    assert captured.err.count("\n") == 1


def test_missing_ca_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--ca-cert", str(tmp_path / "nope.pem"), "providers"]) == 2
    assert capsys.readouterr().err.startswith("error: cannot read ")
