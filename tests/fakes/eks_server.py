"""EKS for the aws provider's tests: moto's EKS and STS, and the real API server behind EKS auth.

The cluster is the tests' real kube-apiserver (tests/realkube). moto creates EKS
clusters with a made-up endpoint and CA, so the bed points its cluster record at
the real server (through a fault proxy, which counts requests) after
CreateCluster; every read the provider makes still goes over HTTP through the
AWS front.

Authentication is what EKS runs as aws-iam-authenticator: the API server's token
webhook (tests/realkube/webhook.py) hands every ``k8s-aws-v1.`` token to
``EksAuthenticator``, which checks its form (a presigned STS
GetCallerIdentity that signs the ``x-k8s-aws-id`` header, not expired), replays
the URL with ``x-k8s-aws-id: <cluster>`` against STS (moto behind the AWS front,
which checks the signature and expiry as STS does: tests/fakes/aws_presigned.py),
and maps the caller's ARN to a Kubernetes user (EKS access entries / aws-auth
``mapUsers``). RBAC is on: that user holds the documented RBAC, cluster-wide.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import urllib3

from tests.realkube.cluster import ControlPlane, Endpoint
from tests.realkube.rbac import grant_cluster_wide, user
from tests.realkube.webhook import User

from .kube_proxy import KubeFaultProxy
from .moto_server import MotoAws, start_moto

log = logging.getLogger(__name__)

CLUSTER = "prod"
TOKEN_PREFIX = "k8s-aws-v1."
#: What moto's GetCallerIdentity answers for the tests' access key.
CALLER_ARN = "arn:aws:sts::123456789012:user/moto"
#: The Kubernetes user EKS maps that principal to (an access entry's default username).
EKS_USER = CALLER_ARN
_ARN = re.compile(r"<Arn>([^<]+)</Arn>")


def verify_eks_token(token: str, cluster: str) -> dict[str, str]:
    """What aws-iam-authenticator checks before replaying the URL; raises on a bad token."""
    assert token.startswith(TOKEN_PREFIX), "not an EKS token"
    body = token.removeprefix(TOKEN_PREFIX)
    assert "=" not in body, "EKS tokens are unpadded base64url"
    url = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    query = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query["Action"] == "GetCallerIdentity"
    assert query["Version"] == "2011-06-15"
    assert "x-k8s-aws-id" in query["X-Amz-SignedHeaders"].split(";")
    assert query["X-Amz-Credential"].endswith("/sts/aws4_request")
    assert int(query["X-Amz-Expires"]) <= 900
    signed_at = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - signed_at).total_seconds()) < 900
    assert len(query["X-Amz-Signature"]) == 64
    return query


class EksAuthenticator:
    """aws-iam-authenticator's server side for one cluster and one STS endpoint."""

    def __init__(self, cluster: str, sts_url: str, users: dict[str, User]) -> None:
        self.cluster = cluster
        self.sts_host = urlsplit(sts_url).netloc
        self.users = users
        self.tokens_seen: set[str] = set()
        self.replays = 0
        self._pool = urllib3.PoolManager(retries=False, timeout=10)

    def __call__(self, token: str) -> User | None:
        if not token.startswith(TOKEN_PREFIX):
            return None  # not an EKS token: another authenticator's
        try:
            verify_eks_token(token, self.cluster)
        except (AssertionError, KeyError, ValueError):
            log.info("refused a malformed EKS token")
            return None
        body = token.removeprefix(TOKEN_PREFIX)
        url = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
        if urlsplit(url).netloc != self.sts_host:  # only STS may vouch for a caller
            return None
        self.replays += 1
        answer = self._pool.request("GET", url, headers={"x-k8s-aws-id": self.cluster})
        if answer.status != 200:
            log.info("STS refused the replayed token: %s", answer.data[:300])
            return None
        found = _ARN.search(answer.data.decode())
        identity = self.users.get(found.group(1)) if found else None
        if identity is not None:
            self.tokens_seen.add(token)
        return identity


def point_cluster_at(aws: MotoAws, name: str, url: str, ca_pem: bytes) -> None:
    from moto.eks.models import eks_backends

    aws.client("eks").create_cluster(
        name=name,
        roleArn="arn:aws:iam::123456789012:role/eks",
        resourcesVpcConfig={"subnetIds": []},
    )
    record = eks_backends["123456789012"][aws.region].clusters[name]
    record.endpoint = url
    record.certificate_authority = {"data": base64.b64encode(ca_pem).decode()}


@dataclass
class EksTestBed:
    aws: MotoAws
    kube: Endpoint
    proxy: KubeFaultProxy
    """In front of the API server, where the EKS cluster record points: counts requests."""
    authenticator: EksAuthenticator
    cluster: str = CLUSTER

    def provider_env(self, **extra: str) -> dict[str, str]:
        settings = {
            "ALPHASWARM_AWS_MODE": "eks",
            "ALPHASWARM_AWS_EKS_CLUSTER": self.cluster,
            "ALPHASWARM_KUBERNETES_CREATE_NAMESPACES": "true",
        }
        return self.aws.env(**{**settings, **extra})


@contextlib.contextmanager
def eks_test_bed(cluster: ControlPlane) -> Iterator[EksTestBed]:
    """moto + the AWS front, the EKS cluster record pointing at the real API server (through
    a proxy), the EKS authenticator on its token webhook, the documented RBAC for the user."""
    assert cluster.endpoint is not None and cluster.token_webhook is not None
    endpoint = cluster.endpoint
    pair = cluster.serving_certificate("eks-proxy")
    with (
        start_moto() as aws,
        KubeFaultProxy(endpoint.url, endpoint.ca_pem, str(pair.cert), str(pair.key)) as proxy,
    ):
        authenticator = EksAuthenticator(
            CLUSTER, aws.url, {CALLER_ARN: User(EKS_USER, ("alphaswarm:eks-controllers",))}
        )
        cluster.token_webhook.register(authenticator)
        try:
            grant_cluster_wide(endpoint.admin(), user(EKS_USER), "eks")
            point_cluster_at(aws, CLUSTER, proxy.url, endpoint.ca_pem)
            yield EksTestBed(aws, endpoint, proxy, authenticator)
        finally:
            cluster.token_webhook.unregister(authenticator)
