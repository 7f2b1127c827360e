"""KubeCluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on loopback.

Everything is real Kubernetes except the kubelet: kwok (sigs.k8s.io/kwok, the
Kubernetes SIG project for simulated nodes) plays the node. It watches the
pods the real scheduler bound to its Node and reports them Running/Ready
through the API (kwok's default stages, the ones kwokctl uses), holds the
Node's Lease, and removes deleted pods. Deployments, ReplicaSets, garbage
collection and namespaces are the real controllers'.

Credentials: one CA; the admin (``system:masters``) and each component has a
client certificate; the tests' provider uses a static bearer token, like a
managed cluster's token, bound to ``cluster-admin`` by a ClusterRoleBinding.
Authorization is ``Node,RBAC``.
"""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from .pki import KeyPair, Pki
from .processes import Component, ComponentFailed, free_port, port_in_use, wait_until

BUILD_COMMAND = "bash scripts/kube/build.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # the first address of SERVICE_CIDR: the ``kubernetes`` Service
POD_CIDR = "10.244.0.1/24"  # kwok hands out pod IPs from here; nothing routes to them
NODE_NAME = "kwok-node-0"
NODE_SELECTOR_ANNOTATION = "kwok.x-k8s.io/node"
TOKEN_USER = "alphaswarm-tests"
TOKEN_GROUP = "alphaswarm:tests"
LIMITED_USER = "alphaswarm-limited"  # no bindings: a test grants it the role it checks
WORKDIR_PREFIX = "alphaswarm-kube-"
OWNER_FILE = "owner"
START_ATTEMPTS = 3
READY_TIMEOUT = 240.0  # generous: a loaded 2-core machine starts the API server slowly


@dataclass(frozen=True, slots=True)
class Endpoint:
    """How a client reaches the API server."""

    url: str
    ca_pem: bytes
    token: str
    """Bearer token of ``TOKEN_USER``, bound to cluster-admin."""
    limited_token: str
    """Bearer token of ``LIMITED_USER``, bound to nothing (only what every user may)."""
    kubeconfig: Path
    """An admin kubeconfig (client certificate, ``system:masters``)."""


def missing_binaries(bin_dir: Path) -> list[str]:
    return [name for name in BINARIES if not (bin_dir / name).is_file()]


def _kubeconfig(path: Path, url: str, ca: Path, client: KeyPair, user: str) -> Path:
    # JSON is YAML: every component and the Python client read it.
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "test", "cluster": {"server": url, "certificate-authority": str(ca)}}
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(client.cert),
                    "client-key": str(client.key),
                },
            }
        ],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
        "current-context": "test",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


def _owner_stamp() -> str:
    me = psutil.Process()
    return f"{me.pid} {me.create_time()}"


def _owner_alive(stamp: str) -> bool:
    try:
        pid, created = stamp.split()
        return psutil.Process(int(pid)).create_time() == float(created)
    except (ValueError, psutil.Error):
        return False


def remove_orphaned_workdirs() -> None:
    """Work dirs of runs whose process died without its teardown (SIGKILL): the kernel
    already killed their components (pdeathsig), only the files are left."""
    for workdir in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        owner = workdir / OWNER_FILE
        try:
            stamp = owner.read_text()
        except OSError:
            continue  # not ours, or still being created
        if not _owner_alive(stamp):
            shutil.rmtree(workdir, ignore_errors=True)


class KubeCluster:
    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.stages = bin_dir.parent / "share" / "kwok" / "stages.yaml"
        remove_orphaned_workdirs()
        self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        (self.workdir / OWNER_FILE).write_text(_owner_stamp())
        self.components: list[Component] = []
        self.endpoint: Endpoint | None = None
        self.startup_seconds = 0.0

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Endpoint:
        began = time.monotonic()
        try:
            pki = Pki(self.workdir)
            self._start_etcd()
            endpoint = self._start_apiserver(pki)
            self._configure(endpoint)
            self._start_controllers(pki, endpoint.url)
            self._wait_for_node(endpoint)
        except BaseException:
            self.stop()
            raise
        self.endpoint = endpoint
        self.startup_seconds = time.monotonic() - began
        return endpoint

    def stop(self) -> None:
        """Stop every component (last started first), then remove the work dir. Idempotent."""
        while self.components:
            self.components.pop().stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again on the same port, with the same store.

        The new process's watch cache starts at the current revision, so every
        object last written before the restart is older than its window: a watch
        from such an object's resourceVersion gets 410 Gone, as on a long-running
        cluster where the object has not changed for a while.
        """
        index = next(i for i, c in enumerate(self.components) if c.name == "kube-apiserver")
        old = self.components[index]
        old.stop()
        fresh = Component(old.name, old.argv, old.log).start()
        self.components[index] = fresh
        wait_until(
            self._apiserver_probe.check,
            what="the restarted kube-apiserver /readyz is ok",
            timeout=READY_TIMEOUT,
            watched=[fresh],
        )

    # -- components -------------------------------------------------------------------------

    def _launch(self, name: str, argv: list[str], ready: Any, what: str) -> Component:
        """Start ``argv``; retry with fresh ports if it lost a port race."""
        for attempt in range(START_ATTEMPTS):
            args = argv if attempt == 0 else ready.fresh_args()
            component = Component(name, args, self.workdir / f"{name}.log").start()
            self.components.append(component)
            try:
                wait_until(ready.check, what=what, timeout=READY_TIMEOUT, watched=self.components)
                return component
            except ComponentFailed:
                if not (component.exited and port_in_use(component)):
                    raise
                self.components.remove(component)
                component.stop()
        raise component.failure("kept losing its ports to other processes")

    def _start_etcd(self) -> None:
        probe = _EtcdReady(self)
        self.etcd_url = probe.url
        self._launch("etcd", probe.args(), probe, "etcd serves /health")

    def _start_apiserver(self, pki: Pki) -> Endpoint:
        serving = pki.serving(
            "apiserver",
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", SERVICE_IP),
        )
        service_account = pki.service_account_keys()
        self.service_account_key = service_account.key
        tokens, token = pki.token_file({TOKEN_USER: (TOKEN_GROUP,), LIMITED_USER: ()})
        admin = pki.client("admin", "alphaswarm-test-admin", "system:masters")
        probe = _ApiserverReady(self, pki.ca_cert, admin)

        def args(port: int) -> list[str]:
            return [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=Node,RBAC",
                f"--service-account-key-file={service_account.cert}",
                f"--service-account-signing-key-file={service_account.key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # The endpoints of Service/kubernetes would be 127.0.0.1, which Endpoints
                # validation rejects (loopback): nothing in the tests needs them.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ]

        probe.make_args = args
        self._launch("kube-apiserver", probe.fresh_args(), probe, "kube-apiserver /readyz is ok")
        self._apiserver_probe = probe
        self.admin_kubeconfig = _kubeconfig(
            self.workdir / "admin.kubeconfig", probe.url, pki.ca_cert, admin, "admin"
        )
        return Endpoint(
            probe.url, pki.ca_pem, token[TOKEN_USER], token[LIMITED_USER], self.admin_kubeconfig
        )

    def _configure(self, endpoint: Endpoint) -> None:
        """The test token's RBAC binding and kwok's Node, made by the admin."""
        api = AdminApi(endpoint)
        api.create(
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "alphaswarm-tests"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": TOKEN_GROUP}
                ],
            },
        )
        api.create(
            "/api/v1/nodes",
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": NODE_NAME,
                    "annotations": {NODE_SELECTOR_ANNOTATION: "fake"},
                    "labels": {
                        "kubernetes.io/hostname": NODE_NAME,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                    },
                },
                "status": {
                    "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                    "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                },
            },
        )

    def _start_controllers(self, pki: Pki, url: str) -> None:
        serving = pki.serving("components", dns_names=("localhost",), ips=("127.0.0.1",))
        ca = pki.ca_cert

        def config(name: str, user: str, *groups: str) -> Path:
            client = pki.client(name, user, *groups)
            return _kubeconfig(self.workdir / f"{name}.kubeconfig", url, ca, client, name)

        def delegated(kubeconfig: Path, port: int) -> list[str]:
            return [
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                "--leader-elect=false",
                "--profiling=false",
            ]

        manager = config("kube-controller-manager", "system:kube-controller-manager")
        probe = _HealthzReady(self, ca)
        probe.make_args = lambda port: [
            str(self.bin_dir / "kube-controller-manager"),
            *delegated(manager, port),
            # Each controller acts as its own service account with its bootstrap
            # role (system:controller:*), as kubeadm configures it.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={self.service_account_key}",
            f"--root-ca-file={ca}",
        ]
        self._launch(
            "kube-controller-manager", probe.fresh_args(), probe, "controller-manager /healthz"
        )

        scheduler = config("kube-scheduler", "system:kube-scheduler")
        probe = _HealthzReady(self, ca)
        probe.make_args = lambda port: [
            str(self.bin_dir / "kube-scheduler"),
            *delegated(scheduler, port),
        ]
        self._launch("kube-scheduler", probe.fresh_args(), probe, "scheduler /healthz")

        kwok = config("kwok", "kwok-controller", "system:masters")
        self.components.append(
            Component(
                "kwok",
                [
                    str(self.bin_dir / "kwok"),
                    f"--kubeconfig={kwok}",
                    f"--config={self.stages}",
                    "--manage-all-nodes=false",
                    f"--manage-nodes-with-annotation-selector={NODE_SELECTOR_ANNOTATION}=fake",
                    "--node-ip=127.0.0.1",
                    f"--node-name={NODE_NAME}",
                    f"--cidr={POD_CIDR}",
                ],
                self.workdir / "kwok.log",
            ).start()
        )

    def _wait_for_node(self, endpoint: Endpoint) -> None:
        api = AdminApi(endpoint)

        def node_ready() -> bool:
            node = api.get(f"/api/v1/nodes/{NODE_NAME}")
            conditions = (node.get("status") or {}).get("conditions") or []
            return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

        wait_until(
            node_ready, what="kwok reports the Node Ready", timeout=60, watched=self.components
        )


# -- readiness probes ---------------------------------------------------------------------


class _EtcdReady:
    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self._pick()

    def _pick(self) -> None:
        self.port, self.peer_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        return [
            str(self.cluster.bin_dir / "etcd"),
            f"--data-dir={self.cluster.workdir / 'etcd'}",
            f"--listen-client-url={self.url}",
            f"--listen-peer-url=http://127.0.0.1:{self.peer_port}",
        ]

    def fresh_args(self) -> list[str]:
        self._pick()
        self.cluster.etcd_url = self.url
        return self.args()

    def check(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", "/health")
            response = connection.getresponse()
            return response.status == 200 and b'"true"' in response.read()
        finally:
            connection.close()


class _HttpsReady:
    """GET ``path`` over TLS verified against the test CA, optionally with a client cert."""

    path = "/healthz"

    def __init__(self, cluster: KubeCluster, ca: Path, client: KeyPair | None = None) -> None:
        self.cluster = cluster
        self.context = ssl.create_default_context(cafile=str(ca))
        if client is not None:
            self.context.load_cert_chain(str(client.cert), str(client.key))
        self.port = 0
        self.make_args: Any = None

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


class _HealthzReady(_HttpsReady):
    path = "/healthz"


class _ApiserverReady(_HttpsReady):
    # /readyz includes the RBAC bootstrap roles and the informer sync: the API
    # server is ready for the controllers and the tests once it answers ok.
    path = "/readyz"


class AdminApi:
    """Just enough of the API for the fixture's own setup, as the admin."""

    def __init__(self, endpoint: Endpoint) -> None:
        kubeconfig = json.loads(endpoint.kubeconfig.read_text())
        user = kubeconfig["users"][0]["user"]
        self.context = ssl.create_default_context(cadata=endpoint.ca_pem.decode())
        self.context.load_cert_chain(user["client-certificate"], user["client-key"])
        self.port = int(endpoint.url.rsplit(":", 1)[1])

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

    def create(self, path: str, body: Any) -> None:
        status, answer = self._request("POST", path, body)
        if status not in (200, 201, 409):
            raise ComponentFailed(f"POST {path} answered {status}: {answer}")

    def delete(self, path: str) -> None:
        status, answer = self._request("DELETE", path)
        if status not in (200, 202, 404):
            raise ComponentFailed(f"DELETE {path} answered {status}: {answer}")

    def get(self, path: str) -> Any:
        status, answer = self._request("GET", path)
        if status != 200:
            raise ComponentFailed(f"GET {path} answered {status}: {answer}")
        return answer
