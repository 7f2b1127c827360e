"""EKS for the aws provider's tests: moto's EKS and STS, and a Kubernetes API behind EKS auth.

The Kubernetes API emulator (``kube_api``) stands in for the EKS control plane.
In front of it sits what EKS runs as aws-iam-authenticator, reduced to what can
be checked offline: the bearer token must be ``k8s-aws-v1.`` + base64url
(unpadded) of a presigned STS GetCallerIdentity URL that signs the
``x-k8s-aws-id`` header, for the test credentials, not expired (answered 401
otherwise, as the authenticator does). moto cannot answer the presigned GET
itself: it routes a query-signed request without a service host to S3.

moto creates EKS clusters with a made-up endpoint and CA, so the bed points its
in-process cluster record at the emulator (endpoint and CA bundle) after
CreateCluster; every read the provider makes still goes over HTTP, through the
AWS front (faults apply).
"""

from __future__ import annotations

import base64
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .kube_api import KubeApiEmulator, _Handler, _tls_context
from .moto_server import MotoAws, start_moto

CLUSTER = "prod"
TOKEN_PREFIX = "k8s-aws-v1."
STATIC = "emulator-accepts-this-after-eks-auth"


def verify_eks_token(token: str, cluster: str, access_key: str = "testing") -> dict[str, str]:
    """What aws-iam-authenticator checks before replaying the URL to STS; raises on a bad token."""
    assert token.startswith(TOKEN_PREFIX), "not an EKS token"
    body = token.removeprefix(TOKEN_PREFIX)
    assert "=" not in body, "EKS tokens are unpadded base64url"
    url = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    query = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query["Action"] == "GetCallerIdentity"
    assert query["Version"] == "2011-06-15"
    assert "x-k8s-aws-id" in query["X-Amz-SignedHeaders"].split(";")
    assert query["X-Amz-Credential"].startswith(f"{access_key}/")
    assert query["X-Amz-Credential"].endswith("/sts/aws4_request")
    assert int(query["X-Amz-Expires"]) <= 900
    signed_at = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - signed_at).total_seconds()) < 900
    assert len(query["X-Amz-Signature"]) == 64
    return query


class EksApiEmulator(KubeApiEmulator):
    """The Kubernetes API emulator behind an EKS-token check (401 otherwise)."""

    def __init__(self, cluster: str) -> None:
        super().__init__(token=STATIC, tls=True)
        self.cluster = cluster
        self.tokens_seen: set[str] = set()

    def start(self) -> EksApiEmulator:
        emulator = self

        class Handler(_Handler):
            def _handle(self, method: str) -> None:
                token = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                try:
                    verify_eks_token(token, emulator.cluster)
                except (AssertionError, KeyError, ValueError):
                    token_ok = False
                else:
                    token_ok = True
                    emulator.tokens_seen.add(token)
                del self.headers["Authorization"]
                self.headers["Authorization"] = f"Bearer {STATIC if token_ok else 'rejected'}"
                super()._handle(method)

        Handler.emulator = self
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        context, self.ca_pem = _tls_context(Path(self._tmp.name))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        self.controller.start()
        return self


def point_cluster_at(aws: MotoAws, name: str, emulator: KubeApiEmulator) -> None:
    from moto.eks.models import eks_backends

    aws.client("eks").create_cluster(
        name=name,
        roleArn="arn:aws:iam::123456789012:role/eks",
        resourcesVpcConfig={"subnetIds": []},
    )
    record = eks_backends["123456789012"][aws.region].clusters[name]
    record.endpoint = emulator.url
    assert emulator.ca_pem is not None
    record.certificate_authority = {"data": base64.b64encode(emulator.ca_pem).decode()}


@dataclass
class EksTestBed:
    aws: MotoAws
    kube: EksApiEmulator
    cluster: str = CLUSTER

    def provider_env(self, **extra: str) -> dict[str, str]:
        settings = {
            "ALPHASWARM_AWS_MODE": "eks",
            "ALPHASWARM_AWS_EKS_CLUSTER": self.cluster,
            "ALPHASWARM_KUBERNETES_CREATE_NAMESPACES": "true",
        }
        return self.aws.env(**{**settings, **extra})


@contextlib.contextmanager
def eks_test_bed() -> Iterator[EksTestBed]:
    with start_moto() as aws:
        kube = EksApiEmulator(CLUSTER).start()
        try:
            point_cluster_at(aws, CLUSTER, kube)
            yield EksTestBed(aws, kube)
        finally:
            kube.stop()
