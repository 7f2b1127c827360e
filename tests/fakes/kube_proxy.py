"""A fault-injecting HTTPS proxy in front of the real kube-apiserver.

Everything it forwards is the real API server's answer. What the real server
does not produce on demand comes from the shared plan (tests/fakes/faults.py),
consulted once per request, and from a few named switches, each in the wire
form a real API server (or the network in front of it) uses:

* ``Kind.THROTTLED``: 429 ``TooManyRequests`` with ``Retry-After`` (API Priority
  and Fairness rejects a request this way).
* ``Kind.UNAVAILABLE``: 503 ``ServiceUnavailable`` (``code="500"``: 500
  ``InternalError``); on a watch with ``code="ERROR"``: the watch opens (200)
  and its first event is an ``ERROR`` carrying a 500 ``Status``.
* ``Kind.GONE``: 410 ``Expired`` opening the request; on a watch with
  ``code="ERROR"``: an ``ERROR`` event with a 410 ``Status``, which is how the
  watch cache reports a resourceVersion that is too old.
* ``Kind.CONFLICT``: 409 ``Conflict``. ``Kind.DENIED``: 403 ``Forbidden``.
* ``drop_watches()`` cuts every open streaming response (watch, log follow) in
  the middle of its chunked body, as a load balancer or a restarted server does.
* ``delay`` holds every request that long first (a slow or overloaded server).
* ``hide(prefix)`` answers 404 ``NotFound`` for paths under ``prefix``: a cluster
  without that API group (``/apis/metrics.k8s.io``).
* ``before(operation, action)`` runs ``action`` once before forwarding the next
  request of ``operation``: a test makes a concurrent writer win a real race.

Operations are named ``kube:<verb> <resource>`` with the API's own verbs and
resource names (as RBAC and audit logs name them): ``kube:list deployments``,
``kube:watch deployments``, ``kube:patch deployments/scale``,
``kube:update configmaps``, ``kube:list pods.metrics.k8s.io``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .faults import Fault, Faults, Kind
from .loopback_server import LoopbackServer

#: Request headers passed upstream (the rest are hop-by-hop or set by http.client).
FORWARDED = ("Authorization", "Content-Type", "Accept", "User-Agent")
#: Groups whose resources are named without their group (the core group and apps).
PLAIN_GROUPS = ("", "apps")
_STATUS = {
    Kind.THROTTLED: (429, "TooManyRequests", "the server has received too many requests"),
    Kind.UNAVAILABLE: (503, "ServiceUnavailable", "the server is currently unavailable"),
    Kind.CONFLICT: (409, "Conflict", "the object has been modified; apply your changes again"),
    Kind.GONE: (410, "Expired", "too old resource version"),
    Kind.DENIED: (403, "Forbidden", "forbidden by an injected fault"),
}
_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<resource>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$"
)


@dataclass(frozen=True, slots=True)
class Forwarded:
    """One request the proxy received."""

    method: str
    path: str
    query: dict[str, str]
    operation: str
    authorization: str = ""
    """The Authorization header the client sent (forwarded as it came)."""


def operation_of(method: str, path: str, query: dict[str, str]) -> str:
    """``kube:<verb> <resource>`` for a request (``kube:get /version`` for non-resource paths)."""
    match = _PATH.match(path)
    if match is None or (match["core"] is None and match["group"] is None):
        return f"kube:{method.lower()} {path}"
    resource = match["resource"]
    if match["sub"]:
        resource = f"{resource}/{match['sub']}"
    group = match["group"] or ""
    if group not in PLAIN_GROUPS:
        resource = f"{resource}.{group}"
    collection = match["name"] is None
    watching = query.get("watch") in ("true", "1")
    verb = {
        "GET": ("watch" if watching else "list") if collection else "get",
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "deletecollection" if collection else "delete",
    }.get(method, method.lower())
    return f"kube:{verb} {resource}"


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class KubeFaultProxy:
    """``start()`` on 127.0.0.1 with TLS (``cert``/``key`` signed by the CA clients trust),
    forwarding to ``upstream`` (the API server's URL, verified against ``upstream_ca``)."""

    def __init__(
        self,
        upstream: str,
        upstream_ca: bytes,
        cert: str,
        key: str,
        faults: Faults | None = None,
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 443
        self.upstream_context = ssl.create_default_context(cadata=upstream_ca.decode())
        self.serving = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.serving.load_cert_chain(cert, key)
        self.faults = faults or Faults()
        self.requests: list[Forwarded] = []
        self.delay = 0.0
        self._hidden: list[str] = []
        self._before: dict[str, Callable[[], None]] = {}
        self._streams: set[tuple[Any, http.client.HTTPSConnection]] = set()
        self._lock = threading.Lock()
        self._server: LoopbackServer | None = None

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return self._server.url

    def start(self) -> KubeFaultProxy:
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = LoopbackServer(Handler, self.serving)
        return self

    def stop(self) -> None:
        self.drop_watches()
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> KubeFaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- switches -------------------------------------------------------------------------

    def drop_watches(self) -> None:
        """Cut every open streaming response mid-body."""
        with self._lock:
            streams, self._streams = list(self._streams), set()
        for client, upstream in streams:
            for sock in (client, upstream.sock):
                with contextlib.suppress(OSError, AttributeError):
                    sock.shutdown(socket.SHUT_RDWR)

    def hide(self, prefix: str) -> None:
        self._hidden.append(prefix)

    def before(self, operation: str, action: Callable[[], None]) -> None:
        self._before[operation] = action

    def sent(self, operation: str) -> list[Forwarded]:
        with self._lock:
            return [r for r in self.requests if r.operation == operation]

    # -- the handler's side -----------------------------------------------------------------

    def _record(
        self, method: str, path: str, query: dict[str, str], authorization: str = ""
    ) -> Forwarded:
        request = Forwarded(method, path, query, operation_of(method, path, query), authorization)
        with self._lock:
            self.requests.append(request)
        return request

    def _streaming(self, pair: tuple[Any, http.client.HTTPSConnection], open_: bool) -> None:
        with self._lock:
            if open_:
                self._streams.add(pair)
            else:
                self._streams.discard(pair)


class _Handler(BaseHTTPRequestHandler):
    owner: KubeFaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the tests read ``requests``; stderr stays quiet

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        proxy = self.owner
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        authorization = self.headers.get("Authorization", "")
        request = proxy._record(method, parts.path, query, authorization)
        if proxy.delay:
            time.sleep(proxy.delay)
        if any(parts.path.startswith(prefix) for prefix in proxy._hidden):
            self._status(404, "NotFound", "the server could not find the requested resource")
            return
        fault = proxy.faults.take(request.operation, parts.path)
        if fault is not None:
            self._fault(fault, watching=query.get("watch") in ("true", "1"))
            return
        action = proxy._before.pop(request.operation, None)
        if action is not None:
            action()
        self._forward(method, body)

    def _fault(self, fault: Fault, *, watching: bool) -> None:
        code, reason, message = _STATUS[fault.kind]
        if fault.kind is Kind.UNAVAILABLE and fault.code == "500":
            code, reason = 500, "InternalError"
        if watching and fault.code == "ERROR" and fault.kind in (Kind.GONE, Kind.UNAVAILABLE):
            if fault.kind is Kind.UNAVAILABLE:
                code, reason = 500, "InternalError"
            event = {"type": "ERROR", "object": status_body(code, reason, fault.message)}
            payload = json.dumps(event).encode() + b"\n"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        headers = {}
        if fault.kind in (Kind.THROTTLED, Kind.UNAVAILABLE):
            headers["Retry-After"] = f"{fault.retry_after or 1:g}"
        self._status(code, reason, f"{message} ({fault.message})", headers)

    def _status(
        self, code: int, reason: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        payload = json.dumps(status_body(code, reason, message)).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _forward(self, method: str, body: bytes | None) -> None:
        proxy = self.owner
        upstream = http.client.HTTPSConnection(
            proxy.upstream_host, proxy.upstream_port, context=proxy.upstream_context, timeout=600
        )
        try:
            headers = {h: self.headers[h] for h in FORWARDED if self.headers.get(h)}
            upstream.request(method, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            self.send_response(answer.status)
            for name in ("Content-Type", "Retry-After", "Audit-Id"):
                if answer.getheader(name):
                    self.send_header(name, answer.getheader(name) or "")
            if answer.getheader("Content-Length") is not None:
                payload = answer.read()
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            self._stream(answer, (self.connection, upstream))
        finally:
            upstream.close()

    def _stream(
        self, answer: http.client.HTTPResponse, pair: tuple[Any, http.client.HTTPSConnection]
    ) -> None:
        """A chunked body (a watch, a followed log), passed on as it arrives until either
        side ends or ``drop_watches`` cuts both."""
        proxy = self.owner
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        proxy._streaming(pair, True)
        try:
            while True:
                data = answer.read1(65536)
                if not data:
                    self.wfile.write(b"0\r\n\r\n")
                    return
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
        except (OSError, http.client.HTTPException):
            self.close_connection = True
        finally:
            proxy._streaming(pair, False)
