"""The AWS front answers faults as each service does, so botocore raises what AWS causes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from tests.fakes.faults import Kind
from tests.fakes.moto_server import EcsTestBed

CALLS: dict[str, tuple[str, Callable[[Any], object]]] = {
    "ecs": ("ListClusters", lambda c: c.list_clusters()),
    "ssm": ("DescribeParameters", lambda c: c.describe_parameters()),
    "logs": ("DescribeLogGroups", lambda c: c.describe_log_groups()),
    "cloudwatch": ("ListMetrics", lambda c: c.list_metrics()),
    "sts": ("GetCallerIdentity", lambda c: c.get_caller_identity()),
    "eks": ("ListClusters", lambda c: c.list_clusters()),
    "ec2": ("DescribeVpcs", lambda c: c.describe_vpcs()),
}

EXPECTED = {
    ("ecs", Kind.THROTTLED): ("ThrottlingException", 400),
    ("ssm", Kind.THROTTLED): ("ThrottlingException", 400),
    ("logs", Kind.THROTTLED): ("ThrottlingException", 400),
    ("cloudwatch", Kind.THROTTLED): ("Throttling", 400),
    ("sts", Kind.THROTTLED): ("Throttling", 400),
    ("eks", Kind.THROTTLED): ("ThrottlingException", 429),
    ("ec2", Kind.THROTTLED): ("RequestLimitExceeded", 503),
    ("ecs", Kind.UNAVAILABLE): ("ServerException", 500),
    ("ssm", Kind.UNAVAILABLE): ("InternalServerError", 500),
    ("logs", Kind.UNAVAILABLE): ("ServiceUnavailableException", 503),
    ("cloudwatch", Kind.UNAVAILABLE): ("InternalServiceError", 500),
    ("sts", Kind.UNAVAILABLE): ("ServiceUnavailable", 503),
    ("eks", Kind.UNAVAILABLE): ("ServiceUnavailableException", 503),
}


@pytest.mark.parametrize("case", sorted(EXPECTED, key=str), ids=lambda c: f"{c[0]}-{c[1]}")
def test_faults_arrive_in_the_services_wire_form(bed: EcsTestBed, case: tuple[str, Kind]) -> None:
    service, kind = case
    operation, call = CALLS[service]
    client = bed.aws.front_client(service)
    bed.faults.inject(f"{service}:{operation}", kind, message="Rate exceeded")
    try:
        with pytest.raises(ClientError) as caught:
            call(client)
    finally:
        bed.faults.clear()
    code, status = EXPECTED[case]
    error = caught.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (code, status)
    call(client)  # one fault, one refusal: the next request is served


def test_a_fault_can_target_one_resource(bed: EcsTestBed) -> None:
    ssm = bed.aws.front_client("ssm")
    ssm.put_parameter(Name="/front/a", Value="1", Type="String")
    ssm.put_parameter(Name="/front/b", Value="2", Type="String")
    bed.faults.inject("ssm:GetParameter", Kind.THROTTLED, times=0, match=r'"/front/b"')
    try:
        assert ssm.get_parameter(Name="/front/a")["Parameter"]["Value"] == "1"
        with pytest.raises(ClientError):
            ssm.get_parameter(Name="/front/b")
    finally:
        bed.faults.clear()
