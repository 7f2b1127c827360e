"""The README's "Securing the server" walkthrough, command for command, against a real server."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.processes import marked
from tests.e2e.server_process import ServerProcess, start_server
from tests.e2e.test_grpcurl import grpcurl_binary
from tests.waiting import until_sync

SERVER = [sys.executable, "-m", "alphaswarm_controller"]
CLI = [sys.executable, "-m", "alphaswarm_client"]


def run(command: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path, str]]:
    certs = tmp_path / "certs"
    assert run([*SERVER, "make-dev-certs", str(certs)]).returncode == 0
    token = "asw_" + secrets.token_urlsafe(32)
    digest = run([*SERVER, "hash-token"], stdin=token).stdout.strip()
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        f"tokens:\n  - name: deployer\n    sha256: {digest}\n    role: operator\n"
        "    namespaces: [demo]\n"
    )
    server = start_server(
        tmp_path / "state",
        {
            "ALPHASWARM_CP_TLS_CERT": str(certs / "server.pem"),
            "ALPHASWARM_CP_TLS_KEY": str(certs / "server-key.pem"),
            "ALPHASWARM_CP_TLS_CLIENT_CA": str(certs / "ca.pem"),
            "ALPHASWARM_CP_TOKENS_FILE": str(tokens),
        },
    )
    yield server, certs, token
    assert server.terminate() == 0, server.log


def test_mtls_and_token_through_grpcurl_and_cli(secured: tuple[ServerProcess, Path, str]) -> None:
    server, certs, token = secured
    target = "localhost:" + server.address.rsplit(":", 1)[1]
    assert "mTLS" in server.log
    tls = [
        "-cacert",
        str(certs / "ca.pem"),
        "-cert",
        str(certs / "client.pem"),
        "-key",
        str(certs / "client-key.pem"),
    ]
    listed = run(
        [
            grpcurl_binary(),
            *tls,
            "-H",
            f"authorization: Bearer {token}",
            "-d",
            '{"namespace": "demo"}',
            target,
            "alphaswarm.provider.v1.ProviderService/ListDeployments",
        ]
    )
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {}

    cli_tls = [
        "--target",
        target,
        "--ca-cert",
        str(certs / "ca.pem"),
        "--client-cert",
        str(certs / "client.pem"),
        "--client-key",
        str(certs / "client-key.pem"),
    ]
    tag = secrets.token_hex(8)
    started = run(
        [
            *CLI,
            *cli_tls,
            "--token",
            token,
            "-n",
            "demo",
            "start",
            "web",
            "--env",
            f"ALPHASWARM_E2E_MARKER={tag}",
            "--",
            "sleep",
            "300",
        ]
    )
    assert started.returncode == 0, started.stderr
    until_sync(lambda: len(marked("ALPHASWARM_E2E_MARKER", tag)) == 1, "the replica")

    no_token = run([*CLI, *cli_tls, "-n", "demo", "status", "web"])
    assert no_token.returncode == 1 and "UNAUTHENTICATED" in no_token.stderr
    outside = run([*CLI, *cli_tls, "--token", token, "-n", "prod", "status", "web"])
    assert outside.returncode == 1 and "PERMISSION_DENIED" in outside.stderr
    assert token not in outside.stderr

    no_client_cert = run(
        [
            grpcurl_binary(),
            "-connect-timeout",
            "3",
            "-cacert",
            str(certs / "ca.pem"),
            target,
            "list",
        ]
    )
    assert no_client_cert.returncode != 0, "mTLS refuses a client without a certificate"

    stopped = run([*CLI, *cli_tls, "--token", token, "-n", "demo", "stop", "web"])
    assert stopped.returncode == 0, stopped.stderr
    until_sync(lambda: not marked("ALPHASWARM_E2E_MARKER", tag), "no replica left")
