"""AKS mode: the cluster's user credentials from ARM, turned into a Kubernetes connection.

``managedClusters/listClusterUserCredential`` returns kubeconfigs (base64 YAML).
The provider takes the cluster endpoint, its CA and the user's credential (a
token, or a client certificate) from the current context and hands them to the
kubernetes provider, so everything after that is the kubernetes provider's code.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import yaml
from azure.mgmt.containerservice import ContainerServiceClient

from alphaswarm_core.providers.protocol import BackendRejectedError


@dataclass(frozen=True, slots=True)
class AksCredentials:
    endpoint: str
    ca_pem: bytes | None
    """The cluster CA bundle (PEM), None to use the system trust store."""
    token: str

    def __repr__(self) -> str:  # never print the credential
        return f"AksCredentials(endpoint={self.endpoint!r})"


def _named(items: Any, name: str, key: str) -> dict[str, Any]:
    for item in items or []:
        if isinstance(item, dict) and item.get("name") == name and isinstance(item.get(key), dict):
            return dict(item[key])
    raise BackendRejectedError(f"the AKS kubeconfig has no {key} named {name!r}")


def parse_kubeconfig(text: str) -> AksCredentials:
    """Endpoint, CA and credential of the kubeconfig's current context."""
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise BackendRejectedError("the AKS kubeconfig is not valid YAML") from error
    if not isinstance(config, dict):
        raise BackendRejectedError("the AKS kubeconfig is not a mapping")
    contexts = config.get("contexts") or []
    current = config.get("current-context") or (
        contexts[0].get("name") if contexts and isinstance(contexts[0], dict) else None
    )
    context = _named(contexts, str(current), "context")
    cluster = _named(config.get("clusters"), str(context.get("cluster")), "cluster")
    user = _named(config.get("users"), str(context.get("user")), "user")
    if "exec" in user and not user.get("token"):
        raise BackendRejectedError(
            "the AKS cluster uses Microsoft Entra ID (exec/kubelogin) for users; alphaswarm "
            "needs a cluster with local accounts or a token in the user kubeconfig"
        )
    if not cluster.get("server"):
        raise BackendRejectedError("the AKS kubeconfig names no API server")
    if not user.get("token"):
        raise BackendRejectedError(
            "the AKS user kubeconfig carries no token; alphaswarm authenticates to AKS with "
            "the cluster user's bearer token (local accounts)"
        )
    ca = cluster.get("certificate-authority-data")
    try:
        ca_pem = base64.b64decode(str(ca), validate=True) if ca else None
    except ValueError as error:
        raise BackendRejectedError("the AKS kubeconfig's CA data is not base64") from error
    return AksCredentials(str(cluster["server"]), ca_pem, str(user["token"]))


def fetch_credentials(
    client: ContainerServiceClient, resource_group: str, cluster: str, timeout: float
) -> AksCredentials:
    """One ARM call (blocking): the cluster user kubeconfig, parsed."""
    result = client.managed_clusters.list_cluster_user_credentials(
        resource_group, cluster, connection_timeout=timeout, read_timeout=timeout
    )
    for kubeconfig in result.kubeconfigs or []:
        value = kubeconfig.value
        if value:
            text = value.decode() if isinstance(value, bytes) else base64.b64decode(value).decode()
            return parse_kubeconfig(text)
    raise BackendRejectedError(f"AKS returned no user kubeconfig for cluster {cluster!r}")
