"""Pytest fixtures: the real control plane once per session (or the run's), a namespace per test.

The binaries come from ``ALPHASWARM_KUBE_BIN_DIR`` (scripts/test.sh exports it)
or, when that is unset, from an earlier ``bash scripts/kube/build.sh``. Without
them the tests fail and say which command builds them: a missing backend is a
failure, never a skip.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from alphaswarm_core.providers.protocol import DeploymentSpec
from alphaswarm_core.testing import unique_name
from tests.fakes.kube_proxy import KubeFaultProxy

from .cluster import BUILD_COMMAND, ControlPlane, Endpoint, KubeCluster, missing_binaries
from .shared import BIN_DIR_ENV, SHARED_ENV, SharedControlPlane

if TYPE_CHECKING:  # imported where used: tests/conftest.py loads this module for every
    # test, and a venv with one provider extra alone has no kubernetes SDK.
    from alphaswarm_controller.providers.kubernetes import KubernetesProvider

REPO = Path(__file__).resolve().parents[2]
#: Never pulled: kwok runs no containers, it reports the pods Running.
IMAGE = "registry.example/team/app:1.0"


def make_spec(
    service_id: str,
    namespace: str,
    replicas: int = 1,
    env: Mapping[str, str] | None = None,
) -> DeploymentSpec:
    """The contract's spec factory for every Kubernetes-backed provider."""
    return DeploymentSpec(
        service_id=service_id,
        namespace=namespace,
        image=IMAGE,
        replicas=replicas,
        env=dict(env or {}),
    ).validate()


def kube_bin_dir() -> Path:
    configured = os.environ.get(BIN_DIR_ENV)
    if configured:
        bin_dir = Path(configured)
    else:
        found = subprocess.run(
            ["bash", str(REPO / "scripts" / "kube" / "build.sh"), "--if-built"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if found.returncode != 0:
            pytest.fail(
                "the real Kubernetes control plane is not built: run "
                f"`{BUILD_COMMAND}` (10-17 min the first time), or set {BIN_DIR_ENV}",
                pytrace=False,
            )
        bin_dir = Path(found.stdout.strip())
    missing = missing_binaries(bin_dir)
    if missing:
        pytest.fail(
            f"{bin_dir} lacks {', '.join(missing)}: run `{BUILD_COMMAND}` "
            f"and point {BIN_DIR_ENV} at the directory it prints",
            pytrace=False,
        )
    return bin_dir


def _report(config: pytest.Config, line: str) -> None:
    """One line on the terminal, past output capture (CI logs show the start-up cost)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


@contextlib.contextmanager
def private_cluster(config: pytest.Config) -> Iterator[KubeCluster]:
    """etcd + kube-apiserver + controller-manager + scheduler + kwok, this process's own."""
    cluster = KubeCluster(kube_bin_dir())
    # Teardown runs on failure and on Ctrl-C; atexit covers an interpreter exit
    # that skips fixture teardown. Stopping twice is harmless.
    atexit.register(cluster.stop)
    try:
        endpoint = cluster.start()
        _report(
            config,
            f"real Kubernetes control plane up in {cluster.startup_seconds:.1f}s at {endpoint.url}",
        )
        yield cluster
    finally:
        cluster.stop()
        atexit.unregister(cluster.stop)


@pytest.fixture(scope="session")
def real_kube_cluster(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    """The run's control plane when scripts/test.sh started one (shared.py), else this
    session's own, up for the session."""
    shared = os.environ.get(SHARED_ENV)
    if shared:
        with SharedControlPlane.join(Path(shared)) as cluster:
            yield cluster
    else:
        with private_cluster(request.config) as own:
            yield own


@pytest.fixture(scope="session")
def real_kube(real_kube_cluster: ControlPlane) -> Endpoint:
    """How to reach the session's API server (URL, CA, tokens, admin kubeconfig)."""
    assert real_kube_cluster.endpoint is not None
    return real_kube_cluster.endpoint


@pytest.fixture(scope="session")
def real_kube_metrics(real_kube_cluster: ControlPlane) -> Endpoint:
    """The session's API server once metrics.k8s.io is Available (metrics-server scraped kwok).

    Only the tests that read metrics wait for it (about two scrapes, 10-20 s).
    """
    real_kube_cluster.wait_for_metrics_api()
    assert real_kube_cluster.endpoint is not None
    return real_kube_cluster.endpoint


@pytest.fixture
def real_kube_namespace(real_kube: Endpoint) -> Iterator[str]:
    """A fresh namespace, deleted (asynchronously, by the namespace controller) after the test."""
    api = real_kube.admin()
    name = unique_name("ns")
    api.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    yield name
    api.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def kube_proxy(real_kube_cluster: ControlPlane, real_kube: Endpoint) -> Iterator[KubeFaultProxy]:
    """A fault-injecting proxy in front of the session's API server, fresh faults per test."""
    pair = real_kube_cluster.serving_certificate(unique_name("proxy"))
    with KubeFaultProxy(real_kube.url, real_kube.ca_pem, str(pair.cert), str(pair.key)) as proxy:
        yield proxy


def connect_real(
    endpoint: Endpoint, env: Mapping[str, str] | None = None, *, alias: str = "kubernetes"
) -> KubernetesProvider:
    """The provider as a cloud provider builds it for a managed cluster: URL, CA, bearer token."""
    return connect_url(endpoint, endpoint.url, env, alias=alias)


def connect_url(
    endpoint: Endpoint, url: str, env: Mapping[str, str] | None = None, *, alias: str = "kubernetes"
) -> KubernetesProvider:
    """As ``connect_real``, at ``url`` (the API server's, or a proxy's in front of it)."""
    from alphaswarm_controller.providers.kubernetes import ClusterConnection, KubernetesProvider

    connection = ClusterConnection(
        endpoint=url,
        ca_data=endpoint.ca_pem,
        token=endpoint.token,
        description="the tests' kube-apiserver",
    )
    return KubernetesProvider.from_connection(
        connection,
        env={"ALPHASWARM_KUBERNETES_CREATE_NAMESPACES": "true", **(env or {})},
        alias=alias,
    )
