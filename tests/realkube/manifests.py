"""The objects the fixture creates as the admin: RBAC bindings, kwok's Node, the metrics API.

Each is a (collection path, object) pair for ``AdminApi.create_all``.
"""

from __future__ import annotations

import base64
from typing import Any

Manifest = tuple[str, dict[str, Any]]

RBAC = "/apis/rbac.authorization.k8s.io/v1"
RBAC_GROUP = "rbac.authorization.k8s.io"
METRICS_NAMESPACE = "kube-system"
METRICS_SERVICE = "metrics-server"
METRICS_API = "v1beta1.metrics.k8s.io"
#: metrics-server reads each node's kubelet metrics from this path (kwok serves it).
RESOURCE_METRICS_PATH_ANNOTATION = "metrics.k8s.io/resource-metrics-path"


def _cluster_binding(name: str, role: str, kind: str, subject: str) -> Manifest:
    return (
        f"{RBAC}/clusterrolebindings",
        {
            "apiVersion": f"{RBAC_GROUP}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": RBAC_GROUP, "kind": kind, "name": subject}],
        },
    )


def token_group_is_cluster_admin(group: str) -> list[Manifest]:
    return [_cluster_binding("alphaswarm-tests", "cluster-admin", "Group", group)]


def kwok_node(name: str, selector_annotation: str) -> list[Manifest]:
    """A Node for kwok to manage; kwok fills in its status (Ready, addresses, kubelet port)."""
    return [
        (
            "/api/v1/nodes",
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": {
                        selector_annotation: "fake",
                        RESOURCE_METRICS_PATH_ANNOTATION: f"/metrics/nodes/{name}/metrics/resource",
                    },
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                    },
                },
                # The one node holds the pods of every test process sharing the run's
                # control plane (shared.py): more than a kubelet's default --max-pods
                # (110), as a big node may be configured to hold.
                "status": {
                    "allocatable": {"cpu": "64", "memory": "512Gi", "pods": "1000"},
                    "capacity": {"cpu": "64", "memory": "512Gi", "pods": "1000"},
                },
            },
        )
    ]


def metrics_server_access(user: str) -> list[Manifest]:
    """What metrics-server's own manifests grant it (rbac.yaml in its repository)."""
    role = "alphaswarm-tests:metrics-server"
    return [
        (
            f"{RBAC}/clusterroles",
            {
                "apiVersion": f"{RBAC_GROUP}/v1",
                "kind": "ClusterRole",
                "metadata": {"name": role},
                "rules": [
                    {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                    {
                        "apiGroups": [""],
                        "resources": ["pods", "nodes"],
                        "verbs": ["get", "list", "watch"],
                    },
                ],
            },
        ),
        _cluster_binding(role, role, "User", user),
        # Delegated authentication and authorization of the requests it serves.
        _cluster_binding(f"{role}:auth-delegator", "system:auth-delegator", "User", user),
        (
            f"{RBAC}/namespaces/kube-system/rolebindings",
            {
                "apiVersion": f"{RBAC_GROUP}/v1",
                "kind": "RoleBinding",
                "metadata": {"name": role, "namespace": "kube-system"},
                "roleRef": {
                    "apiGroup": RBAC_GROUP,
                    "kind": "Role",
                    "name": "extension-apiserver-authentication-reader",
                },
                "subjects": [{"apiGroup": RBAC_GROUP, "kind": "User", "name": user}],
            },
        ),
    ]


def metrics_api(ca_pem: bytes, port: int) -> list[Manifest]:
    """Register metrics.k8s.io with the aggregator, served by metrics-server on loopback.

    The APIService names a Service; an ExternalName Service makes the aggregator
    dial ``localhost:<port>`` (apiserver util/proxy ResolveCluster), with TLS
    verified for the Service's DNS name ``metrics-server.kube-system.svc``.
    """
    return [
        (
            f"/api/v1/namespaces/{METRICS_NAMESPACE}/services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": METRICS_SERVICE, "namespace": METRICS_NAMESPACE},
                "spec": {"type": "ExternalName", "externalName": "localhost"},
            },
        ),
        (
            "/apis/apiregistration.k8s.io/v1/apiservices",
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": METRICS_API},
                "spec": {
                    "group": "metrics.k8s.io",
                    "version": "v1beta1",
                    "service": {
                        "namespace": METRICS_NAMESPACE,
                        "name": METRICS_SERVICE,
                        "port": port,
                    },
                    "caBundle": base64.b64encode(ca_pem).decode(),
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                },
            },
        ),
    ]


def metrics_service_dns() -> str:
    return f"{METRICS_SERVICE}.{METRICS_NAMESPACE}.svc"
