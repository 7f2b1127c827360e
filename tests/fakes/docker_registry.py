"""A registry on 127.0.0.1 that answers the version check and never serves a manifest.

It either stalls (``mode="stall"``) or throttles (``mode="throttle"``). The
docker_compose provider must bound an image pull by the caller's deadline: a
registry that stalls is the one case where a pull can only end that way, so the
test does not depend on how fast anything is. A throttling registry is how Docker
Hub answers over its pull rate limit. The engine pulls from it itself:
dockerd treats 127.0.0.0/8 as an insecure registry by default ("Insecure
registries", dockerd documentation), so plain HTTP on a loopback port works with
no daemon setting.

Wire behaviour follows the Registry HTTP API V2 (distribution spec,
"API Version Check"): ``GET /v2/`` answers 200 with the header
``Docker-Distribution-API-Version: registry/2.0``. Every other request (the
manifest ``HEAD``/``GET`` of a pull) is, when stalling, held open without an
answer until the engine gives up on it or ``stop()`` is called (``stalled``
counts those requests, ``released`` the ones the engine itself closed); when
throttling, answered 429 with the spec's error body, code ``TOOMANYREQUESTS``
("Error codes" of the distribution spec).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v2":
            body = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Docker-Distribution-API-Version", "registry/2.0")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self._stall()

    def do_HEAD(self) -> None:
        self._stall()

    def _stall(self) -> None:
        owner = self.server.owner
        if owner.mode == "throttle":
            body = (
                b'{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your '
                b'pull rate limit.","detail":null}]}'
            )
            self.send_response(429)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            with owner.lock:
                owner.throttled += 1
            return
        with owner.lock:
            owner.stalled += 1
            owner.connections.append(self.connection)
        owner.stalled_event.set()
        # Block until the peer closes the connection (recv returns b"") or stop()
        # shuts it down; never answer.
        with contextlib.suppress(OSError):
            while self.connection.recv(1024):
                pass
        with owner.lock:
            if not owner.stopping:
                owner.released += 1
        owner.released_event.set()
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: RegistryFake


class RegistryFake:
    """``with RegistryFake("stall") as registry: registry.image("x")`` names an image it
    will never deliver."""

    def __init__(self, mode: Literal["stall", "throttle"] = "stall") -> None:
        self.mode = mode
        self.throttled = 0
        self.lock = threading.Lock()
        self.stalled = 0
        self.released = 0
        self.stopping = False
        self.connections: list[socket.socket] = []
        self.stalled_event = threading.Event()
        self.released_event = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        assert self._server is not None, "start() first"
        return f"127.0.0.1:{self._server.server_address[1]}"

    def image(self, name: str, tag: str = "1") -> str:
        return f"{self.address}/{name}:{tag}"

    def start(self) -> RegistryFake:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="registry-fake", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        with self.lock:
            self.stopping = True
            connections, self.connections = self.connections, []
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None

    def __enter__(self) -> RegistryFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
