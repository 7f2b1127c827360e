"""Presigned (query-signed) AWS requests: checked as AWS checks them, then handed to moto.

A presigned URL carries its SigV4 signature in the query string
(``X-Amz-Credential``, ``X-Amz-Date``, ``X-Amz-Expires``, ``X-Amz-SignedHeaders``,
``X-Amz-Signature``; "Authenticating Requests: Using Query Parameters", AWS
Signature Version 4). The EKS bearer token is one: a presigned STS
GetCallerIdentity that aws-iam-authenticator replays. moto verifies no
signatures and routes a request without an ``Authorization`` header by its path
(to S3), so the AWS front checks the signature and the expiry here, with the
secret of the access key it names, as STS does (403 ``SignatureDoesNotMatch``,
403 ``ExpiredToken``... ), and passes moto the same request header-signed, which
moto routes to the service of the credential scope.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from botocore.auth import SigV4QueryAuth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]

from .aws_wire import AwsError, AwsRequest

SIGNATURE = "X-Amz-Signature"
#: SigV4 query signing: X-Amz-Expires is 1 s to 7 days.
MAX_EXPIRES = 7 * 24 * 3600
#: A presigned sts:GetCallerIdentity (the EKS token) is good for 15 minutes after it was
#: signed whatever its X-Amz-Expires says: aws-iam-authenticator signs with 60 only for
#: old servers' sake and checks X-Amz-Date against 15 minutes itself (pkg/token/token.go,
#: "valid for 15 minutes regardless of this parameter's value"); `aws eks get-token`
#: reports the token's expirationTimestamp 14 minutes ahead accordingly.
CALLER_IDENTITY_VALIDITY = timedelta(minutes=15)


def presigned(method: str, target: str) -> AwsRequest | None:
    """The service and operation of a query-signed request, None for any other."""
    query = dict(parse_qsl(urlsplit(target).query, keep_blank_values=True))
    credential = query.get("X-Amz-Credential", "")
    if SIGNATURE not in query or credential.count("/") != 4:
        return None
    service = credential.split("/")[3]
    return AwsRequest(service, query.get("Action", ""), "query")


def check(
    method: str,
    target: str,
    host: str,
    headers: Mapping[str, str],
    secrets: Mapping[str, str],
    *,
    now: datetime | None = None,
) -> AwsError | None:
    """Why AWS would refuse this presigned request, or None when it is good."""
    parts = urlsplit(target)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = dict(pairs)
    access_key, day, region, service, _ = query["X-Amz-Credential"].split("/")
    secret = secrets.get(access_key)
    if secret is None:
        return AwsError(403, "InvalidClientTokenId", "The security token included is invalid.")
    try:
        signed_at = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        expires = int(query["X-Amz-Expires"])
    except (KeyError, ValueError):
        return AwsError(400, "AuthorizationQueryParametersError", "X-Amz-Date or X-Amz-Expires")
    if not 1 <= expires <= MAX_EXPIRES or not query["X-Amz-Date"].startswith(day):
        return AwsError(400, "AuthorizationQueryParametersError", "X-Amz-Expires out of range")
    valid_for = timedelta(seconds=expires)
    if service == "sts" and query.get("Action") == "GetCallerIdentity":
        valid_for = CALLER_IDENTITY_VALIDITY
    if (now or datetime.now(UTC)) > signed_at + valid_for:
        return AwsError(403, "ExpiredToken", "Request has expired")
    signed = query.get("X-Amz-SignedHeaders", "host").split(";")
    lowered = {k.lower(): v for k, v in headers.items()}
    if any(h != "host" and h not in lowered for h in signed):
        return AwsError(403, "SignatureDoesNotMatch", "a signed header is missing")
    unsigned = urlunsplit(
        ("http", host, parts.path, urlencode([(k, v) for k, v in pairs if k != SIGNATURE]), "")
    )
    request = AWSRequest(
        method=method, url=unsigned, headers={h: lowered[h] for h in signed if h != "host"}
    )
    request.context["timestamp"] = query["X-Amz-Date"]
    auth = SigV4QueryAuth(Credentials(access_key, secret), service, region, expires=expires)
    expected = auth.signature(
        auth.string_to_sign(request, auth.canonical_request(request)), request
    )
    if not hmac.compare_digest(expected, query[SIGNATURE]):
        return AwsError(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    return None


def header_signed(target: str) -> tuple[str, dict[str, str]]:
    """The request as moto routes it: the query without the X-Amz-* parameters, and an
    ``Authorization`` header naming the same credential scope (moto checks no signature)."""
    parts = urlsplit(target)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = dict(pairs)
    rest = urlencode([(k, v) for k, v in pairs if not k.startswith("X-Amz-")])
    authorization = (
        f"AWS4-HMAC-SHA256 Credential={query['X-Amz-Credential']}, "
        f"SignedHeaders={query.get('X-Amz-SignedHeaders', 'host')}, "
        f"Signature={query[SIGNATURE]}"
    )
    return f"{parts.path}?{rest}", {
        "Authorization": authorization,
        "X-Amz-Date": query["X-Amz-Date"],
    }
