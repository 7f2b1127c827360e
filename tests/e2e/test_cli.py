"""The ``alphaswarm`` CLI as a user runs it: a subprocess against the real server on `local`.

Every step is checked twice: in what the CLI prints, and in the process table
(the replicas are ``sleep`` processes carrying a per-test marker in their env).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.processes import environ_of, marked
from tests.e2e.server_process import ServerProcess, start_server
from tests.waiting import until_sync

MARKER = "ALPHASWARM_CLI_E2E"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> dict[str, Any]:
        data = json.loads(self.out)
        assert isinstance(data, dict)
        return data


def cli_argv(server: ServerProcess, *args: str) -> list[str]:
    return [sys.executable, "-m", "alphaswarm_client.cli", "--target", server.address, *args]


def run(
    server: ServerProcess,
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> Result:
    done = subprocess.run(
        cli_argv(server, *args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env=server.env if env is None else env,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def ok(server: ServerProcess, *args: str) -> Result:
    result = run(server, *args)
    assert result.code == 0, f"alphaswarm {' '.join(args)} -> {result.code}\n{result.err}"
    assert result.err == ""
    return result


def failed(server: ServerProcess, code: int, *args: str) -> str:
    """The single stderr line of a failing command."""
    result = run(server, *args)
    assert result.code == code, f"expected exit {code}, got {result.code}: {result.err}"
    assert result.out == ""
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    return lines[0]


def replicas(tag: str) -> int:
    return len(marked(MARKER, tag))


def test_lifecycle(server: ServerProcess) -> None:
    tag = uuid.uuid4().hex

    started = ok(
        server,
        "--json",
        "start",
        "web",
        "--replicas",
        "2",
        "--env",
        f"{MARKER}={tag}",
        "--label",
        "team=e2e",
        "--",
        "sleep",
        "300",
    ).json()["status"]
    assert (started["serviceId"], started["namespace"]) == ("web", "default")
    assert started["desiredReplicas"] == 2
    until_sync(lambda: replicas(tag) == 2, "2 sleep processes")
    assert all(p.cmdline() == ["sleep", "300"] for p in marked(MARKER, tag))
    health = ok(server, "health").out
    assert "healthy:" in health and "yes" in health.split("healthy:")[1].splitlines()[0]

    scaled = ok(server, "scale", "web", "3").out
    assert scaled.splitlines()[0].split()[:5] == [
        "NAMESPACE",
        "SERVICE",
        "PROVIDER",
        "STATE",
        "READY",
    ]
    assert "/3" in scaled.splitlines()[1]
    until_sync(lambda: replicas(tag) == 3, "3 sleep processes")

    before = ok(server, "config", "get", "web", "--json").json()["config"]
    applied = ok(
        server,
        "--json",
        "config",
        "set",
        "web",
        "MODE=fast",
        "--expected-version",
        str(before["version"]),
    ).json()["config"]
    assert applied["data"] == {"MODE": "fast"}
    assert applied["version"] != before["version"]
    # The config reaches every replica's environment (replicas restart one at a time).
    until_sync(
        lambda: [environ_of(p).get("MODE") for p in marked(MARKER, tag)] == ["fast"] * 3,
        "3 replicas with MODE=fast",
    )
    stale = failed(
        server, 1, "config", "set", "web", "MODE=slow", "--expected-version", str(before["version"])
    )
    assert stale.startswith("error: ABORTED: ")
    assert "CONFIG_VERSION_CONFLICT" in stale
    human_config = ok(server, "config", "get", "web").out
    assert "MODE" in human_config and "fast" in human_config

    until_sync(
        lambda: '"readyReplicas": 3' in ok(server, "--json", "status", "web").out,
        "3 ready replicas",
    )
    status = ok(server, "status", "web").out
    assert "RUNNING" in status
    assert "3/3 ready" in status
    assert status.count("running") >= 3  # one instance row per replica

    sample = ok(server, "metrics", "web", "--json", "--interval", "0.5").json()["sample"]
    assert sample["serviceId"] == "web"
    assert sample["replicas"] == 3
    assert sample["ok"] is True
    # int64 is a string in the proto3 JSON mapping, as grpcurl prints it.
    assert isinstance(sample["memoryBytes"], str) and int(sample["memoryBytes"]) > 0
    human_sample = ok(server, "metrics", "web", "--interval", "0.5").out.splitlines()
    assert human_sample[0].split()[:3] == ["TIME", "REPLICAS", "CPU%"]
    assert human_sample[1].split()[1] == "3"

    listed = ok(server, "list", "--json").json()
    deployments = listed["deployments"]
    assert isinstance(deployments, list)
    assert [(d["namespace"], d["serviceId"]) for d in deployments] == [("default", "web")]
    assert "web" in ok(server, "list").out
    page = ok(server, "--json", "list", "--page-size", "1").json()
    assert page["nextPageToken"] == ""

    first = ok(server, "watch", "web", "--json", "--count", "1").out.splitlines()
    assert len(first) == 1
    assert json.loads(first[0])["status"]["desiredReplicas"] == 3

    stopped = ok(server, "stop", "web", "--json").json()["status"]
    assert stopped["state"] == "DEPLOYMENT_STATE_STOPPED"
    until_sync(lambda: replicas(tag) == 0, "no sleep process left")
    assert "STOPPED" in ok(server, "status", "web").out
    # Stopping a stopped service succeeds.
    ok(server, "stop", "web")


def test_start_from_a_spec_file(server: ServerProcess, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    spec = tmp_path / "worker.yaml"
    spec.write_text(
        f"service_id: worker\nnamespace: jobs\nreplicas: 2\ncommand: [sleep, 300]\n"
        f"env: {{{MARKER}: {tag}, RETRIES: 3}}\nlabels: {{app: worker}}\n",
        encoding="utf-8",
    )
    status = ok(server, "--json", "start", "-f", str(spec)).json()["status"]
    assert (status["namespace"], status["serviceId"], status["desiredReplicas"]) == (
        "jobs",
        "worker",
        2,
    )
    until_sync(lambda: replicas(tag) == 2, "2 replicas from the spec file")
    assert {environ_of(p).get("RETRIES") for p in marked(MARKER, tag)} == {"3"}

    # Flags override the file; the same spec from stdin as JSON works too.
    body = json.dumps(
        {
            "service_id": "worker",
            "namespace": "jobs",
            "replicas": 1,
            "command": ["sleep", "300"],
            "env": {MARKER: tag, "RETRIES": "3"},
        }
    )
    done = run(server, "start", "-f", "-", stdin=body)
    assert done.code == 0, done.err
    until_sync(lambda: replicas(tag) == 1, "1 replica after the JSON spec")
    ok(server, "-n", "jobs", "stop", "worker")
    until_sync(lambda: replicas(tag) == 0, "no replica left")

    broken = tmp_path / "broken.yaml"
    broken.write_text("service_id: worker\nreplica: 2\n", encoding="utf-8")
    line = failed(server, 2, "start", "-f", str(broken))
    assert line.startswith("error: ") and "replica" in line


def test_errors_are_one_line_and_change_nothing(server: ServerProcess) -> None:
    unknown = failed(server, 1, "--provider", "nope", "list")
    assert unknown.startswith("error: NOT_FOUND: ")
    assert "PROVIDER_NOT_FOUND" in unknown
    assert "local" in unknown  # the known aliases are named

    invalid = failed(server, 1, "start", "Bad_Name", "--", "sleep", "300")
    assert invalid.startswith("error: INVALID_ARGUMENT: ")
    assert "spec.service_id" in invalid

    too_many = failed(server, 1, "start", "web", "--replicas", "100000", "--", "sleep", "300")
    assert too_many.startswith("error: INVALID_ARGUMENT: ") and "spec.replicas" in too_many

    image_only = failed(server, 1, "start", "web", "--image", "nginx")
    assert image_only.startswith("error: INVALID_ARGUMENT: ") and "spec.command" in image_only

    missing = failed(server, 1, "status", "ghost")
    assert missing.startswith("error: NOT_FOUND: ") and "DEPLOYMENT_NOT_FOUND" in missing
    assert failed(server, 1, "-n", "other", "scale", "ghost", "2").startswith("error: NOT_FOUND")
    assert failed(server, 1, "metrics", "ghost").startswith("error: NOT_FOUND")
    assert failed(server, 1, "watch", "ghost").startswith("error: NOT_FOUND")

    usage = run(server, "scale", "web", "many")
    assert usage.code == 2
    assert "invalid int value" in usage.err

    assert ok(server, "--json", "list").json()["deployments"] == []


#: Runs argv with SIGINT and SIGTERM set to ``sys.argv[1]`` ("default" or "ignore"), then
#: execs it: an ignored disposition survives exec, as under ``cmd &`` or a CI runner that
#: ignores SIGINT; "default" undoes whatever the test runner itself inherited.
WITH_DISPOSITION = (
    "import os, signal, sys\n"
    "how = signal.SIG_IGN if sys.argv[1] == 'ignore' else signal.SIG_DFL\n"
    "for signum in (signal.SIGINT, signal.SIGTERM):\n"
    "    signal.signal(signum, how)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["metrics", "web", "--follow", "--interval", "0.2"], "TIME"),
        (["watch", "web", "--json"], '{"status":{"serviceId":"web"'),
    ],
    ids=["metrics", "watch"],
)
@pytest.mark.parametrize(
    "stop",
    [
        ("default", signal.SIGINT, 130),
        ("ignore", signal.SIGINT, 130),
        ("ignore", signal.SIGTERM, 143),
    ],
    ids=["sigint", "sigint-ignored-by-parent", "sigterm-ignored-by-parent"],
)
def test_streams_print_per_message_and_stop_on_a_signal(
    server: ServerProcess, args: list[str], expect: str, stop: tuple[str, signal.Signals, int]
) -> None:
    disposition, signum, code = stop  # the parent's disposition, the signal sent, the exit
    tag = uuid.uuid4().hex
    ok(server, "start", "web", "--env", f"{MARKER}={tag}", "--", "sleep", "300")
    stream = subprocess.Popen(
        [sys.executable, "-c", WITH_DISPOSITION, disposition, *cli_argv(server, *args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A hang is reported with every thread's stack (SIGABRT below), not as a timeout.
        env={**server.env, "PYTHONFAULTHANDLER": "1"},
    )
    try:
        assert stream.stdout is not None
        # Not a TTY: one line per message, flushed as it arrives. The first line also
        # tells that the CLI runs its stream, so its handlers are in place.
        first = stream.stdout.readline()
        assert first.startswith(expect), first
        if args[0] == "metrics":
            assert stream.stdout.readline().split()[1] == "1"  # replicas column
        stream.send_signal(signum)
        try:
            _, err = stream.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            stream.send_signal(signal.SIGABRT)
            _, err = stream.communicate(timeout=30)
            raise AssertionError(f"no exit 60 s after the signal; its threads:\n{err}") from None
    finally:
        stream.kill()
    assert stream.returncode == code
    assert err == ""  # no traceback
    ok(server, "stop", "web")


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, the way an operator would make one."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "alphaswarm-e2e")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_and_bearer_token(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    token = uuid.uuid4().hex + uuid.uuid4().hex
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        f"tokens:\n  - name: e2e-viewer\n    sha256: {hashlib.sha256(token.encode()).hexdigest()}"
        "\n    role: viewer\n",
        encoding="utf-8",
    )
    secured = start_server(
        tmp_path / "state",
        extra_env={
            "ALPHASWARM_CP_TLS_CERT": str(cert),
            "ALPHASWARM_CP_TLS_KEY": str(key),
            "ALPHASWARM_CP_TOKENS_FILE": str(tokens),
        },
    )
    try:
        tls = ["--ca-cert", str(cert)]
        listed = ok(secured, *tls, "--token", token, "--json", "list").json()
        assert listed["deployments"] == []
        # The token also comes from the environment, and is never echoed back.
        from_env = run(secured, *tls, "providers", env={**secured.env, "ALPHASWARM_TOKEN": token})
        assert from_env.code == 0, from_env.err
        assert "local" in from_env.out

        assert failed(secured, 1, *tls, "list").startswith("error: UNAUTHENTICATED: ")
        denied = failed(secured, 1, *tls, "--token", token, "start", "web", "--", "sleep", "1")
        assert denied.startswith("error: PERMISSION_DENIED: ")
        assert token not in denied
        # Plaintext against a TLS port fails as a transport error, still one line.
        assert failed(secured, 1, "--token", token, "--timeout", "5", "list").startswith(
            "error: UNAVAILABLE: "
        )
    finally:
        assert secured.terminate() == 0, secured.log
