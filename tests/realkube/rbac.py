"""The RBAC the docs document for the kubernetes provider, granted to a test's own identity.

deploy/kubernetes/base/rbac.yaml is what docs/providers.md and docs/operations.md
document; a test grants exactly its rules to a subject of its own: a
ServiceAccount (the controller runs as one) whose token it gets from the
TokenRequest API, or the user a managed cluster's credential maps to (the EKS,
AKS and GKE beds). In one of the two documented ways:

* ``grant_namespaced``: the workloads ClusterRole bound by a RoleBinding in each
  managed namespace (as the file ships), plus the cluster-scoped ClusterRole.
* ``grant_cluster_wide``: the workloads ClusterRole bound by a ClusterRoleBinding,
  plus the cluster-scoped ClusterRole with ``create namespaces`` added, as the
  file's comment says for ``ALPHASWARM_KUBERNETES_CREATE_NAMESPACES=true``.

Cluster-scoped names carry a suffix of the grant's own, so grants of different
tests never meet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .api import AdminApi
from .manifests import RBAC, RBAC_GROUP

DOCUMENTED = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "base" / "rbac.yaml"
GRANT_TIMEOUT = 30.0
NAMESPACES_RULE = {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["create"]}
ACCOUNT = "alphaswarm-controller"
TOKEN_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class Identity:
    """A ServiceAccount and a bearer token for it."""

    namespace: str
    name: str
    token: str

    @property
    def subject(self) -> Subject:
        return {"kind": "ServiceAccount", "name": self.name, "namespace": self.namespace}


def service_account(admin: AdminApi, namespace: str, name: str = ACCOUNT) -> Identity:
    """A ServiceAccount in ``namespace`` (no permissions yet) and a token from TokenRequest."""
    admin.create(
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
    )
    answer = admin.post(
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": TOKEN_SECONDS},
        },
    )
    return Identity(namespace, name, answer["status"]["token"])


def documented_objects() -> list[dict[str, Any]]:
    return [o for o in yaml.safe_load_all(DOCUMENTED.read_text()) if o]


def _roles(suffix: str, *, create_namespaces: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(workloads ClusterRole, cluster ClusterRole) as documented, renamed with ``suffix``."""
    roles = [o for o in documented_objects() if o["kind"] == "ClusterRole"]
    workloads = next(r for r in roles if r["metadata"]["name"].endswith("-workloads"))
    cluster = next(r for r in roles if r["metadata"]["name"].endswith("-cluster"))
    for role in (workloads, cluster):
        role["metadata"] = {"name": f"{role['metadata']['name']}-{suffix}"}
    if create_namespaces:
        cluster["rules"].append(NAMESPACES_RULE)
    return workloads, cluster


Subject = dict[str, str]


def user(name: str) -> Subject:
    return {"apiGroup": RBAC_GROUP, "kind": "User", "name": name}


def _binding(kind: str, name: str, role: str, subject: Subject, namespace: str = "") -> Any:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": kind,
        "metadata": metadata,
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
        "subjects": [subject],
    }


def _reviewed_as(subject: Subject) -> dict[str, Any]:
    """The user and groups a SubjectAccessReview asks about for ``subject``."""
    if subject["kind"] == "ServiceAccount":
        namespace = subject["namespace"]
        return {
            "user": f"system:serviceaccount:{namespace}:{subject['name']}",
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{namespace}",
                "system:authenticated",
            ],
        }
    return {"user": subject["name"], "groups": ["system:authenticated"]}


def wait_granted(
    admin: AdminApi, subject: Subject, role: dict[str, Any], namespace: str = ""
) -> None:
    """Return once the API server's authorizer applies ``role``'s first rule to
    ``subject``. RBAC reads roles and bindings from an informer cache, so a request right
    after they were created can still be denied ('role ... not found' was seen under
    load); a SubjectAccessReview asks that same authorizer."""
    rule = role["rules"][0]
    attributes = {
        "verb": rule["verbs"][0],
        "group": rule["apiGroups"][0],
        "resource": rule["resources"][0],
    }
    if namespace:
        attributes["namespace"] = namespace
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {"resourceAttributes": attributes, **_reviewed_as(subject)},
    }
    deadline = time.monotonic() + GRANT_TIMEOUT
    while True:
        answer = admin.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        if answer.get("status", {}).get("allowed"):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{role['metadata']['name']} not in force: {answer}")
        time.sleep(0.1)


def grant_namespaced(
    admin: AdminApi, who: Identity, namespaces: list[str], *, cluster_role: bool = True
) -> None:
    """As shipped: a RoleBinding per namespace, the cluster-scoped ClusterRole bound once
    (``cluster_role=False`` leaves that binding out, to see what health says)."""
    workloads, cluster = _roles(who.namespace, create_namespaces=False)
    admin.create(f"{RBAC}/clusterroles", workloads)
    admin.create(f"{RBAC}/clusterroles", cluster)
    for namespace in namespaces:
        admin.create(
            f"{RBAC}/namespaces/{namespace}/rolebindings",
            _binding("RoleBinding", ACCOUNT, workloads["metadata"]["name"], who.subject, namespace),
        )
    if cluster_role:
        name = cluster["metadata"]["name"]
        admin.create(
            f"{RBAC}/clusterrolebindings", _binding("ClusterRoleBinding", name, name, who.subject)
        )
        wait_granted(admin, who.subject, cluster)
    for namespace in namespaces:
        wait_granted(admin, who.subject, workloads, namespace)


def grant_cluster_wide(admin: AdminApi, subject: Subject, suffix: str) -> None:
    """Every namespace, namespaces created on demand (CREATE_NAMESPACES=true)."""
    for role in _roles(suffix, create_namespaces=True):
        admin.create(f"{RBAC}/clusterroles", role)
        name = role["metadata"]["name"]
        admin.create(
            f"{RBAC}/clusterrolebindings", _binding("ClusterRoleBinding", name, name, subject)
        )
        wait_granted(admin, subject, role)
