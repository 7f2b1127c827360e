"""Helpers for the docker_compose tests against a real Docker engine (DOCKER_HOST).

Clean-up finds what a test created by labels and exact names only: the engine's
name filters match unanchored, so ``web_default`` would also find (and remove)
``myweb_default``. Objects a test creates directly on the engine (not through the
provider) carry ``TEST_LABEL=<namespace>`` so that its namespace's clean-up finds
them as well.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from alphaswarm_controller.providers.docker_compose import compose, definitions
from alphaswarm_core.call import CallContext, current_call
from alphaswarm_core.testing import SpecFactory, spec_factory_for
from tests.waiting import until_sync

#: Marks engine objects a test created itself; the value is the test's namespace.
TEST_LABEL = "dev.alphaswarm.test-namespace"


#: A replica that writes one stderr line when it starts, then ``line <n>`` to stdout every
#: 0.2 s, and exits at once on SIGTERM (the sleep runs in the background so that the
#: trap is not held up by it).
LOG_SCRIPT = (
    "trap 'exit 0' TERM INT; echo \"started $HOSTNAME\" >&2; i=0; "
    'while :; do echo "line $i"; i=$((i+1)); sleep 0.2 & wait $!; done'
)


def log_spec_factory_for(image: str, script: str = LOG_SCRIPT) -> SpecFactory:
    """Specs whose replicas run ``script`` (by default ``LOG_SCRIPT``) in ``image``."""
    return spec_factory_for(image=image, command=("/bin/sh", "-c", script))


def provider_env(**overrides: str) -> dict[str, str]:
    """The test process's DOCKER_* and ALPHASWARM_* variables, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if k.startswith(("DOCKER_", "ALPHASWARM_"))}
    env.update(overrides)
    return env


@contextlib.contextmanager
def call_deadline(seconds: float) -> Iterator[CallContext]:
    """Run the body as an RPC whose deadline is ``seconds`` away, as the server would."""
    call = CallContext(
        method="Test", request_id="test", peer="test", deadline=time.monotonic() + seconds
    )
    token = current_call.set(call)
    try:
        yield call
    finally:
        current_call.reset(token)


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


def remove_container(api: docker.APIClient, container: str, timeout: float = 60.0) -> None:
    """Force-remove ``container``; one whose removal is already in progress (an earlier
    request the engine is still working on, under load) is waited for, with a bound."""
    try:
        api.remove_container(container, force=True)
    except docker.errors.NotFound:
        return
    except docker.errors.APIError as error:
        if error.status_code != 409 or "already in progress" not in str(error):
            raise
    until_sync(
        lambda: api.containers(all=True, filters={"id": container}),
        f"container {container} removed",
        holds=lambda found: not found,
        within=timeout,
        every=0.2,
    )


def remove_project(api: docker.APIClient, project: str) -> None:
    """Remove a project's containers, network, named volumes and definitions, and what
    the test created for it directly (``TEST_LABEL``)."""
    owned = [f"{compose.PROJECT}={project}", f"{TEST_LABEL}={project}"]
    for label in owned:
        for entry in api.containers(all=True, filters={"label": label}):
            remove_container(api, entry["Id"])
    for label in owned:
        for network in api.networks(filters={"label": label}):
            with contextlib.suppress(docker.errors.APIError):
                api.remove_network(network["Id"])
    for label in [*owned, f"{definitions.PROJECT}={project}"]:
        for volume in api.volumes(filters={"label": label}).get("Volumes") or []:
            with contextlib.suppress(docker.errors.APIError):
                api.remove_volume(volume["Name"])


#: What ``project_objects`` returns for a project the provider keeps nothing of.
NOTHING: dict[str, list[str]] = {"containers": [], "networks": [], "volumes": []}


def project_objects(api: docker.APIClient, project: str) -> dict[str, list[str]]:
    """Every container, network and volume the provider keeps for ``project``."""
    containers = api.containers(all=True, filters={"label": f"{compose.PROJECT}={project}"})
    networks = api.networks(filters={"label": f"{compose.PROJECT}={project}"})
    volumes = [
        *(api.volumes(filters={"label": f"{compose.PROJECT}={project}"}).get("Volumes") or []),
        *(api.volumes(filters={"label": f"{definitions.PROJECT}={project}"}).get("Volumes") or []),
    ]
    return {
        "containers": sorted(c["Names"][0].lstrip("/") for c in containers),
        "networks": sorted(n["Name"] for n in networks),
        "volumes": sorted(v["Name"] for v in volumes),
    }


def remove_everything_managed(api: docker.APIClient, namespaces: Collection[str]) -> None:
    """What the provider (or a test) created on this engine for ``namespaces`` (the
    session's own, handed out by the ``namespace`` fixture), or for a project named after
    one of them (a test's neighbour ``my<namespace>``): the end of a session. Never what
    other sessions made: pytest-xdist workers share the engine, and one worker's end
    removing another's replicas mid-roll was what 'a container vanished' had been."""
    managed = f"{compose.MANAGED_BY}={compose.MANAGED_BY_VALUE}"
    projects = {
        entry["Labels"].get(compose.PROJECT, "")
        for entry in api.containers(all=True, filters={"label": managed})
    }
    projects |= {
        n["Labels"].get(compose.PROJECT, "") for n in api.networks(filters={"label": managed})
    }
    for volume in api.volumes(filters={"label": definitions.KIND}).get("Volumes") or []:
        projects.add((volume.get("Labels") or {}).get(definitions.PROJECT, ""))
    for entry in api.containers(all=True, filters={"label": TEST_LABEL}):
        projects.add(entry["Labels"].get(TEST_LABEL, ""))
    for network in api.networks(filters={"label": TEST_LABEL}):
        projects.add((network.get("Labels") or {}).get(TEST_LABEL, ""))
    for project in filter(None, projects):
        if any(namespace in project for namespace in namespaces):
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
        self._accepted = 0
        self._live: set[int] = set()
        """Serial numbers (in accept order) of the connections the client has not closed."""
        self._cut = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    @property
    def open_connections(self) -> int:
        """Connections whose client has not closed its end yet (idle pooled ones count)."""
        with self._lock:
            return len(self._live)

    @property
    def accepted(self) -> int:
        """How many connections were accepted so far: a mark for ``open_since``."""
        with self._lock:
            return self._accepted

    def open_since(self, mark: int) -> int:
        """Connections accepted after ``mark`` that are still open. Unlike a difference of
        ``open_connections``, idle pooled connections the client closes meanwhile do not
        offset it."""
        with self._lock:
            return sum(1 for serial in self._live if serial > mark)

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
                self._accepted += 1
                serial = self._accepted
                self._live.add(serial)
            for args in ((client, upstream, serial), (upstream, client, None)):
                threading.Thread(target=self._pipe, args=args, daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, serial: int | None) -> None:
        """Copies one direction; ``serial`` is the connection's for the client's direction."""
        from_client = serial is not None
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
            if serial is not None:
                with self._lock:
                    self._live.discard(serial)
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
