"""KubeCluster: a real Kubernetes control plane on loopback, built by scripts/kube/build.sh.

Everything is real Kubernetes except the kubelet: kwok (sigs.k8s.io/kwok, the
Kubernetes SIG project for simulated nodes) plays the node. It watches the
pods the real scheduler bound to its Node and reports them Running/Ready
through the API (kwok's default stages, the ones kwokctl uses), holds the
Node's Lease, removes deleted pods, and serves the node's kubelet-style
``/metrics/resource``. Deployments, ReplicaSets, garbage collection and
namespaces are the real controllers'; metrics.k8s.io is the real
metrics-server behind the API server's aggregation layer, scraping kwok.

Credentials: one CA for serving and client certificates (the admin is in
``system:masters``, each component has its own user); a second CA for the
aggregation layer's front proxy, as the Kubernetes docs advise; the tests'
provider uses a static bearer token, like a managed cluster's token, bound to
``cluster-admin``; the managed-cluster beds' credentials (EKS, AKS, GKE) are
checked by a token webhook (webhook.py) and hold only the documented RBAC; tests
of RBAC itself use ServiceAccount tokens (rbac.py). Authorization is ``Node,RBAC``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil

from . import manifests
from .api import AdminApi, EtcdProbe, HttpsProbe, Probe
from .failures import failing_pods_config
from .pki import KeyPair, Pki
from .podlogs import PodOutput, clusterlogs_config
from .processes import Component, ComponentFailed, port_in_use, wait_until
from .webhook import TokenWebhook

BUILD_COMMAND = "bash scripts/kube/build.sh"
BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "metrics-server",
)
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # the first address of SERVICE_CIDR: the ``kubernetes`` Service
POD_CIDR = "10.244.0.1/24"  # kwok hands out pod IPs from here; nothing routes to them
NODE_NAME = "kwok-node-0"
#: A kubelet's default (--node-lease-duration-seconds); kwok renews at a quarter of it.
NODE_LEASE_SECONDS = 40
#: How long the node lifecycle controller waits for a heartbeat before the node is
#: Unknown (see _start_controllers).
NODE_MONITOR_GRACE_SECONDS = 600
NODE_SELECTOR_ANNOTATION = "kwok.x-k8s.io/node"
TOKEN_USER = "alphaswarm-tests"
TOKEN_GROUP = "alphaswarm:tests"
METRICS_SERVER_USER = "alphaswarm-tests:metrics-server"
FRONT_PROXY_USER = "front-proxy-client"
#: metrics-server's minimum; a new pod has metrics after two scrapes.
METRIC_RESOLUTION = "10s"
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
    kubeconfig: Path
    """An admin kubeconfig (client certificate, ``system:masters``)."""

    def admin(self) -> AdminApi:
        return AdminApi.from_kubeconfig(self.url, self.ca_pem, self.kubeconfig)


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
                "user": {"client-certificate": str(client.cert), "client-key": str(client.key)},
            }
        ],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
        "current-context": "test",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


def wait_for_metrics_api(
    endpoint: Endpoint, timeout: float = READY_TIMEOUT, watched: Sequence[Component] = ()
) -> None:
    """Until the aggregator reports metrics.k8s.io Available (metrics-server scraped kwok)."""
    admin = endpoint.admin()

    def available() -> bool:
        service = admin.get(f"/apis/apiregistration.k8s.io/v1/apiservices/{manifests.METRICS_API}")
        conditions = (service.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Available" and c.get("status") == "True" for c in conditions)

    wait_until(available, what="metrics.k8s.io is Available", timeout=timeout, watched=watched)


class ControlPlane(Protocol):
    """What the tests use of a control plane: their own (KubeCluster) or the run's
    (shared.SharedControlPlane)."""

    endpoint: Endpoint | None
    token_webhook: TokenWebhook | None

    def serving_certificate(self, name: str) -> KeyPair: ...

    def wait_for_metrics_api(self, timeout: float = READY_TIMEOUT) -> None: ...


def node_lease(admin: AdminApi) -> dict[str, Any] | None:
    """The node's heartbeat Lease (kube-node-lease), or None while kwok has not made it."""
    lease: dict[str, Any] | None = admin.find(
        f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE_NAME}"
    )
    return lease


def _condition_true(obj: dict[str, Any], kind: str) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


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
        try:
            stamp = (workdir / OWNER_FILE).read_text()
        except OSError:
            continue  # not ours, or still being created
        if not _owner_alive(stamp):
            shutil.rmtree(workdir, ignore_errors=True)


class KubeCluster:
    def __init__(self, bin_dir: Path, parent: Path | None = None) -> None:
        """``parent``: where the work dir goes (default: the temp dir, where a later
        cluster removes it if this process dies without its teardown)."""
        self.bin_dir = bin_dir
        self.kwok_config = bin_dir.parent / "share" / "kwok" / "config.yaml"
        remove_orphaned_workdirs()
        self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=parent))
        (self.workdir / OWNER_FILE).write_text(_owner_stamp())
        self.pki = Pki(self.workdir)
        self.front_proxy = Pki(self.workdir, "front-proxy-ca")
        self.components: list[Component] = []
        self.endpoint: Endpoint | None = None
        self.startup_seconds = 0.0
        self.etcd_url = ""
        self.service_account_key = Path()
        self._apiserver_probe: Probe | None = None
        self.token_webhook: TokenWebhook | None = None
        self.pod_output: PodOutput | None = None
        """Checks the tokens of managed-cluster test beds (EKS, AKS, GKE): see webhook.py."""

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> Endpoint:
        began = time.monotonic()
        try:
            self.etcd_url = self._start_etcd()
            endpoint = self._start_apiserver()
            admin = endpoint.admin()
            admin.create_all(manifests.token_group_is_cluster_admin(TOKEN_GROUP))
            admin.create_all(manifests.kwok_node(NODE_NAME, NODE_SELECTOR_ANNOTATION))
            admin.create_all(manifests.metrics_server_access(METRICS_SERVER_USER))
            self._start_controllers(endpoint.url)
            self._start_kwok(endpoint.url)
            metrics_port = self._start_metrics_server(endpoint.url)
            admin.create_all(manifests.metrics_api(self.pki.ca_pem, metrics_port))
            self._wait_for_node(admin)
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
        if self.token_webhook is not None:
            self.token_webhook.stop()
            self.token_webhook = None
        if self.pod_output is not None:
            self.pod_output.stop()
            self.pod_output = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again on the same port, with the same store.

        The new process's watch cache starts at the current revision, so every
        object last written before the restart is older than its window: a watch
        from such an object's resourceVersion gets 410 Gone, as on a long-running
        cluster where the object has not changed for a while.
        """
        assert self._apiserver_probe is not None, "start() first"
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

    def wait_for_metrics_api(self, timeout: float = READY_TIMEOUT) -> None:
        assert self.endpoint is not None, "start() first"
        wait_for_metrics_api(self.endpoint, timeout, watched=self.components)

    # -- components -------------------------------------------------------------------------

    def _launch(self, name: str, probe: Probe, what: str) -> Component:
        """Start a component with fresh ports; retry if it lost a port to another process."""
        for _ in range(START_ATTEMPTS):
            component = Component(name, probe.fresh_args(), self.workdir / f"{name}.log").start()
            self.components.append(component)
            try:
                wait_until(probe.check, what=what, timeout=READY_TIMEOUT, watched=self.components)
                return component
            except ComponentFailed:
                if not (component.exited and port_in_use(component)):
                    raise
                self.components.remove(component)
                component.stop()
        raise component.failure("kept losing its ports to other processes")

    def _start_etcd(self) -> str:
        probe = EtcdProbe(
            lambda port, peer_port: [
                str(self.bin_dir / "etcd"),
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-url=http://127.0.0.1:{port}",
                f"--listen-peer-url=http://127.0.0.1:{peer_port}",
            ]
        )
        self._launch("etcd", probe, "etcd serves /health")
        return probe.url

    def _start_apiserver(self) -> Endpoint:
        pki = self.pki
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
        tokens, token = pki.token_file({TOKEN_USER: (TOKEN_GROUP,)})
        admin = pki.client("admin", "alphaswarm-test-admin", "system:masters")
        front_proxy = self.front_proxy.client(FRONT_PROXY_USER, FRONT_PROXY_USER)
        kubelet_client = pki.client("kubelet-client", "kube-apiserver-kubelet-client")
        self.token_webhook = TokenWebhook(self._serving("token-webhook"), pki.ca_cert).start()
        webhook_config = self.token_webhook.config_file(
            self.workdir / "token-webhook.kubeconfig",
            pki.client("token-webhook-client", "kube-apiserver-token-webhook"),
        )

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
                # Managed-cluster credentials (EKS, AKS, GKE test beds): webhook.py. Reviews
                # are cached briefly, so a revoked test token stops working within seconds.
                f"--authentication-token-webhook-config-file={webhook_config}",
                "--authentication-token-webhook-version=v1",
                "--authentication-token-webhook-cache-ttl=5s",
                "--authorization-mode=Node,RBAC",
                f"--service-account-key-file={service_account.cert}",
                f"--service-account-signing-key-file={service_account.key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                # The endpoints of Service/kubernetes would be 127.0.0.1, which Endpoints
                # validation rejects (loopback): nothing in the tests needs them.
                "--endpoint-reconciler-type=none",
                # The aggregation layer (Configure the Aggregation Layer, Kubernetes docs).
                f"--requestheader-client-ca-file={self.front_proxy.ca_cert}",
                f"--requestheader-allowed-names={FRONT_PROXY_USER}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={front_proxy.cert}",
                f"--proxy-client-key-file={front_proxy.key}",
                "--profiling=false",
                # pods/log: the API server calls kwok's kubelet endpoint at the node's
                # InternalIP (its Hostname resolves nowhere), verifying its certificate.
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-certificate-authority={pki.ca_cert}",
                f"--kubelet-client-certificate={kubelet_client.cert}",
                f"--kubelet-client-key={kubelet_client.key}",
            ]

        # /readyz includes the RBAC bootstrap roles and the informers' sync: ready for
        # the controllers and the tests once it answers ok.
        probe = HttpsProbe(args, pki.ca_cert, path="/readyz", client=admin)
        self._launch("kube-apiserver", probe, "kube-apiserver /readyz is ok")
        self._apiserver_probe = probe
        kubeconfig = _kubeconfig(
            self.workdir / "admin.kubeconfig", probe.url, pki.ca_cert, admin, "admin"
        )
        return Endpoint(probe.url, pki.ca_pem, token[TOKEN_USER], kubeconfig)

    def _component_kubeconfig(self, url: str, name: str, user: str, *groups: str) -> Path:
        client = self.pki.client(name, user, *groups)
        return _kubeconfig(self.workdir / f"{name}.kubeconfig", url, self.pki.ca_cert, client, name)

    def serving_certificate(self, name: str) -> KeyPair:
        """A certificate for 127.0.0.1/localhost from the cluster CA (clients trust it)."""
        return self._serving(name)

    def _serving(self, name: str, *dns_names: str) -> KeyPair:
        return self.pki.loopback_serving(name, *dns_names)

    def _delegated(self, kubeconfig: Path, serving: KeyPair, port: int) -> list[str]:
        """Flags of a component that serves HTTPS and asks the API server who may call it."""
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
        ]

    def _start_controllers(self, url: str) -> None:
        serving = self._serving("components")
        ca = self.pki.ca_cert
        manager = self._component_kubeconfig(
            url, "kube-controller-manager", "system:kube-controller-manager"
        )
        self._launch(
            "kube-controller-manager",
            HttpsProbe(
                lambda port: [
                    str(self.bin_dir / "kube-controller-manager"),
                    *self._delegated(manager, serving, port),
                    "--leader-elect=false",
                    "--profiling=false",
                    # Each controller acts as its own service account with its bootstrap
                    # role (system:controller:*), as kubeadm configures it.
                    "--use-service-account-credentials=true",
                    # kwok renews the Node's Lease; on a loaded 2-core machine a renewal can
                    # come later than the default 50 s grace, and the node lifecycle
                    # controller then marks every pod on the node NotReady for good (kwok
                    # moves pods to Ready only from Pending). A kubelet-less node gets more
                    # slack; a node that is really gone still turns NotReady.
                    f"--node-monitor-grace-period={NODE_MONITOR_GRACE_SECONDS}s",
                    f"--service-account-private-key-file={self.service_account_key}",
                    f"--root-ca-file={ca}",
                ],
                ca,
            ),
            "controller-manager /healthz",
        )
        scheduler = self._component_kubeconfig(url, "kube-scheduler", "system:kube-scheduler")
        self._launch(
            "kube-scheduler",
            HttpsProbe(
                lambda port: [
                    str(self.bin_dir / "kube-scheduler"),
                    *self._delegated(scheduler, serving, port),
                    "--leader-elect=false",
                    "--profiling=false",
                ],
                ca,
            ),
            "scheduler /healthz",
        )

    def _start_kwok(self, url: str) -> None:
        kubeconfig = self._component_kubeconfig(url, "kwok", "kwok-controller", "system:masters")
        serving = self._serving("kwok")
        self.pod_output = PodOutput(self.workdir / "pods.log").start()
        logs_config = clusterlogs_config(self.workdir / "kwok-logs.json", self.pod_output.path)
        failing = failing_pods_config(self.workdir / "kwok-failing-pods.yaml")
        self._launch(
            "kwok",
            HttpsProbe(
                lambda port: [
                    str(self.bin_dir / "kwok"),
                    f"--kubeconfig={kubeconfig}",
                    f"--config={self.kwok_config}",
                    f"--config={logs_config}",  # what the pods print: podlogs.py
                    f"--config={failing}",  # pods of a bad image: failures.py
                    "--manage-all-nodes=false",
                    f"--manage-nodes-with-annotation-selector={NODE_SELECTOR_ANNOTATION}=fake",
                    "--node-ip=127.0.0.1",
                    f"--node-name={NODE_NAME}",
                    # The node's heartbeat is its Lease, as a kubelet's is (and kwokctl's
                    # default): kwok's default heartbeat stage (node-heartbeat-with-lease)
                    # writes the Node's status only every 10-20 min. Without a Lease the
                    # node lifecycle controller saw no heartbeat past its grace period,
                    # turned the node Unknown and marked every new pod NotReady for good.
                    f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
                    f"--cidr={POD_CIDR}",
                    # The node's kubelet port (Node status daemonEndpoints): metrics, logs.
                    f"--node-port={port}",
                    f"--server-address=127.0.0.1:{port}",
                    f"--tls-cert-file={serving.cert}",
                    f"--tls-private-key-file={serving.key}",
                ],
                self.pki.ca_cert,
            ),
            "kwok /healthz",
        )

    def _start_metrics_server(self, url: str) -> int:
        kubeconfig = self._component_kubeconfig(url, "metrics-server", METRICS_SERVER_USER)
        serving = self._serving("metrics-server", manifests.metrics_service_dns())
        probe = HttpsProbe(
            lambda port: [
                str(self.bin_dir / "metrics-server"),
                *self._delegated(kubeconfig, serving, port),
                f"--metric-resolution={METRIC_RESOLUTION}",
                "--kubelet-request-timeout=5s",  # must be below the resolution
                # kwok's node: its InternalIP, the port in its status, the path in its
                # annotation, its certificate from the test CA.
                "--kubelet-preferred-address-types=InternalIP",
                "--kubelet-use-node-status-port",
                f"--kubelet-certificate-authority={self.pki.ca_cert}",
            ],
            self.pki.ca_cert,
            path="/livez",
        )
        self._launch("metrics-server", probe, "metrics-server /livez")
        return probe.port

    def _wait_for_node(self, admin: AdminApi) -> None:
        def node_ready() -> bool:
            return _condition_true(admin.get(f"/api/v1/nodes/{NODE_NAME}"), "Ready") and bool(
                node_lease(admin)
            )

        wait_until(
            node_ready,
            what="kwok reports the Node Ready and holds its Lease",
            timeout=60,
            watched=self.components,
        )
