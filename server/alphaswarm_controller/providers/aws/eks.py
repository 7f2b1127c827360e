"""An EKS cluster as a Kubernetes connection: its endpoint and CA, and bearer tokens.

The token is what ``aws eks get-token`` prints: a presigned STS
GetCallerIdentity URL (signed with the controller's own credentials, carrying
the ``x-k8s-aws-id: <cluster>`` header so it is only good for that cluster),
base64url-encoded without padding behind ``k8s-aws-v1.``. The API server's
aws-iam-authenticator replays it to STS to learn who is calling. Tokens live 15
minutes, so the connection is given a ``token_provider`` (``TokenSource``) that
re-mints every 10 minutes instead of a token that would go stale.

Blocking (DescribeCluster, signing): ``EksProvider`` calls it off the event loop,
on first use.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from dataclasses import dataclass
from typing import Any

from alphaswarm_controller.providers.kubernetes import ClusterConnection
from alphaswarm_core.providers.protocol import (
    InfrastructureProviderError,
    InfrastructureProviderUnavailable,
)
from alphaswarm_core.providers.reasons import ErrorReason

from .clients import Clients, endpoint_from
from .errors import translate

TOKEN_PREFIX = "k8s-aws-v1."
CLUSTER_HEADER = "x-k8s-aws-id"
#: What ``aws eks get-token`` signs with; the API server accepts the token for 15 minutes.
TOKEN_EXPIRES_SECONDS = 60
TOKEN_REUSE_SECONDS = 10 * 60


class TokenSource:
    """Hands out a cached token, minting a new one well before EKS stops accepting it.

    The kubernetes client asks for a token on every request; signing is cheap but
    building an STS client is not, and the API server accepts a token for 15
    minutes from its signing time (``aws eks get-token`` advertises 14).
    """

    def __init__(self, clients: Clients, cluster: str) -> None:
        self._clients = clients
        self._cluster = cluster
        self._lock = threading.Lock()
        self._sts: Any = None
        self._token = ""
        self._minted_at = 0.0

    def __call__(self) -> str:
        with self._lock:
            if not self._token or time.monotonic() - self._minted_at > TOKEN_REUSE_SECONDS:
                if self._sts is None:
                    self._sts = _token_client(self._clients, self._cluster)
                self._token = mint_token(self._clients, self._cluster, self._sts)
                self._minted_at = time.monotonic()
            return self._token


@dataclass(frozen=True, slots=True)
class EksCluster:
    name: str
    endpoint: str
    ca_pem: bytes
    status: str


def _token_client(clients: Clients, cluster: str) -> Any:
    # A client of its own: the header handler must not touch the shared STS client.
    sts = clients.session().client(
        "sts", region_name=clients.region or None, endpoint_url=endpoint_from(clients.env, "sts")
    )

    def add_cluster_header(request: Any, **_: Any) -> None:
        request.headers[CLUSTER_HEADER] = cluster

    sts.meta.events.register("before-sign.sts.GetCallerIdentity", add_cluster_header)
    return sts


def mint_token(clients: Clients, cluster: str, sts: Any = None) -> str:
    """A bearer token for ``cluster`` from the controller's current credentials."""
    sts = sts or _token_client(clients, cluster)
    try:
        url = sts.generate_presigned_url(
            "get_caller_identity", Params={}, ExpiresIn=TOKEN_EXPIRES_SECONDS, HttpMethod="GET"
        )
    except Exception as exc:
        raise translate(exc, "sts", "GetCallerIdentity") from None
    encoded = base64.urlsafe_b64encode(str(url).encode()).decode().rstrip("=")
    return TOKEN_PREFIX + encoded


def describe_cluster(clients: Clients, name: str) -> EksCluster:
    try:
        cluster = clients.call("eks", "DescribeCluster", name=name)["cluster"]
    except InfrastructureProviderError as exc:
        if exc.metadata.get("aws_error_code") == "ResourceNotFoundException":
            raise InfrastructureProviderUnavailable(
                f"EKS cluster {name!r} (ALPHASWARM_AWS_EKS_CLUSTER) does not exist in region "
                f"{clients.region or '(default)'}",
                reason=ErrorReason.CLUSTER_NOT_FOUND,
                metadata={"setting": "ALPHASWARM_AWS_EKS_CLUSTER", "cluster": name},
            ) from None
        raise
    status = str(cluster.get("status", ""))
    endpoint = str(cluster.get("endpoint") or "")
    if status != "ACTIVE" or not endpoint:
        raise InfrastructureProviderUnavailable(
            f"EKS cluster {name!r} is {status or 'not ready'}; it has no API endpoint to use yet",
            reason=ErrorReason.CLUSTER_NOT_READY,
            metadata={"cluster": name, "status": status},
        )
    try:
        ca_pem = base64.b64decode(cluster.get("certificateAuthority", {}).get("data", ""))
    except (binascii.Error, ValueError):
        ca_pem = b""
    return EksCluster(name=name, endpoint=endpoint, ca_pem=ca_pem, status=status)


def eks_connection(clients: Clients, cluster_name: str) -> ClusterConnection:
    """The connection to ``cluster_name``: endpoint, CA and a token source (blocking)."""
    cluster = describe_cluster(clients, cluster_name)
    tokens = TokenSource(clients, cluster_name)
    return ClusterConnection(
        endpoint=cluster.endpoint,
        ca_data=cluster.ca_pem or None,
        token_provider=tokens,
        description=f"EKS cluster {cluster_name}",
    )
