"""botocore exceptions -> the provider error hierarchy, in one place.

Every AWS call of this package goes through ``translate`` (via ``Clients.call``),
so a missing credential, a denied action, throttling or a 5xx read the same
whichever service raised them. AWS error messages are passed on only when the
caller says they cannot echo a secret (SSM validation messages can quote the
value being written, so config writes pass ``redact=True``).
"""

from __future__ import annotations

from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    ConnectionError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from alphaswarm_core.providers.protocol import (
    BackendPermissionDenied,
    BackendQuotaExceeded,
    BackendRejectedError,
    BackendTimeoutError,
    BackendUnavailableError,
    InfrastructureProviderError,
    InfrastructureProviderUnavailable,
)
from alphaswarm_core.providers.reasons import ErrorReason

#: The standard boto3 credential chain, in the order boto3 consults it.
CREDENTIAL_SOURCES = (
    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN)",
    "AWS_PROFILE or the default profile in ~/.aws/credentials / ~/.aws/config "
    "(AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE)",
    "AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN (EKS pod identity / IRSA)",
    "container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/FULL_URI, ECS task role)",
    "EC2 instance metadata (instance profile)",
)

ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnauthorizedException",
        "AuthorizationError",
    }
)
BAD_CREDENTIAL_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "ProvisionedThroughputExceededException",
        "PriorRequestNotComplete",
    }
)
#: Failures on the service's side that a later attempt may not meet (the 5xx of each
#: service model, plus SSM's TooManyUpdates: "concurrent updates for a resource that
#: supports one update at a time").
TRANSIENT_CODES = frozenset(
    {
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "InternalServerException",
        "InternalServiceError",
        "ServerException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "TooManyUpdates",
    }
)
QUOTA_CODES = frozenset({"LimitExceededException", "ParameterLimitExceeded"})
REJECTED_CODES = frozenset(
    {
        "InvalidParameterException",
        "ClientException",
        "ValidationException",
        "PlatformUnknownException",
        "PlatformTaskDefinitionIncompatibilityException",
        "UnsupportedFeatureException",
        "HierarchyLevelLimitExceededException",
        "ParameterMaxVersionLimitExceeded",
    }
)

#: IAM action prefixes by botocore service name, for "missing permission" messages.
IAM_PREFIX = {
    "cloudwatch": "cloudwatch",
    "ecs": "ecs",
    "eks": "eks",
    "logs": "logs",
    "ssm": "ssm",
    "sts": "sts",
}

DEFAULT_RETRY_AFTER = 2.0


def iam_action(service: str, operation: str) -> str:
    return f"{IAM_PREFIX.get(service, service)}:{operation}"


def credentials_missing() -> InfrastructureProviderUnavailable:
    sources = "; ".join(CREDENTIAL_SOURCES)
    return InfrastructureProviderUnavailable(
        f"no AWS credentials found; the standard chain looks at: {sources}",
        reason=ErrorReason.CREDENTIALS_MISSING,
        metadata={
            "env": "AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY,AWS_SESSION_TOKEN,AWS_PROFILE,"
            "AWS_WEB_IDENTITY_TOKEN_FILE,AWS_ROLE_ARN",
        },
    )


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _aws_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "")).strip()


def translate(
    exc: Exception, service: str, operation: str, *, redact: bool = False
) -> InfrastructureProviderError:
    """The provider error for a botocore failure of ``service:operation``."""
    action = iam_action(service, operation)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return credentials_missing()
    if isinstance(exc, NoRegionError):
        return InfrastructureProviderUnavailable(
            "no AWS region configured: set ALPHASWARM_AWS_REGION, AWS_REGION or AWS_DEFAULT_REGION",
            reason=ErrorReason.SETTING_INVALID,
            metadata={"env": "ALPHASWARM_AWS_REGION,AWS_REGION,AWS_DEFAULT_REGION"},
        )
    if isinstance(exc, ReadTimeoutError | ConnectTimeoutError):
        return BackendTimeoutError(f"AWS {action} timed out", metadata={"action": action})
    if isinstance(exc, ConnectionError):
        return BackendUnavailableError(
            f"cannot reach the AWS {service} endpoint for {action}",
            retry_after_seconds=DEFAULT_RETRY_AFTER,
            metadata={"action": action},
        )
    if isinstance(exc, ClientError):
        return _translate_client_error(exc, service, action, redact=redact)
    if isinstance(exc, BotoCoreError):
        return InfrastructureProviderError(
            f"AWS {action} failed ({type(exc).__name__})", metadata={"action": action}
        )
    return InfrastructureProviderError(f"AWS {action} failed", metadata={"action": action})


def _translate_client_error(
    exc: ClientError, service: str, action: str, *, redact: bool
) -> InfrastructureProviderError:
    code = error_code(exc)
    status = _status(exc)
    meta = {"action": action, "aws_error_code": code}
    detail = "" if redact else _aws_message(exc)
    suffix = f": {detail}" if detail else ""
    if code in ACCESS_DENIED_CODES:
        return BackendPermissionDenied(
            f"the controller's AWS identity is not allowed to call {action}; "
            f"grant {action} in its IAM policy",
            metadata={**meta, "missing_action": action},
        )
    if code in BAD_CREDENTIAL_CODES:
        return BackendPermissionDenied(
            f"AWS rejected the controller's credentials when calling {action} ({code}); "
            "check the credential chain's source and that the keys are current",
            reason=ErrorReason.CREDENTIALS_INVALID,
            metadata=meta,
        )
    if code in THROTTLING_CODES or status == 429:
        return BackendUnavailableError(
            f"AWS throttled {action} ({code or status}); retry later",
            retry_after_seconds=DEFAULT_RETRY_AFTER,
            reason=ErrorReason.BACKEND_THROTTLED,
            metadata=meta,
        )
    if status >= 500 or code in TRANSIENT_CODES:
        return BackendUnavailableError(
            f"AWS {service} failed with a server error on {action} ({code or status})",
            retry_after_seconds=DEFAULT_RETRY_AFTER,
            metadata=meta,
        )
    if code in QUOTA_CODES:
        return BackendQuotaExceeded(f"AWS quota reached on {action}{suffix}", metadata=meta)
    if code in REJECTED_CODES or 400 <= status < 500:
        return BackendRejectedError(f"AWS refused {action} ({code}){suffix}", metadata=meta)
    return InfrastructureProviderError(f"AWS {action} failed ({code or status})", metadata=meta)
