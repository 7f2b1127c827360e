"""The API server's token webhook: how the tests' managed-cluster credentials are checked.

kube-apiserver asks this server (``--authentication-token-webhook-config-file``)
about every bearer token its own authenticators do not know, with a
``TokenReview`` (authentication.k8s.io/v1), as managed clusters do: EKS runs
aws-iam-authenticator this way, GKE checks Google tokens this way. What a token
means is up to the authenticators a test bed registers
(``TokenWebhook.register``): the EKS bed replays the presigned STS URL, the GKE
bed asks the OAuth server's tokeninfo, the AKS bed knows its cluster user's
token. A token nobody vouches for is refused (``authenticated: false``), and the
API server answers the client 401.

The webhook serves HTTPS with a certificate from the cluster CA and accepts only
the API server's client certificate (from the same CA), as the Kubernetes docs
recommend for webhook authenticators.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from tests.fakes.loopback_server import LoopbackServer

from .pki import KeyPair

log = logging.getLogger(__name__)
PATH = "/authenticate"
MAX_BODY = 64 * 1024


@dataclass(frozen=True, slots=True)
class User:
    """Who a token belongs to, as the API server's authorizer (RBAC) sees it."""

    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""


Authenticator = Callable[[str], User | None]
"""``token -> User`` when the token is this authenticator's and valid, else None."""


class TokenWebhook:
    def __init__(self, serving: KeyPair, ca: Path) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(serving.cert), str(serving.key))
        context.load_verify_locations(str(ca))
        context.verify_mode = ssl.CERT_REQUIRED  # only the API server may ask
        self._context = context
        self._ca = ca
        self._authenticators: list[Authenticator] = []
        self._lock = threading.Lock()
        self.reviews = 0
        self._server: LoopbackServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"{self._server.url}{PATH}"

    def start(self) -> TokenWebhook:
        webhook = self

        class Handler(_Handler):
            owner = webhook

        self._server = LoopbackServer(Handler, self._context)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def config_file(self, path: Path, client: KeyPair) -> Path:
        """The kubeconfig-format file ``--authentication-token-webhook-config-file`` reads."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "token-webhook",
                    "cluster": {"server": self.url, "certificate-authority": str(self._ca)},
                }
            ],
            "users": [
                {
                    "name": "kube-apiserver",
                    "user": {
                        "client-certificate": str(client.cert),
                        "client-key": str(client.key),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "webhook",
                    "context": {"cluster": "token-webhook", "user": "kube-apiserver"},
                }
            ],
            "current-context": "webhook",
        }
        path.write_text(json.dumps(config, indent=2))
        return path

    def register(self, authenticator: Authenticator) -> None:
        with self._lock:
            self._authenticators.append(authenticator)

    def unregister(self, authenticator: Authenticator) -> None:
        with self._lock:
            if authenticator in self._authenticators:
                self._authenticators.remove(authenticator)

    def review(self, token: str) -> User | None:
        with self._lock:
            authenticators = list(self._authenticators)
            self.reviews += 1
        for authenticate in authenticators:
            try:
                user = authenticate(token)
            except Exception:  # one broken authenticator must not refuse every token
                log.exception("token authenticator %r failed", authenticate)
                continue
            if user is not None:
                return user
        return None


class _Handler(BaseHTTPRequestHandler):
    owner: TokenWebhook

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if self.path.split("?")[0] != PATH or not 0 < length <= MAX_BODY:
            self._reply(400, {"error": "expected a TokenReview"})
            return
        review = json.loads(self.rfile.read(length))
        token = str((review.get("spec") or {}).get("token") or "")
        user = self.owner.review(token)
        status: dict[str, Any]
        if user is None:
            status = {"authenticated": False, "error": "token not recognised"}
        else:
            status = {
                "authenticated": True,
                "user": {
                    "username": user.username,
                    "uid": user.uid or user.username,
                    "groups": list(user.groups),  # the API server adds system:authenticated
                },
            }
        self._reply(
            200,
            {
                "apiVersion": review.get("apiVersion") or "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "status": status,
            },
        )

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class StaticTokens:
    """Tokens a managed cluster hands out itself (AKS local accounts): token -> user."""

    def __init__(self, users: dict[str, User]) -> None:
        self.users = users

    def __call__(self, token: str) -> User | None:
        return self.users.get(token)
