"""The Node.js example (examples/node) against the real server, as CI runs it.

The client is the documented one, unchanged: it starts a `sleep 300` service with
2 replicas on the `local` provider, prints StreamMetrics samples and each replica's
last log line (StreamLogs, which ends by itself), stops the service and exits 0.
The machine's process table confirms the replicas really ran and really stopped;
error runs confirm the gRPC code and the ErrorInfo reason decoded
from the `grpc-status-details-bin` trailer.
"""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.processes import marked
from tests.e2e.server_process import ServerProcess, start_server
from tests.examples.node_env import NodeExample
from tests.examples.secured_server import secured_server
from tests.waiting import until_sync

pytestmark = pytest.mark.e2e

MARKER = "ALPHASWARM_E2E_MARKER"
SAMPLE = re.compile(
    r"^sample (\d+): at=\S+Z replicas=(\d+) cpu=[\d.]+% memory=([\d.]+)MiB rx=\d+ tx=\d+ ok$"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One plaintext loopback server on the `local` provider for the module's tests."""
    running = start_server(tmp_path_factory.mktemp("node-example") / "state")
    try:
        yield running
    finally:
        code = running.terminate()
        assert code == 0, f"server exited with {code}:\n{running.log}"


def run(command: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def test_client_starts_streams_and_stops_real_replicas(
    node_example: NodeExample, server: ServerProcess
) -> None:
    tag = secrets.token_hex(8)
    samples = 6
    client = subprocess.Popen(
        node_example.command(
            "--target",
            server.address,
            "--service",
            "node-sleeper",
            "--samples",
            str(samples),
            "--env",
            f"{MARKER}={tag}",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert client.stdout is not None
    lines: list[str] = []
    try:
        # Read line by line: once the first sample is printed the client keeps the
        # service up for the remaining samples (~2.5 s), time to look at the processes.
        for line in client.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("sample 1:"):
                until_sync(lambda: len(marked(MARKER, tag)) == 2, "2 sleep replicas", within=10)
                replicas = marked(MARKER, tag)
                assert all(p.cmdline() == ["sleep", "300"] for p in replicas)
        code = client.wait(60)
        assert client.stderr is not None
        stderr = client.stderr.read()
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(10)
    output = "\n".join(lines)
    assert code == 0, f"exit {code}\nstdout:\n{output}\nstderr:\n{stderr}\nserver:\n{server.log}"
    assert stderr == ""

    assert lines[0] == f"target {server.address}, provider local"
    assert re.fullmatch(
        r"started examples/node-sleeper on local: state=DEPLOYMENT_STATE_\w+ "
        r"desired=2 ready=\d",
        lines[1],
    ), output
    parsed = [m for m in map(SAMPLE.match, lines) if m]
    assert [int(m.group(1)) for m in parsed] == list(range(1, samples + 1)), output
    assert all(int(m.group(2)) == 2 for m in parsed), output
    assert all(float(m.group(3)) > 0 for m in parsed), "two live processes use memory"
    assert f"received {samples} samples" in lines
    # StreamLogs without follow: each replica's last line, then the call ends by itself.
    logs = [line.split() for line in lines if line.startswith("log ")]
    assert [words[2:] for words in logs] == [["LOG_STREAM_STDOUT:", "started"]] * 2, output
    assert len({words[1] for words in logs}) == 2, "one line of each replica"
    assert "received 2 log lines" in lines
    assert lines[-1] == (
        "stopped examples/node-sleeper on local: state=DEPLOYMENT_STATE_STOPPED desired=0 ready=0"
    ), output
    until_sync(lambda: not marked(MARKER, tag), "no replica left after StopDeployment", within=10)


def test_invalid_spec_prints_code_reason_and_field(
    node_example: NodeExample, server: ServerProcess
) -> None:
    result = run(node_example.command("--target", server.address, "--replicas", "900"))
    assert result.returncode == 1, result
    assert (
        "error: StartDeployment failed: INVALID_ARGUMENT (3): invalid request: "
        "spec.replicas: must be between 0 and 500"
    ) in result.stderr
    assert "  reason: INVALID_ARGUMENT (domain alphaswarm.dev)" in result.stderr
    assert "  field spec.replicas: must be between 0 and 500" in result.stderr
    assert "stopped" not in result.stdout, "nothing was started, so nothing is stopped"


def test_unknown_provider_prints_not_found_and_its_metadata(
    node_example: NodeExample, server: ServerProcess
) -> None:
    result = run(node_example.command("--target", server.address, "--provider", "nope"))
    assert result.returncode == 1, result
    assert "error: StartDeployment failed: NOT_FOUND (5)" in result.stderr
    assert "  reason: PROVIDER_NOT_FOUND (domain alphaswarm.dev)" in result.stderr
    assert re.search(r"^  metadata known_aliases: .*\blocal\b", result.stderr, re.M)


def test_unreachable_server_is_unavailable_without_details(node_example: NodeExample) -> None:
    result = run(node_example.command("--target", "127.0.0.1:1"))
    assert result.returncode == 1, result
    # UNAVAILABLE, not DEADLINE_EXCEEDED: it failed at once instead of waiting out a deadline.
    assert "error: StartDeployment failed: UNAVAILABLE (14)" in result.stderr
    assert "reason:" not in result.stderr


def test_bad_arguments_exit_2_with_usage(node_example: NodeExample) -> None:
    result = run(node_example.command("--env", "NOEQUALS"))
    assert result.returncode == 2
    assert "--env wants KEY=VALUE" in result.stderr and "usage: node client.mjs" in result.stderr


def test_mtls_and_bearer_token(node_example: NodeExample, tmp_path: Path) -> None:
    """The README's secured server: TLS with client certificates plus a bearer token."""
    with secured_server(tmp_path) as secured:
        certs = secured.certs
        tls = [
            "--target",
            secured.localhost_target,
            "--ca-cert",
            str(certs / "ca.pem"),
            "--client-cert",
            str(certs / "client.pem"),
            "--client-key",
            str(certs / "client-key.pem"),
            "--namespace",
            "demo",
            "--samples",
            "2",
        ]
        token = secured.token
        tag = secrets.token_hex(8)
        ok = run(node_example.command(*tls, "--token", token, "--env", f"{MARKER}={tag}"))
        assert ok.returncode == 0, f"{ok.stdout}\n{ok.stderr}\n{secured.server.log}"
        assert "state=DEPLOYMENT_STATE_STOPPED" in ok.stdout
        assert not marked(MARKER, tag)

        anonymous = run(node_example.command(*tls))
        assert anonymous.returncode == 1
        assert "UNAUTHENTICATED (16)" in anonymous.stderr
        assert "  reason: UNAUTHENTICATED (domain alphaswarm.dev)" in anonymous.stderr

        # The token is scoped to namespace demo; the secret never reaches the output.
        elsewhere = run(node_example.command(*tls[:-4], "--token", token, "--namespace", "prod"))
        assert elsewhere.returncode == 1
        assert "PERMISSION_DENIED (7)" in elsewhere.stderr
        assert token not in elsewhere.stderr + elsewhere.stdout
