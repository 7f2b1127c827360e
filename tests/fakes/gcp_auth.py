"""Offline Google credentials for tests: a generated service-account key and a token endpoint.

google-auth loads the key file as it would a real one; its ``token_uri``
points at ``TokenServer`` on 127.0.0.1, which answers the JWT-bearer grant
with an access token, so credential refresh runs the real OAuth flow.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

PROJECT = "alphaswarm-test"


def write_service_account(
    path: Path, *, project: str = PROJECT, token_uri: str = "http://127.0.0.1:9/token"
) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": project,
                "private_key_id": "test-key",
                "private_key": pem,
                "client_email": f"controller@{project}.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": token_uri,
            }
        )
    )
    return path


class TokenServer:
    """An OAuth 2.0 token endpoint answering JWT-bearer grants with ``token`` (else token-<n>)."""

    def __init__(self, token: str | None = None, lifetime_seconds: int = 3600) -> None:
        self.issued: list[str] = []
        self.token = token
        self.lifetime = lifetime_seconds
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = parse_qs(self.rfile.read(length).decode())
                grant = form.get("grant_type", [""])[0]
                if grant != "urn:ietf:params:oauth:grant-type:jwt-bearer":
                    self._reply(400, {"error": "unsupported_grant_type"})
                    return
                token = owner.token or f"token-{len(owner.issued) + 1}"
                owner.issued.append(token)
                self._reply(
                    200,
                    {"access_token": token, "expires_in": owner.lifetime, "token_type": "Bearer"},
                )

            def _reply(self, code: int, body: dict[str, object]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> TokenServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
