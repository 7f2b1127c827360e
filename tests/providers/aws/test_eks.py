"""EKS mode: ``EksProvider`` is a ``KubernetesProvider`` found through EKS, with EKS tokens.

See tests/fakes/eks_server.py for the EKS bed (moto's EKS and STS, the real
kube-apiserver whose token webhook replays EKS tokens against STS the way
aws-iam-authenticator does, RBAC on).
"""

from __future__ import annotations

import asyncio
import base64
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest

from alphaswarm_controller.providers.aws import EksProvider
from alphaswarm_controller.providers.aws.clients import Clients
from alphaswarm_controller.providers.aws.eks import (
    TOKEN_PREFIX,
    TOKEN_REUSE_SECONDS,
    TokenSource,
    mint_token,
)
from alphaswarm_controller.providers.kubernetes import ClusterConnection, KubernetesProvider
from alphaswarm_core.providers.protocol import (
    DeploymentSpec,
    DeploymentStatus,
    InfrastructureProviderUnavailable,
)
from alphaswarm_core.testing import ready, unique_name, wait_for
from tests.fakes import aws_presigned
from tests.fakes.aws_front import TEST_CREDENTIALS
from tests.fakes.eks_server import CLUSTER, EKS_USER, EksTestBed, verify_eks_token
from tests.fakes.moto_server import IMAGE


def test_eks_provider_is_a_kubernetes_provider() -> None:
    assert issubclass(EksProvider, KubernetesProvider)
    assert (EksProvider.provider_alias, str(EksProvider.provider_kind)) == ("aws", "aws")
    assert "native_watch" in EksProvider.capabilities()


def test_token_is_a_presigned_caller_identity_url(eks: EksTestBed) -> None:
    clients = Clients(eks.aws.env())
    token = mint_token(clients, CLUSTER)
    assert token.startswith(TOKEN_PREFIX)
    query = verify_eks_token(token, CLUSTER)
    assert query["X-Amz-Expires"] == "60"
    time.sleep(1.1)  # SigV4 dates have one-second resolution
    assert mint_token(clients, CLUSTER) != token, "each token is freshly signed"


def test_token_source_reuses_then_remints(eks: EksTestBed) -> None:
    tokens = TokenSource(Clients(eks.aws.env()), CLUSTER)
    first = tokens()
    assert tokens() == first, "a fresh token is reused rather than re-signed per request"
    tokens._minted_at -= TOKEN_REUSE_SECONDS + 1  # as if ten minutes had passed
    time.sleep(1.1)
    renewed = tokens()
    assert renewed != first
    verify_eks_token(renewed, CLUSTER)


async def test_eks_health_names_cluster_and_reaches_the_api(
    eks_provider: EksProvider, eks: EksTestBed
) -> None:
    health = await eks_provider.health()
    assert health.healthy, health.message
    assert (health.alias, health.kind) == ("aws", "aws")
    assert health.details["eks_cluster"] == CLUSTER
    assert health.details["mode"] == "eks"
    assert health.details["account"] == "123456789012"
    assert CLUSTER in health.message
    assert eks.authenticator.tokens_seen, "the API server's webhook accepted EKS tokens"


async def test_unknown_eks_cluster_is_named(eks: EksTestBed) -> None:
    provider = EksProvider(env=eks.provider_env(ALPHASWARM_AWS_EKS_CLUSTER="nope"))
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        await provider.start(DeploymentSpec("web", "default", image=IMAGE))
    assert caught.value.reason == "CLUSTER_NOT_FOUND"
    assert "ALPHASWARM_AWS_EKS_CLUSTER" in caught.value.message


async def test_missing_eks_cluster_setting(eks: EksTestBed) -> None:
    env = eks.provider_env()
    del env["ALPHASWARM_AWS_EKS_CLUSTER"]
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        await EksProvider(env=env).health()
    assert caught.value.reason == "SETTING_INVALID"
    assert caught.value.code == "FAILED_PRECONDITION"
    assert "ALPHASWARM_AWS_EKS_CLUSTER" in caught.value.message


def test_cluster_side_settings_keep_the_kubernetes_names(eks: EksTestBed) -> None:
    provider = EksProvider(env=eks.provider_env(ALPHASWARM_KUBERNETES_PAGE_SIZE="7"))
    assert provider.page_size == 7
    assert provider.create_namespaces
    assert provider.setting_name("EKS_CLUSTER") == "ALPHASWARM_AWS_EKS_CLUSTER"


async def test_a_given_connection_makes_no_eks_call(eks: EksTestBed) -> None:
    connection = ClusterConnection(eks.kube.url, ca_data=eks.kube.ca_pem, token="x")
    provider = EksProvider.from_connection(connection, env={})
    before = eks.aws.faults.count("eks:DescribeCluster")
    with pytest.raises(InfrastructureProviderUnavailable):
        await provider.status("web", namespace="default")  # 401: not an EKS token
    assert eks.aws.faults.count("eks:DescribeCluster") == before
    assert provider.alias == "aws"
    await provider.close()


async def test_watch_is_the_kubernetes_watch_not_polling(
    eks_provider: EksProvider, eks: EksTestBed, real_kube_namespace: str
) -> None:
    """EKS mode streams status changes from one Kubernetes watch; it does not re-read the
    Deployment every interval (the base class's polling would, 20 times a second here)."""
    namespace, service = real_kube_namespace, unique_name()
    await eks_provider.start(DeploymentSpec(service, namespace, image=IMAGE, replicas=1))
    await wait_for(eks_provider, service, namespace, ready(1))
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments"

    def requests() -> tuple[int, int]:
        seen = [r for r in list(eks.proxy.requests) if r.path.startswith(path)]
        watches = sum(1 for r in seen if r.operation == "kube:watch deployments")
        return watches, len(seen) - watches

    watch = eks_provider.watch(service, namespace=namespace, interval_seconds=0.05)
    seen: list[DeploymentStatus] = []
    try:
        async with asyncio.timeout(30):
            seen.append(await anext(watch))
            watches_before, reads_before = requests()
            await eks_provider.scale(service, 2, namespace=namespace)
            async for status in watch:
                seen.append(status)
                if status.ready_replicas == 2:
                    break
            await asyncio.sleep(1.0)  # 20 polling intervals with nothing to report
            watches, reads = requests()
    finally:
        await watch.aclose()
    assert [s.ready_replicas for s in seen][-1] == 2
    assert 1 <= watches <= 2, f"one Kubernetes watch (reopened at most once), saw {watches}"
    assert watches_before <= 1
    # The scale call itself reads and patches the Deployment (3 requests); a polling watch
    # would have added a read per 50 ms interval on top.
    assert reads - reads_before <= 5, f"{reads - reads_before} reads while watching"


def test_the_api_server_authenticates_the_eks_token_through_sts(eks: EksTestBed) -> None:
    """The webhook replays the token; STS (moto behind the front) checks its signature."""
    who = eks.kube.admin().post(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": mint_token(Clients(eks.aws.env()), CLUSTER)},
        },
    )
    assert who["status"]["authenticated"] is True
    assert who["status"]["user"]["username"] == EKS_USER
    assert eks.aws.faults.count("sts:GetCallerIdentity") >= 1


@pytest.mark.parametrize("forgery", ["other-cluster", "wrong-secret"])
async def test_a_token_sts_would_refuse_is_refused_by_the_api_server(
    eks: EksTestBed, forgery: str
) -> None:
    """A token signed for another cluster (its x-k8s-aws-id header differs) or with the
    wrong secret has a good form but a bad signature: STS answers 403, the API server 401."""
    if forgery == "other-cluster":
        token = mint_token(Clients(eks.aws.env()), "other")
    else:
        token = mint_token(Clients(eks.aws.env(AWS_SECRET_ACCESS_KEY="not-the-secret")), CLUSTER)
    connection = ClusterConnection(eks.kube.url, ca_data=eks.kube.ca_pem, token=token)
    provider = EksProvider.from_connection(connection, env={})
    try:
        with pytest.raises(InfrastructureProviderUnavailable) as caught:
            await provider.status("web", namespace="default")
    finally:
        await provider.close()
    assert caught.value.reason == "CREDENTIALS_INVALID"


def test_the_bed_holds_a_token_good_for_15_minutes_whatever_its_expires(eks: EksTestBed) -> None:
    """As STS and aws-iam-authenticator do (tests/fakes/aws_presigned.py): the provider
    reuses a token for TOKEN_REUSE_SECONDS, well inside that."""
    token = mint_token(Clients(eks.aws.env()), CLUSTER)
    query = verify_eks_token(token, CLUSTER)
    body = token.removeprefix(TOKEN_PREFIX)
    url = urlsplit(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode())
    signed_at = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert TOKEN_REUSE_SECONDS < 15 * 60

    def refusal(after: timedelta) -> str:
        error = aws_presigned.check(
            "GET",
            f"{url.path}?{url.query}",
            url.netloc,
            {"x-k8s-aws-id": CLUSTER},
            TEST_CREDENTIALS,
            now=signed_at + after,
        )
        return "" if error is None else error.code

    assert refusal(timedelta(seconds=TOKEN_REUSE_SECONDS + 60)) == ""
    assert refusal(timedelta(minutes=15, seconds=1)) == "ExpiredToken"
