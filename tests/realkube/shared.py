"""One control plane for a whole test run, shared by every pytest process in it.

scripts/test.sh starts it before pytest and the provider matrix::

    python -m tests.realkube.shared DIR     # ALPHASWARM_KUBE_BIN_DIR names the binaries

and exports ``ALPHASWARM_TEST_KUBE_SHARED=DIR``; the ``real_kube_cluster`` fixture
then joins it (``SharedControlPlane``) instead of starting its own. Why: the fixture is
session-scoped, so each xdist worker and each matrix job's worker that needs Kubernetes
started a control plane of its own, up to sixteen in a run, and the control planes
together cost as much CPU as all the main run's test code (measured: README, "What a
run costs"). Tests were already isolated by namespace (each makes its own) and by the
names of what they make cluster-wide (RBAC objects carry a suffix).

What the processes share: the API server, its admin kubeconfig, the bearer token, and
the CA, so that a process can issue serving certificates (its fault proxies) the API
server's clients trust. What each keeps: its token authenticators (EKS, AKS, GKE
beds). The API server has one token webhook, this process's; it forwards every
TokenReview to the webhooks the test processes registered, one file each in
``DIR/webhooks`` holding its URL, and the first that vouches for the token answers
(``ForwardToRegistered``). A test that restarts the API server (test_watch.py) starts
a private control plane instead.

The process stops the control plane on SIGTERM or SIGINT; its components also die
with it (pdeathsig, processes.py). If it cannot start, it writes why to ``DIR/failed``
and exits 1; the fixture reports that text.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import ssl
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from types import TracebackType

from .cluster import READY_TIMEOUT, Endpoint, KubeCluster, wait_for_metrics_api
from .pki import KeyPair, Pki
from .webhook import TokenWebhook, User

log = logging.getLogger(__name__)
SHARED_ENV = "ALPHASWARM_TEST_KUBE_SHARED"
BIN_DIR_ENV = "ALPHASWARM_KUBE_BIN_DIR"
STATE_FILE = "cluster.json"
FAILED_FILE = "failed"
WEBHOOKS = "webhooks"
#: A test process's webhook answers from memory; one that does not answer in this
#: time is gone or stuck, and the next one is asked (the API server waits for all).
FORWARD_TIMEOUT = 5.0


class ForwardToRegistered:
    """The run's token authenticator: asks each registered test process's webhook."""

    def __init__(self, directory: Path, client: KeyPair, ca: Path) -> None:
        self.directory = directory
        context = ssl.create_default_context(cafile=str(ca))
        context.load_cert_chain(str(client.cert), str(client.key))
        self._context = context

    def __call__(self, token: str) -> User | None:
        review = json.dumps(
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenReview",
                "spec": {"token": token},
            }
        ).encode()
        for registration in sorted(self.directory.glob("*.url")):
            try:
                url = registration.read_text().strip()
                request = urllib.request.Request(
                    url, review, {"Content-Type": "application/json"}, method="POST"
                )
                with urllib.request.urlopen(
                    request, timeout=FORWARD_TIMEOUT, context=self._context
                ) as answer:
                    status = json.load(answer).get("status") or {}
            except (OSError, ValueError):
                continue  # its process ended (or is ending): the others may know the token
            if status.get("authenticated"):
                user = status.get("user") or {}
                return User(
                    str(user.get("username") or ""),
                    tuple(str(g) for g in user.get("groups") or ()),
                    str(user.get("uid") or ""),
                )
        return None


class SharedControlPlane:
    """A test process's view of the run's control plane (``ControlPlane``, cluster.py)."""

    def __init__(self, directory: Path) -> None:
        state = json.loads((directory / STATE_FILE).read_text())
        self.workdir = Path(tempfile.mkdtemp(prefix="alphaswarm-kubeview-"))
        self.pki = Pki(self.workdir, issuer=(Path(state["ca_cert"]), Path(state["ca_key"])))
        self.endpoint: Endpoint | None = Endpoint(
            state["url"], self.pki.ca_pem, state["token"], Path(state["kubeconfig"])
        )
        serving = self.serving_certificate("token-webhook")
        self.token_webhook: TokenWebhook | None = TokenWebhook(serving, self.pki.ca_cert).start()
        self._registration = directory / WEBHOOKS / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.url"
        staged = self._registration.with_suffix(".tmp")
        staged.write_text(self.token_webhook.url)
        staged.rename(self._registration)  # the router never reads half a URL

    @classmethod
    def join(cls, directory: Path, timeout: float = READY_TIMEOUT) -> SharedControlPlane:
        """Once the run's control plane is up (scripts/test.sh starts it beside other set-up)."""
        deadline = time.monotonic() + timeout
        while not (directory / STATE_FILE).exists():
            failed = directory / FAILED_FILE
            if failed.exists():
                raise RuntimeError(f"the run's control plane did not start: {failed.read_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the run's control plane was not up within {timeout:.0f} s")
            time.sleep(0.25)
        return cls(directory)

    def serving_certificate(self, name: str) -> KeyPair:
        """A certificate for 127.0.0.1/localhost from the cluster CA (clients trust it)."""
        return self.pki.loopback_serving(name)

    def wait_for_metrics_api(self, timeout: float = READY_TIMEOUT) -> None:
        assert self.endpoint is not None
        wait_for_metrics_api(self.endpoint, timeout)

    def stop(self) -> None:
        """Leave the run's control plane (it goes on for the others). Idempotent."""
        self._registration.unlink(missing_ok=True)
        if self.token_webhook is not None:
            self.token_webhook.stop()
            self.token_webhook = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SharedControlPlane:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(directory: Path) -> int:
    """Start the control plane, publish how to reach it, run until SIGTERM or SIGINT."""
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    (directory / WEBHOOKS).mkdir(mode=0o700, exist_ok=True)
    bin_dir = os.environ.get(BIN_DIR_ENV)
    if not bin_dir:
        (directory / FAILED_FILE).write_text(f"{BIN_DIR_ENV} does not name the binaries")
        return 2
    # Its files live in DIR, out of reach of the temp dir's sweep of orphaned clusters.
    cluster = KubeCluster(Path(bin_dir), parent=directory)
    try:
        endpoint = cluster.start()
        assert cluster.token_webhook is not None
        router = ForwardToRegistered(
            directory / WEBHOOKS,
            cluster.pki.client("token-router", "alphaswarm-test-token-router"),
            cluster.pki.ca_cert,
        )
        cluster.token_webhook.register(router)
        state = {
            "url": endpoint.url,
            "token": endpoint.token,
            "kubeconfig": str(endpoint.kubeconfig),
            "ca_cert": str(cluster.pki.ca_cert),
            "ca_key": str(cluster.pki.ca_key),
        }
        staged = directory / f"{STATE_FILE}.tmp"
        staged.touch(mode=0o600)
        staged.write_text(json.dumps(state))
        staged.rename(directory / STATE_FILE)
        print(
            f"real Kubernetes control plane up in {cluster.startup_seconds:.1f}s at "
            f"{endpoint.url}, shared by the run",
            flush=True,
        )
        while not stopping.wait(1.0):
            pass
        return 0
    except Exception as error:
        (directory / FAILED_FILE).write_text(f"{type(error).__name__}: {error}")
        raise
    finally:
        cluster.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    if len(sys.argv) != 2:
        sys.exit(f"usage: {BIN_DIR_ENV}=... python -m tests.realkube.shared DIR")
    sys.exit(serve(Path(sys.argv[1])))
