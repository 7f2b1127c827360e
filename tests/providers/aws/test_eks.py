"""EKS mode: moto's DescribeCluster, a minted EKS token, the kubernetes provider underneath.

The Kubernetes API emulator stands in for the EKS control plane. In front of it
sits what EKS runs as aws-iam-authenticator, reduced to what can be checked
offline: the bearer token must be ``k8s-aws-v1.`` + base64url (unpadded) of a
presigned STS GetCallerIdentity URL that signs the ``x-k8s-aws-id`` header,
for the test credentials, not expired. (moto cannot answer the presigned
GET itself: it routes a query-signed request without a service host to S3.)

moto creates EKS clusters with a made-up endpoint and CA, so the test points
its in-process cluster record at the emulator (endpoint and CA bundle) after
CreateCluster; every read the provider makes still goes over HTTP.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from alphaswarm_controller.providers.aws import AwsProvider
from alphaswarm_controller.providers.aws.clients import Clients
from alphaswarm_controller.providers.aws.eks import (
    TOKEN_PREFIX,
    TOKEN_REUSE_SECONDS,
    TokenSource,
    mint_token,
)
from alphaswarm_core.providers.protocol import DeploymentSpec, InfrastructureProviderUnavailable
from alphaswarm_core.testing import ProviderContract, SpecFactory, unique_name
from tests.fakes.kube_api import KubeApiEmulator, _Handler, _tls_context
from tests.fakes.moto_server import IMAGE, MotoAws, start_moto

CLUSTER = "prod"
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
        from http.server import ThreadingHTTPServer
        from pathlib import Path

        emulator = self

        class Handler(_Handler):
            def _handle(self, method: str) -> None:
                header = self.headers.get("Authorization") or ""
                token = header.removeprefix("Bearer ")
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
        import threading

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


@pytest.fixture(scope="module")
def aws() -> Iterator[MotoAws]:
    with start_moto() as moto:
        yield moto


@pytest.fixture(scope="module")
def kube(aws: MotoAws) -> Iterator[EksApiEmulator]:
    emulator = EksApiEmulator(CLUSTER).start()
    point_cluster_at(aws, CLUSTER, emulator)
    yield emulator
    emulator.stop()


def eks_env(aws: MotoAws, **extra: str) -> dict[str, str]:
    settings = {
        "ALPHASWARM_AWS_MODE": "eks",
        "ALPHASWARM_AWS_EKS_CLUSTER": CLUSTER,
        "ALPHASWARM_KUBERNETES_CREATE_NAMESPACES": "true",
    }
    return aws.env(**{**settings, **extra})


@pytest.fixture
async def provider(aws: MotoAws, kube: EksApiEmulator) -> AsyncIterator[AwsProvider]:
    instance = AwsProvider(env=eks_env(aws))
    yield instance
    await instance.close()


@pytest.fixture
def spec_factory() -> SpecFactory:
    def make(
        service_id: str, namespace: str, replicas: int = 1, env: Mapping[str, str] | None = None
    ) -> DeploymentSpec:
        return DeploymentSpec(
            service_id, namespace, image=IMAGE, replicas=replicas, env=dict(env or {})
        )

    return make


@pytest.fixture
def namespace() -> str:
    return unique_name("ns")


class TestAwsEksContract(ProviderContract):
    """The same contract, in EKS mode, through the kubernetes provider."""

    expected_capabilities = frozenset(
        {"start", "stop", "scale", "status", "list", "config", "metrics"}
    )


def test_token_is_a_presigned_caller_identity_url(aws: MotoAws) -> None:
    clients = Clients(aws.env())
    token = mint_token(clients, CLUSTER)
    query = verify_eks_token(token, CLUSTER)
    assert query["X-Amz-Expires"] == "60"
    time.sleep(1.1)
    assert mint_token(clients, CLUSTER) != token, "each token is freshly signed"


async def test_eks_health_names_cluster_and_reaches_the_api(
    provider: AwsProvider, kube: EksApiEmulator
) -> None:
    health = await provider.health()
    assert health.healthy, health.message
    assert (health.alias, health.kind) == ("aws", "aws")
    assert health.details["eks_cluster"] == CLUSTER
    assert "prod" in health.message
    assert kube.tokens_seen, "the API server saw EKS tokens"


async def test_unknown_eks_cluster_is_named(aws: MotoAws) -> None:
    provider = AwsProvider(env=eks_env(aws, ALPHASWARM_AWS_EKS_CLUSTER="nope"))
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        await provider.start(DeploymentSpec("web", "default", image=IMAGE))
    assert caught.value.reason == "CLUSTER_NOT_FOUND"
    assert "ALPHASWARM_AWS_EKS_CLUSTER" in caught.value.message


async def test_missing_eks_cluster_setting(aws: MotoAws) -> None:
    env: dict[str, Any] = eks_env(aws)
    del env["ALPHASWARM_AWS_EKS_CLUSTER"]
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        await AwsProvider(env=env).health()
    assert caught.value.reason == "SETTING_INVALID"
    assert "ALPHASWARM_AWS_EKS_CLUSTER" in caught.value.message


def test_token_source_reuses_then_remints(aws: MotoAws) -> None:
    tokens = TokenSource(Clients(aws.env()), CLUSTER)
    first = tokens()
    assert tokens() == first, "a fresh token is reused rather than re-signed per request"
    tokens._minted_at -= TOKEN_REUSE_SECONDS + 1  # as if ten minutes had passed
    time.sleep(1.1)  # SigV4 dates have one-second resolution
    renewed = tokens()
    assert renewed != first
    verify_eks_token(renewed, CLUSTER)
