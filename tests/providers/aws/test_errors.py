"""Error translation, retries and client set-up, with botocore's Stubber.

The same faults over HTTP, in each service's wire form, come from the AWS front
(tests/fakes/aws_front.py) in the other modules.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from botocore.stub import Stubber  # type: ignore[import-untyped]

from alphaswarm_controller.providers.aws import EcsProvider
from alphaswarm_controller.providers.aws.clients import Clients
from alphaswarm_controller.providers.aws.config import SsmConfig
from alphaswarm_controller.providers.aws.retry import RetryPolicy
from alphaswarm_core.call import CallContext, current_call
from alphaswarm_core.providers.protocol import (
    BackendPermissionDenied,
    BackendRejectedError,
    BackendUnavailableError,
    InfrastructureProviderUnavailable,
)

ENV = {
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "not-a-real-secret",
    "AWS_REGION": "eu-west-1",
}


ONE_ATTEMPT = RetryPolicy(max_attempts=1)
FAST = RetryPolicy(max_attempts=3, base_seconds=0.001, cap_seconds=0.002)


@pytest.fixture
def clients() -> Clients:
    return Clients(dict(ENV), ONE_ATTEMPT)


@pytest.fixture
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> Iterator[None]:
    """boto3's chain with nothing to find: no env keys, no files, no instance metadata."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield


async def test_missing_credentials_name_the_chain(no_ambient_credentials: None) -> None:
    provider = EcsProvider(env={"AWS_REGION": "eu-west-1", "ALPHASWARM_AWS_ECS_CLUSTER": "prod"})
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        await provider.health()
    assert caught.value.reason == "CREDENTIALS_MISSING"
    assert caught.value.code == "FAILED_PRECONDITION"
    for source in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "instance"):
        assert source in caught.value.message


async def test_missing_region_is_named() -> None:
    provider = EcsProvider(
        env={
            "ALPHASWARM_AWS_ECS_CLUSTER": "prod",
            **{k: v for k, v in ENV.items() if k != "AWS_REGION"},
        }
    )
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        await provider.health()
    assert caught.value.reason == "SETTING_INVALID"
    assert "AWS_REGION" in caught.value.message


def test_access_denied_names_the_action(clients: Clients) -> None:
    with Stubber(clients.client("ecs")) as stub:
        stub.add_client_error(
            "update_service",
            service_error_code="AccessDeniedException",
            service_message="User: arn:aws:iam::1:user/x is not authorized",
            http_status_code=400,
        )
        with pytest.raises(BackendPermissionDenied) as caught:
            clients.call("ecs", "UpdateService", cluster="c", service="s", desiredCount=1)
    assert caught.value.code == "PERMISSION_DENIED"
    assert "ecs:UpdateService" in caught.value.message
    assert caught.value.metadata["missing_action"] == "ecs:UpdateService"


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ThrottlingException", 400),
        ("Throttling", 400),
        ("ServiceUnavailable", 503),
        ("InternalFailure", 500),
    ],
)
def test_throttling_and_5xx_are_unavailable_with_retry_info(
    clients: Clients, code: str, status: int
) -> None:
    with Stubber(clients.client("sts")) as stub:
        stub.add_client_error(
            "get_caller_identity", service_error_code=code, http_status_code=status
        )
        with pytest.raises(BackendUnavailableError) as caught:
            clients.call("sts", "GetCallerIdentity")
    assert caught.value.code == "UNAVAILABLE"
    assert caught.value.retry_after_seconds > 0
    assert "sts:GetCallerIdentity" in caught.value.message


async def test_health_maps_denied_identity_probe() -> None:
    provider = EcsProvider(env={**ENV, "ALPHASWARM_AWS_ECS_CLUSTER": "prod"})
    with Stubber(provider.clients.client("sts")) as stub:
        stub.add_client_error(
            "get_caller_identity", service_error_code="AccessDenied", http_status_code=403
        )
        with pytest.raises(BackendPermissionDenied) as caught:
            await provider.health()
    assert "sts:GetCallerIdentity" in caught.value.message


def test_secret_values_never_reach_error_messages(clients: Clients) -> None:
    secret = "hunter2-very-secret"
    with Stubber(clients.client("ssm")) as stub:
        stub.add_client_error(
            "put_parameter",
            service_error_code="ValidationException",
            service_message=f"Value '{secret}' at 'value' failed to satisfy constraint",
            http_status_code=400,
        )
        with pytest.raises(BackendRejectedError) as caught:
            SsmConfig(clients)._put("/alphaswarm/ns/svc/secret.PW", secret, secret=True)
    assert secret not in str(caught.value)
    assert secret not in repr(caught.value.metadata)
    assert "ssm:PutParameter" in caught.value.message


def test_botocore_sends_once_and_the_provider_decides(clients: Clients) -> None:
    assert clients.client("ecs").meta.config.retries == {
        "mode": "standard",
        "total_max_attempts": 1,
    }


def test_throttled_requests_are_sent_again_whatever_they_do() -> None:
    clients = Clients(dict(ENV), FAST)
    with Stubber(clients.client("ecs")) as stub:
        for _ in range(2):
            stub.add_client_error(
                "register_task_definition",
                service_error_code="ThrottlingException",
                http_status_code=400,
            )
        stub.add_response("register_task_definition", {"taskDefinition": {"family": "f"}})
        answer = clients.call(
            "ecs",
            "RegisterTaskDefinition",
            idempotent=False,  # a throttled request was refused before ECS acted on it
            family="f",
            containerDefinitions=[],
        )
        stub.assert_no_pending_responses()
    assert answer["taskDefinition"]["family"] == "f"


def test_a_5xx_is_sent_again_only_when_idempotent() -> None:
    clients = Clients(dict(ENV), FAST)
    with Stubber(clients.client("ssm")) as stub:
        stub.add_client_error("put_parameter", "InternalServerError", http_status_code=500)
        with pytest.raises(BackendUnavailableError):
            clients.call("ssm", "PutParameter", idempotent=False, Name="/a", Value="b")
        stub.assert_no_pending_responses()  # one attempt, no more
        stub.add_client_error("put_parameter", "InternalServerError", http_status_code=500)
        stub.add_response("put_parameter", {"Version": 2})
        assert clients.call("ssm", "PutParameter", Name="/a", Value="b")["Version"] == 2


def test_retries_end_with_the_attempts() -> None:
    clients = Clients(dict(ENV), FAST)
    with Stubber(clients.client("ecs")) as stub:
        for _ in range(FAST.max_attempts):
            stub.add_client_error("list_services", "ThrottlingException", http_status_code=400)
        with pytest.raises(BackendUnavailableError) as caught:
            clients.call("ecs", "ListServices", cluster="c")
        stub.assert_no_pending_responses()
    assert caught.value.reason == "BACKEND_THROTTLED"


def test_retries_end_with_the_calls_deadline() -> None:
    slow = Clients(dict(ENV), RetryPolicy(max_attempts=50, base_seconds=5.0, cap_seconds=5.0))
    call = CallContext(method="ListServices", request_id="r", peer="p")
    call.deadline = time.monotonic() + 0.5
    token = current_call.set(call)
    try:
        with Stubber(slow.client("ecs")) as stub:
            for _ in range(50):
                stub.add_client_error("list_services", "ThrottlingException", http_status_code=400)
            began = time.monotonic()
            with pytest.raises(BackendUnavailableError):
                slow.call("ecs", "ListServices", cluster="c")
            # No wait that would outlast the deadline is started; no tight timing asserted.
            assert time.monotonic() - began < 30
            assert len(stub._queue) > 40, "a handful of attempts at most"
    finally:
        current_call.reset(token)


def test_endpoints_follow_boto3_variables() -> None:
    clients = Clients(
        {
            **ENV,
            "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
            "AWS_ENDPOINT_URL_SSM": "http://127.0.0.1:2",
        }
    )
    assert clients.client("ecs").meta.endpoint_url == "http://127.0.0.1:1"
    assert clients.client("ssm").meta.endpoint_url == "http://127.0.0.1:2"
    plain = Clients(dict(ENV))
    assert plain.client("ecs").meta.endpoint_url == "https://ecs.eu-west-1.amazonaws.com"
    ignoring = Clients(
        {
            **ENV,
            "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
            "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true",
        }
    )
    assert ignoring.client("ecs").meta.endpoint_url == "https://ecs.eu-west-1.amazonaws.com"
