"""AWS requests and errors on the wire, as botocore sends and parses them.

``parse`` names the service and operation of a signed request, whatever the
protocol botocore chose from the service model's ``metadata.protocols``:

* ``json`` (ECS, SSM, CloudWatch Logs, CloudWatch): ``X-Amz-Target: <prefix>.<Operation>``
  (botocore sends CloudWatch, which also offers ``smithy-rpc-v2-cbor``, as JSON);
* ``query`` / ``ec2`` (STS, IAM, EC2): ``Action=<Operation>`` in the form body;
* ``rest-json`` (EKS): the method and path against each operation's ``requestUri``.

The service is the SigV4 credential scope's (``.../<region>/<service>/aws4_request``).

``error`` builds an error response the way that protocol carries one, so botocore
parses it into the same ``ClientError`` the real service causes. ``FAULTS`` gives,
per service, the status and code of each ``faults.Kind``, from the service's
botocore model where it has the shape and from the AWS API reference's "Common
Errors" (ThrottlingException 400, InternalFailure 500, ServiceUnavailable 503)
where it has not.
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import botocore.session  # type: ignore[import-untyped]

from .faults import Fault, Kind

#: SigV4 signing name -> botocore service name, where they differ.
SERVICE_OF_SCOPE = {"monitoring": "cloudwatch"}
_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/(?P<service>[a-z0-9-]+)/aws4_request")


@dataclass
class AwsRequest:
    service: str
    """botocore's name: ecs, ssm, logs, cloudwatch, sts, ec2, eks, iam."""
    operation: str
    protocol: str
    params: dict[str, Any] = field(default_factory=dict)
    """The JSON body of a json-protocol request ({} for the others)."""

    @property
    def name(self) -> str:
        """How faults.py names operations: ``ecs:CreateService``."""
        return f"{self.service}:{self.operation}"


@dataclass
class AwsError:
    """A refusal in the service's own words."""

    status: int
    code: str
    message: str
    sender: bool = True
    """Whose fault (the query protocols' Type: Sender or Receiver)."""


@functools.cache
def service_model(service: str) -> Any:
    return botocore.session.get_session().get_service_model(service)


@functools.cache
def _rest_routes(service: str) -> list[tuple[str, re.Pattern[str], str]]:
    model = service_model(service)
    routes = []
    for name in model.operation_names:
        http = model.operation_model(name).http
        path = http["requestUri"].split("?", 1)[0]
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path))
        routes.append((http["method"], re.compile(f"^{pattern}$"), name))
    # Longer templates first, so /clusters/{name} wins over /clusters.
    return sorted(routes, key=lambda route: -len(route[1].pattern))


def parse(method: str, target: str, headers: dict[str, str], body: bytes) -> AwsRequest | None:
    """The service and operation of a request, None when it is not a signed AWS call."""
    scope = _SCOPE.search(headers.get("authorization", ""))
    if scope is None:
        return None
    service = SERVICE_OF_SCOPE.get(scope["service"], scope["service"])
    path = urlsplit(target).path
    if "x-amz-target" in headers:
        operation = headers["x-amz-target"].rsplit(".", 1)[-1]
        return AwsRequest(service, operation, "json", json.loads(body or b"{}"))
    if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        form = parse_qs(body.decode())
        protocol = "ec2" if service == "ec2" else "query"
        return AwsRequest(service, form.get("Action", [""])[0], protocol)
    for verb, pattern, name in _rest_routes(service):
        if verb == method and pattern.match(path):
            return AwsRequest(service, name, "rest-json")
    return AwsRequest(service, "", "rest-json")


# -- errors ----------------------------------------------------------------------------------

#: (service, kind) -> (HTTP status, error code). A fault's own ``code`` replaces the code.
FAULTS: dict[tuple[str, Kind], tuple[int, str]] = {
    # ECS: ServerException is the model's 5xx; throttling and access are common errors.
    ("ecs", Kind.THROTTLED): (400, "ThrottlingException"),
    ("ecs", Kind.UNAVAILABLE): (500, "ServerException"),
    ("ecs", Kind.CONFLICT): (400, "UpdateInProgressException"),
    ("ecs", Kind.DENIED): (400, "AccessDeniedException"),
    # SSM: ThrottlingException, InternalServerError and TooManyUpdates are model shapes.
    ("ssm", Kind.THROTTLED): (400, "ThrottlingException"),
    ("ssm", Kind.UNAVAILABLE): (500, "InternalServerError"),
    ("ssm", Kind.CONFLICT): (400, "TooManyUpdates"),
    ("ssm", Kind.DENIED): (400, "AccessDeniedException"),
    # CloudWatch Logs: ThrottlingException, ServiceUnavailableException are model shapes.
    ("logs", Kind.THROTTLED): (400, "ThrottlingException"),
    ("logs", Kind.UNAVAILABLE): (503, "ServiceUnavailableException"),
    ("logs", Kind.CONFLICT): (400, "OperationAbortedException"),
    ("logs", Kind.DENIED): (400, "AccessDeniedException"),
    # CloudWatch (query-compatible): Throttling, InternalServiceError (InternalServiceFault).
    ("cloudwatch", Kind.THROTTLED): (400, "Throttling"),
    ("cloudwatch", Kind.UNAVAILABLE): (500, "InternalServiceError"),
    ("cloudwatch", Kind.DENIED): (403, "AccessDenied"),
    # STS and IAM (query): the common errors.
    ("sts", Kind.THROTTLED): (400, "Throttling"),
    ("sts", Kind.UNAVAILABLE): (503, "ServiceUnavailable"),
    ("sts", Kind.DENIED): (403, "AccessDenied"),
    ("iam", Kind.THROTTLED): (400, "Throttling"),
    ("iam", Kind.UNAVAILABLE): (503, "ServiceUnavailable"),
    # EC2: RequestLimitExceeded (EC2 API reference, "Error codes").
    ("ec2", Kind.THROTTLED): (503, "RequestLimitExceeded"),
    ("ec2", Kind.UNAVAILABLE): (503, "Unavailable"),
    ("ec2", Kind.DENIED): (403, "UnauthorizedOperation"),
    # EKS (rest-json): ThrottlingException 429, ServiceUnavailableException 503 in the model.
    ("eks", Kind.THROTTLED): (429, "ThrottlingException"),
    ("eks", Kind.UNAVAILABLE): (503, "ServiceUnavailableException"),
    ("eks", Kind.CONFLICT): (409, "ResourceInUseException"),
    ("eks", Kind.DENIED): (403, "AccessDeniedException"),
}


def fault_error(request: AwsRequest, fault: Fault) -> AwsError:
    found = FAULTS.get((request.service, fault.kind))
    if found is None:  # e.g. GONE: AWS has no such failure; a test asking for it is wrong
        return AwsError(500, "InternalFailure", f"no AWS form for a {fault.kind} fault", False)
    status, code = found
    return AwsError(status, fault.code or code, fault.message, sender=status < 500)


def error(request: AwsRequest, refusal: AwsError) -> tuple[int, dict[str, str], bytes]:
    """The HTTP status, headers and body carrying ``refusal`` in ``request``'s protocol."""
    request_id = str(uuid.uuid4())
    headers = {"x-amzn-RequestId": request_id}
    code, message = refusal.code, refusal.message
    query_compatible = "awsQueryCompatible" in service_model(request.service).metadata
    if query_compatible:  # CloudWatch: the query protocol's code rides in a header
        headers["x-amzn-query-error"] = f"{code};{'Sender' if refusal.sender else 'Receiver'}"
    if request.protocol == "json":
        headers |= {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": code}
        body = json.dumps({"__type": code, "message": message}).encode()
    elif request.protocol == "rest-json":
        headers |= {"Content-Type": "application/json", "x-amzn-ErrorType": code}
        body = json.dumps({"message": message}).encode()
    elif request.protocol == "ec2":
        headers |= {"Content-Type": "text/xml"}
        body = (
            "<Response><Errors><Error>"
            f"<Code>{code}</Code><Message>{_xml(message)}</Message>"
            f"</Error></Errors><RequestID>{request_id}</RequestID></Response>"
        ).encode()
    else:  # query
        kind = "Sender" if refusal.sender else "Receiver"
        headers |= {"Content-Type": "text/xml"}
        body = (
            f"<ErrorResponse><Error><Type>{kind}</Type><Code>{code}</Code>"
            f"<Message>{_xml(message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        ).encode()
    return refusal.status, headers, body


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
