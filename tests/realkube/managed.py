"""The real API server as a managed cluster's client sees it: its own user token, RBAC on.

A cloud test bed (AKS, GKE) hands the provider what the cloud hands out: the
server URL (here a fault proxy in front of the real API server, which also
counts requests), the CA, and a credential the API server checks through its
token webhook (tests/realkube/webhook.py). The user that credential maps to
holds the documented RBAC, cluster-wide (the beds create namespaces), nothing
more.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

from tests.fakes.kube_proxy import KubeFaultProxy

from .cluster import ControlPlane
from .rbac import grant_cluster_wide, user
from .webhook import Authenticator, StaticTokens, User


@dataclass
class ManagedCluster:
    url: str
    """Where the cloud says the API server is (the proxy in front of the real one)."""
    ca_pem: bytes
    proxy: KubeFaultProxy
    username: str
    token: str = field(default="", repr=False)
    """A static user token, when the cluster hands one out (AKS local accounts)."""


@contextlib.contextmanager
def managed_cluster(
    cluster: ControlPlane,
    username: str,
    *,
    authenticator: Authenticator | None = None,
    rbac_suffix: str,
) -> Iterator[ManagedCluster]:
    """``authenticator`` checks the cloud's tokens; without one a static token is issued."""
    assert cluster.endpoint is not None and cluster.token_webhook is not None
    endpoint = cluster.endpoint
    token = ""
    if authenticator is None:
        token = secrets.token_urlsafe(32)
        authenticator = StaticTokens({token: User(username)})
    pair = cluster.serving_certificate(f"{rbac_suffix}-proxy")
    grant_cluster_wide(endpoint.admin(), user(username), rbac_suffix)
    cluster.token_webhook.register(authenticator)
    try:
        with KubeFaultProxy(endpoint.url, endpoint.ca_pem, str(pair.cert), str(pair.key)) as proxy:
            yield ManagedCluster(proxy.url, endpoint.ca_pem, proxy, username, token)
    finally:
        cluster.token_webhook.unregister(authenticator)
