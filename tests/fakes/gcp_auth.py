"""Offline Google credentials for tests: a generated service-account key and a token endpoint.

google-auth loads the key file as it would a real one; its ``token_uri``
points at ``TokenServer`` on 127.0.0.1, which answers the JWT-bearer grant
with an access token, so credential refresh runs the real OAuth flow. Like
Google's OAuth server it also answers ``GET /tokeninfo?access_token=...`` with
the email the token was issued to, which is how GKE's API server learns who
sends a Google access token (``GkeAuthenticator``, for the tests' real API
server's token webhook).
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.realkube.webhook import User

PROJECT = "alphaswarm-test"


def account_email(project: str = PROJECT) -> str:
    """The service account the generated key belongs to."""
    return f"controller@{project}.iam.gserviceaccount.com"


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
                "client_email": account_email(project),
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
        self.emails: dict[str, str] = {}
        """Access token -> the email of the account it was issued to."""
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
                # The assertion is a JWT signed by the service account: its issuer is
                # the account's email (RFC 7523), which tokeninfo reports.
                assertion = form.get("assertion", [""])[0]
                owner.emails[token] = _issuer(assertion)
                self._reply(
                    200,
                    {"access_token": token, "expires_in": owner.lifetime, "token_type": "Bearer"},
                )

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                token = parse_qs(parts.query).get("access_token", [""])[0]
                email = owner.emails.get(token)
                if parts.path != "/tokeninfo" or not email:
                    self._reply(400, {"error": "invalid_token"})
                    return
                self._reply(
                    200,
                    {"email": email, "email_verified": "true", "expires_in": owner.lifetime},
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
        self.tokeninfo_url = f"http://127.0.0.1:{self._server.server_address[1]}/tokeninfo"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> TokenServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _issuer(assertion: str) -> str:
    try:
        payload = assertion.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return ""
    return str(claims.get("iss") or "")


class GkeAuthenticator:
    """GKE's API server side of a Google access token: tokeninfo says whose it is, and the
    Kubernetes username is that email (what RBAC bindings for Google identities name)."""

    def __init__(self, tokeninfo_url: str) -> None:
        self.tokeninfo_url = tokeninfo_url
        self.checked = 0

    def __call__(self, token: str) -> User | None:
        self.checked += 1
        url = f"{self.tokeninfo_url}?access_token={quote(token)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                info = json.loads(answer.read())
        except (urllib.error.URLError, ValueError):
            return None
        email = str(info.get("email") or "")
        return User(email) if email and info.get("email_verified") == "true" else None
