"""The README's secured server for the examples: mTLS plus a bearer token for one namespace."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.server_process import ServerProcess, start_server

SERVER = [sys.executable, "-m", "alphaswarm_controller"]
NAMESPACE = "demo"


@dataclass(frozen=True)
class SecuredServer:
    """A running server that wants client certificates and a token scoped to `demo`."""

    server: ServerProcess
    certs: Path
    token: str

    @property
    def localhost_target(self) -> str:
        """The address by the name in the server certificate (localhost, not 127.0.0.1)."""
        return "localhost:" + self.server.address.rsplit(":", 1)[1]


def run(command: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


@contextmanager
def secured_server(directory: Path) -> Iterator[SecuredServer]:
    """Dev certificates, one operator token for namespace demo, and a server using both."""
    certs = directory / "certs"
    made = run([*SERVER, "make-dev-certs", str(certs)])
    assert made.returncode == 0, made.stderr
    token = "asw_" + secrets.token_urlsafe(32)
    hashed = run([*SERVER, "hash-token"], stdin=token)
    assert hashed.returncode == 0, hashed.stderr
    tokens = directory / "tokens.yaml"
    tokens.write_text(
        f"tokens:\n  - name: deployer\n    sha256: {hashed.stdout.strip()}\n"
        f"    role: operator\n    namespaces: [{NAMESPACE}]\n"
    )
    server = start_server(
        directory / "state",
        {
            "ALPHASWARM_CP_TLS_CERT": str(certs / "server.pem"),
            "ALPHASWARM_CP_TLS_KEY": str(certs / "server-key.pem"),
            "ALPHASWARM_CP_TLS_CLIENT_CA": str(certs / "ca.pem"),
            "ALPHASWARM_CP_TOKENS_FILE": str(tokens),
        },
    )
    try:
        yield SecuredServer(server, certs, token)
    finally:
        assert server.terminate() == 0, server.log
