"""boto3 clients built from the provider's environment, and one call path for all of them.

Credentials, region and endpoint come from boto3's own variables (the standard
chain, ``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` and the
per-service ``AWS_ENDPOINT_URL_<SERVICE>``), read from the environment the
provider was given, so the same code runs against AWS and against moto.

botocore's own retries are off: ``call`` retries by ``retry.RetryPolicy`` (capped
exponential backoff with full jitter, every wait inside the call's deadline),
throttling for every operation and transient failures (5xx, timeouts, dropped
connections) only for the requests its caller marks idempotent; a
``RegisterTaskDefinition`` sent twice registers two revisions. Clients are
cached per (service, timeout bucket) so the caller's deadline bounds every
attempt without building a client per call.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]

from alphaswarm_core.providers.concurrency import remaining_timeout

from .errors import translate
from .retry import DEFAULT_POLICY, RetryPolicy, is_retryable

TIMEOUT_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)

#: botocore service name -> the suffix boto3 uses in ``AWS_ENDPOINT_URL_<SUFFIX>``.
ENDPOINT_ENV_SUFFIX = {
    "cloudwatch": "CLOUDWATCH",
    "ec2": "EC2",
    "ecs": "ECS",
    "eks": "EKS",
    "iam": "IAM",
    "logs": "CLOUDWATCH_LOGS",
    "ssm": "SSM",
    "sts": "STS",
}

JsonDict = dict[str, Any]


def _bucket(timeout: float) -> float:
    """The largest bucket not above ``timeout`` (at least the smallest), so a call never
    waits longer than the caller allows by more than the first bucket."""
    chosen = TIMEOUT_BUCKETS[0]
    for bucket in TIMEOUT_BUCKETS:
        if bucket <= timeout:
            chosen = bucket
    return chosen


def region_from(env: Mapping[str, str]) -> str:
    return (
        env.get("ALPHASWARM_AWS_REGION")
        or env.get("AWS_REGION")
        or env.get("AWS_DEFAULT_REGION")
        or ""
    )


def endpoint_from(env: Mapping[str, str], service: str) -> str | None:
    """boto3's endpoint override rules, applied to ``env``."""
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    suffix = ENDPOINT_ENV_SUFFIX.get(service, service.upper().replace("-", "_"))
    return env.get(f"AWS_ENDPOINT_URL_{suffix}") or env.get("AWS_ENDPOINT_URL") or None


class Clients:
    """Thread-safe factory of boto3 clients for one provider instance."""

    def __init__(self, env: Mapping[str, str], policy: RetryPolicy = DEFAULT_POLICY) -> None:
        self._env = env
        self.env = env
        self.region = region_from(env)
        self.policy = policy
        self._lock = threading.Lock()
        self._session: boto3.Session | None = None
        self._clients: dict[tuple[str, float], Any] = {}

    def session(self) -> boto3.Session:
        with self._lock:
            if self._session is None:
                self._session = self._new_session()
            return self._session

    def _new_session(self) -> boto3.Session:
        kwargs: dict[str, str] = {}
        if self.region:
            kwargs["region_name"] = self.region
        # boto3 reads these from os.environ itself; passing them from the provider's own
        # environment lets a caller (or a test) give this provider a different identity.
        if self._env is not os.environ:
            if self._env.get("AWS_ACCESS_KEY_ID") and self._env.get("AWS_SECRET_ACCESS_KEY"):
                kwargs["aws_access_key_id"] = self._env["AWS_ACCESS_KEY_ID"]
                kwargs["aws_secret_access_key"] = self._env["AWS_SECRET_ACCESS_KEY"]
                if self._env.get("AWS_SESSION_TOKEN"):
                    kwargs["aws_session_token"] = self._env["AWS_SESSION_TOKEN"]
            elif self._env.get("AWS_PROFILE"):
                kwargs["profile_name"] = self._env["AWS_PROFILE"]
        return boto3.Session(**kwargs)

    def client(self, service: str) -> Any:
        timeout = _bucket(remaining_timeout())
        key = (service, timeout)
        cached = self._clients.get(key)
        if cached is not None:
            return cached
        session = self.session()
        config = Config(
            connect_timeout=min(5.0, timeout),
            read_timeout=timeout,
            retries={"mode": "standard", "total_max_attempts": 1},  # ``call`` retries
            user_agent_extra="alphaswarm-controller",
        )
        with self._lock:
            cached = self._clients.get(key)
            if cached is None:
                cached = session.client(
                    service, config=config, endpoint_url=endpoint_from(self._env, service)
                )
                self._clients[key] = cached
        return cached

    def call(
        self,
        service: str,
        operation: str,
        /,
        *,
        idempotent: bool = True,
        redact: bool = False,
        **kwargs: Any,
    ) -> JsonDict:
        """Call ``operation`` (its API name, e.g. ``DescribeServices``); errors translated.

        Throttled attempts are retried for every operation; 5xx, timeouts and connection
        failures only when ``idempotent`` (sending the same request twice leaves the same
        state). Attempts and waits end with the call's deadline.
        """
        deadline = time.monotonic() + remaining_timeout()
        attempt = 0
        while True:
            attempt += 1
            method = getattr(self.client(service), _snake(operation))
            try:
                result: JsonDict = method(**kwargs)
            except Exception as exc:
                if not _is_botocore(exc):
                    raise
                error = translate(exc, service, operation, redact=redact)
                delay = self.policy.delay(attempt)
                if (
                    attempt >= self.policy.max_attempts
                    or not is_retryable(error, idempotent=idempotent)
                    or time.monotonic() + delay >= deadline
                ):
                    raise error from None
                time.sleep(delay)
                continue
            return result

    def pages(
        self,
        service: str,
        operation: str,
        /,
        *,
        token_field: str = "nextToken",
        **kwargs: Any,
    ) -> Iterator[JsonDict]:
        """Every page of a paged read, following the service's continuation token."""
        token: str | None = None
        while True:
            args = dict(kwargs)
            if token:
                args[token_field] = token
            page = self.call(service, operation, **args)
            yield page
            token = page.get(token_field)
            if not token:
                return


def _snake(operation: str) -> str:
    out = []
    for index, char in enumerate(operation):
        if char.isupper() and index and not operation[index - 1].isupper():
            out.append("_")
        out.append(char.lower())
    return "".join(out)


def _is_botocore(exc: BaseException) -> bool:
    module = type(exc).__module__
    return module.startswith(("botocore", "boto3")) or type(exc).__name__ == "ClientError"
