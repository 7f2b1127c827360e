"""Plain HTTP(S) calls the fixture makes itself: readiness probes and the admin's setup requests.

The components' own readiness endpoints (etcd ``/health``, ``/readyz`` and
``/healthz``) over TLS verified against the test CA; setup objects posted
with the admin's client certificate. Nothing here stands in for an API.
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from .pki import KeyPair
from .processes import ComponentFailed, free_port


class Probe(Protocol):
    def fresh_args(self) -> list[str]:
        """The component's argv with newly picked ports."""
        ...

    def check(self) -> bool:
        """True once the component is ready."""
        ...


class EtcdProbe:
    def __init__(self, make_args: Callable[[int, int], list[str]]) -> None:
        self.make_args = make_args
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fresh_args(self) -> list[str]:
        self.port = free_port()
        return self.make_args(self.port, free_port())

    def check(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", "/health")
            response = connection.getresponse()
            return response.status == 200 and b'"true"' in response.read()
        finally:
            connection.close()


class HttpsProbe:
    """GET ``path`` over TLS verified against the test CA; ready when it answers ``ok``."""

    def __init__(
        self,
        make_args: Callable[[int], Sequence[str]],
        ca: Path,
        *,
        path: str = "/healthz",
        client: KeyPair | None = None,
    ) -> None:
        self.make_args = make_args
        self.path = path
        self.context = ssl.create_default_context(cafile=str(ca))
        if client is not None:
            self.context.load_cert_chain(str(client.cert), str(client.key))
        self.port = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def fresh_args(self) -> list[str]:
        self.port = free_port()
        return list(self.make_args(self.port))

    def check(self) -> bool:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self.context, timeout=5
        )
        try:
            connection.request("GET", self.path)
            response = connection.getresponse()
            return response.status == 200 and response.read().strip() == b"ok"
        finally:
            connection.close()


class AdminApi:
    """Just enough of the API for the fixture's own setup, as the admin (client certificate)."""

    def __init__(self, url: str, ca_pem: bytes, admin: KeyPair) -> None:
        self.context = ssl.create_default_context(cadata=ca_pem.decode())
        self.context.load_cert_chain(str(admin.cert), str(admin.key))
        self.port = int(url.rsplit(":", 1)[1])

    @classmethod
    def from_kubeconfig(cls, url: str, ca_pem: bytes, kubeconfig: Path) -> AdminApi:
        user = json.loads(kubeconfig.read_text())["users"][0]["user"]
        return cls(url, ca_pem, KeyPair(Path(user["client-certificate"]), Path(user["client-key"])))

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.port, context=self.context, timeout=30
        )
        try:
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            connection.close()

    def post(self, path: str, body: Any) -> Any:
        """POST and return the answer; anything but 200/201 fails."""
        status, answer = self._request("POST", path, body)
        if status not in (200, 201):
            raise ComponentFailed(f"POST {path} answered {status}: {answer}")
        return answer

    def put(self, path: str, body: Any) -> tuple[int, Any]:
        """PUT; the status and answer, whatever they are (a test may expect a 409)."""
        return self._request("PUT", path, body)

    def create(self, path: str, body: Any) -> None:
        """POST; an object that already exists (409) counts as created."""
        status, answer = self._request("POST", path, body)
        if status not in (200, 201, 409):
            raise ComponentFailed(f"POST {path} answered {status}: {answer}")

    def create_all(self, objects: Sequence[tuple[str, Any]]) -> None:
        for path, body in objects:
            self.create(path, body)

    def delete(self, path: str) -> None:
        status, answer = self._request("DELETE", path)
        if status not in (200, 202, 404):
            raise ComponentFailed(f"DELETE {path} answered {status}: {answer}")

    def find(self, path: str) -> Any | None:
        """GET; None when it does not exist (404)."""
        status, answer = self._request("GET", path)
        if status == 404:
            return None
        if status != 200:
            raise ComponentFailed(f"GET {path} answered {status}: {answer}")
        return answer

    def get(self, path: str) -> Any:
        status, answer = self._request("GET", path)
        if status != 200:
            raise ComponentFailed(f"GET {path} answered {status}: {answer}")
        return answer


def status_as(url: str, ca_pem: bytes, token: str, path: str) -> int:
    """The HTTP status a GET of ``path`` gets with bearer ``token``: what RBAC allows whom."""
    host, port = url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cadata=ca_pem.decode())
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()
