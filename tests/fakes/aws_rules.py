"""What AWS refuses and moto accepts, for the calls the aws provider makes.

The front (``aws_front``) runs ``check`` on every request before moto sees it; a
rule answers with the error the real service sends. Each rule cites its source:
the botocore service model (``botocore/data/<service>/<version>/service-2.json``,
shapes and member documentation) or the service's API reference / developer
guide. moto's own checks stay in force behind these.

``rewrite`` then adjusts what moto would answer differently from the service for an
accepted request (``REWRITES``), each with its source too.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from .aws_wire import AwsError, AwsRequest

Params = Mapping[str, Any]
Rule = Callable[[Params, "RuleContext"], AwsError | None]


class RuleContext:
    """What a rule may need to know beyond the request: existing tags, a service's launch
    type (read from moto directly, never through the front)."""

    def __init__(self, ecs_client: Callable[[], Any]) -> None:
        self._ecs = ecs_client

    def tags_of(self, arn: str) -> list[dict[str, str]]:
        return list(self._ecs().list_tags_for_resource(resourceArn=arn).get("tags", []))

    def launch_type_of(self, cluster: str, service: str) -> str:
        found = self._ecs().describe_services(cluster=cluster, services=[service])["services"]
        return str(found[0].get("launchType") or "") if found else ""


def _invalid(message: str) -> AwsError:
    return AwsError(400, "InvalidParameterException", message)


def _validation(message: str) -> AwsError:
    return AwsError(400, "ValidationException", message)


# -- SSM -------------------------------------------------------------------------------------

#: PutParameter ``Value``: "Standard parameters have a value limit of 4 KB. Advanced
#: parameters have a value limit of 8 KB." (model, PutParameterRequest.Value)
SSM_VALUE_LIMIT = {"Standard": 4096, "Advanced": 8192, "Intelligent-Tiering": 8192}
#: "You can't include values wrapped in double brackets {{}} or {{ssm:parameter-name}} in a
#: parameter value." (same member's documentation)
_SSM_REFERENCE = re.compile(r"\{\{.*?\}\}", re.DOTALL)


def ssm_put_parameter(params: Params, _: RuleContext) -> AwsError | None:
    value = str(params.get("Value", ""))
    tier = str(params.get("Tier") or "Standard")  # the account default tier is Standard
    size = len(value.encode())
    if size > SSM_VALUE_LIMIT.get(tier, 4096):
        return _validation(
            f"{tier} tier parameters support a maximum parameter value of "
            f"{SSM_VALUE_LIMIT.get(tier, 4096)} characters; this one has {size}."
        )
    if _SSM_REFERENCE.search(value):
        return _validation("Parameter value can't nest another parameter. Do not use {{}}.")
    return None


def ssm_delete_parameters(params: Params, _: RuleContext) -> AwsError | None:
    # ParameterNameList: "max": 10 (model, DeleteParametersRequest.Names).
    if len(params.get("Names", [])) > 10:
        return _validation(
            "1 validation error detected: Value at 'names' failed to satisfy constraint: "
            "Member must have length less than or equal to 10"
        )
    return None


def ssm_describe_parameters(params: Params, _: RuleContext) -> AwsError | None:
    # MaxResults: "max": 50 (model, DescribeParametersRequest.MaxResults).
    if int(params.get("MaxResults", 50)) > 50:
        return _validation("MaxResults must be less than or equal to 50")
    return None


# -- ECS -------------------------------------------------------------------------------------

#: "Maximum number of tags per resource - 50 ... Tags with this prefix [aws:] do not count
#: against your tags per resource limit." (model, CreateServiceRequest.tags)
ECS_MAX_TAGS = 50


#: TagKey / TagValue: "min": 1 / 0, "max": 128 / 256, "pattern":
#: "([\p{L}\p{Z}\p{N}_.:/=+\-@]*)" (botocore ecs model shapes); "Do not use aws:,
#: AWS:, or any upper or lowercase combination of such as a prefix for either keys or
#: values as it is reserved for Amazon Web Services use" (CreateServiceRequest.tags).
_TAG_PUNCTUATION = frozenset("_.:/=+-@")


def _tag_text(text: str) -> bool:
    return all(unicodedata.category(char)[0] in "LZN" or char in _TAG_PUNCTUATION for char in text)


def _counted(tags: list[dict[str, str]]) -> int:
    return sum(1 for tag in tags if not str(tag.get("key", "")).lower().startswith("aws:"))


def _too_many_tags(tags: list[dict[str, str]]) -> AwsError | None:
    if _counted(tags) > ECS_MAX_TAGS:
        return _invalid(f"Too many tags: at most {ECS_MAX_TAGS} tags per resource are allowed.")
    return None


def _bad_tags(tags: list[dict[str, str]]) -> AwsError | None:
    """The request's own tags against the key and value rules."""
    for tag in tags:
        key, value = str(tag.get("key", "")), str(tag.get("value", ""))
        if not 1 <= len(key) <= 128 or len(value) > 256:
            return _validation(
                "1 validation error detected: Value at 'tags.member.key' failed to satisfy "
                "constraint: Member must have length between 1 and 128 (values at most 256)"
            )
        if not (_tag_text(key) and _tag_text(value)):
            return _validation(
                "1 validation error detected: Value at 'tags.member.value' failed to satisfy "
                "constraint: Member must satisfy regular expression pattern: "
                "^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$"
            )
        if key.lower().startswith("aws:") or value.lower().startswith("aws:"):
            return _invalid("Tag keys and values cannot start with the reserved prefix aws:.")
    return None


def _tags_ok(tags: list[dict[str, str]]) -> AwsError | None:
    return _bad_tags(tags) or _too_many_tags(tags)


def _public_ip_on_ec2(params: Params, launch_type: str) -> AwsError | None:
    # awsvpc tasks of the EC2 launch type get no public address (ECS developer guide,
    # "Amazon ECS task networking options for EC2"); ECS refuses the request.
    awsvpc = (params.get("networkConfiguration") or {}).get("awsvpcConfiguration") or {}
    if launch_type == "EC2" and awsvpc.get("assignPublicIp") == "ENABLED":
        return _invalid("Assign public IP is not supported for this launch type.")
    return None


def ecs_create_service(params: Params, _: RuleContext) -> AwsError | None:
    return _tags_ok(params.get("tags", [])) or _public_ip_on_ec2(
        params, str(params.get("launchType") or "FARGATE")
    )


def ecs_update_service(params: Params, context: RuleContext) -> AwsError | None:
    if "networkConfiguration" not in params:
        return None
    launch = context.launch_type_of(str(params.get("cluster", "default")), params["service"])
    return _public_ip_on_ec2(params, launch)


def ecs_tag_resource(params: Params, context: RuleContext) -> AwsError | None:
    if error := _bad_tags(params.get("tags", [])):
        return error
    existing = {t["key"]: t for t in context.tags_of(params["resourceArn"])}
    existing.update({t["key"]: t for t in params.get("tags", [])})
    return _too_many_tags(list(existing.values()))


def ecs_register_task_definition(params: Params, _: RuleContext) -> AwsError | None:
    if error := _tags_ok(params.get("tags", [])):
        return error
    fargate = "FARGATE" in (params.get("requiresCompatibilities") or [])
    for container in params.get("containerDefinitions", []):
        logging = container.get("logConfiguration") or {}
        if not fargate or logging.get("logDriver") != "awslogs":
            continue
        # Fargate pulls with the task execution role and sends awslogs output with it
        # (ECS developer guide, "Amazon ECS task execution IAM role"; the ClientException
        # below is ECS's answer).
        if not params.get("executionRoleArn"):
            return AwsError(
                400,
                "ClientException",
                "Fargate requires task definition to have execution role ARN to support log "
                "driver awslogs.",
            )
        # "awslogs-stream-prefix: Required: Yes, when using Fargate" (ECS developer guide,
        # "Using the awslogs log driver").
        if not (logging.get("options") or {}).get("awslogs-stream-prefix"):
            return AwsError(
                400,
                "ClientException",
                "awslogs-stream-prefix is required for tasks using the Fargate launch type.",
            )
    return None


def _at_most(member: str, limit: int) -> Rule:
    # DescribeServices: "You may specify up to 10 services"; DescribeTasks: "A list of up to
    # 100 task IDs"; List*: "maxResults ... can be between 1 and 100" (model documentation).
    def check(params: Params, _: RuleContext) -> AwsError | None:
        value = params.get(member)
        count = len(value) if isinstance(value, list) else int(value or 1)
        if not 1 <= count <= limit:
            return _invalid(f"{member} must hold between 1 and {limit} items, not {count}.")
        return None

    return check


# -- CloudWatch Logs ---------------------------------------------------------------------------

#: PutRetentionPolicy ``retentionInDays``: "Possible values are: 1, 3, 5, 7, 14, 30, 60, 90,
#: 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, and 3653."
#: (logs 2014-03-28 model, shape Days)
LOG_RETENTION_DAYS = frozenset({
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
    2922, 3288, 3653,
})  # fmt: skip


def _logs_invalid(message: str) -> AwsError:
    return AwsError(400, "InvalidParameterException", message)


def _constraint(member: str, value: Any, constraint: str) -> AwsError:
    # The service's validation wording, e.g. "1 validation error detected: Value
    # '-6795364578871' at 'startTime' failed to satisfy constraint: Member must have value
    # greater than or equal to 0" (as reported in elastic/integrations#10564).
    return _logs_invalid(
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
        f"constraint: Member must {constraint}"
    )


def _log_read(params: Params) -> AwsError | None:
    """What FilterLogEvents and GetLogEvents share: exactly one of logGroupName and
    logGroupIdentifier ("You must include one of these two parameters, but you can't
    include both"), limit 1-10,000 (EventsLimit), times from 0 (Timestamp "min": 0)."""
    if ("logGroupName" in params) == ("logGroupIdentifier" in params):
        return _logs_invalid("Exactly one of logGroupName or logGroupIdentifier must be given")
    if "limit" in params:
        limit = int(params["limit"])
        if limit < 1:
            return _constraint("limit", limit, "have value greater than or equal to 1")
        if limit > 10_000:
            return _constraint("limit", limit, "have value less than or equal to 10000")
    for member in ("startTime", "endTime"):
        if member in params and int(params[member]) < 0:
            return _constraint(member, params[member], "have value greater than or equal to 0")
    return None


def logs_filter_log_events(params: Params, _: RuleContext) -> AwsError | None:
    if error := _log_read(params):
        return error
    names = params.get("logStreamNames")
    if names is not None and not 1 <= len(names) <= 100:  # InputLogStreamNames: 1-100
        return _constraint(
            "logStreamNames", len(names), "have length between 1 and 100 (list members)"
        )
    # "If you specify a value for both logStreamNames and logStreamNamePrefix, the action
    # returns an InvalidParameterException error." (FilterLogEventsRequest.logStreamNames)
    if names is not None and "logStreamNamePrefix" in params:
        return _logs_invalid("logStreamNames and logStreamNamePrefix cannot both be specified")
    return None


def logs_get_log_events(params: Params, _: RuleContext) -> AwsError | None:
    return _log_read(params)


def logs_put_retention_policy(params: Params, _: RuleContext) -> AwsError | None:
    days = params.get("retentionInDays")
    if days not in LOG_RETENTION_DAYS:
        return _constraint(
            "retentionInDays", days, f"satisfy enum value set: {sorted(LOG_RETENTION_DAYS)}"
        )
    return None


def logs_describe_limit(params: Params, _: RuleContext) -> AwsError | None:
    if "limit" in params and not 1 <= int(params["limit"]) <= 50:  # DescribeLimit: 1-50
        return _constraint("limit", params["limit"], "have value between 1 and 50")
    return None


RULES: dict[str, Rule] = {
    "logs:FilterLogEvents": logs_filter_log_events,
    "logs:GetLogEvents": logs_get_log_events,
    "logs:PutRetentionPolicy": logs_put_retention_policy,
    "logs:DescribeLogGroups": logs_describe_limit,
    "logs:DescribeLogStreams": logs_describe_limit,
    "ssm:PutParameter": ssm_put_parameter,
    "ssm:DeleteParameters": ssm_delete_parameters,
    "ssm:DescribeParameters": ssm_describe_parameters,
    "ecs:CreateService": ecs_create_service,
    "ecs:UpdateService": ecs_update_service,
    "ecs:TagResource": ecs_tag_resource,
    "ecs:RegisterTaskDefinition": ecs_register_task_definition,
    "ecs:DescribeServices": _at_most("services", 10),
    "ecs:DescribeTasks": _at_most("tasks", 100),
    "ecs:ListServices": _at_most("maxResults", 100),
    "ecs:ListTasks": _at_most("maxResults", 100),
    "ecs:ListTaskDefinitions": _at_most("maxResults", 100),
}


def check(request: AwsRequest, context: RuleContext) -> AwsError | None:
    rule = RULES.get(request.name)
    return rule(request.params, context) if rule else None


def _interleaved(params: dict[str, Any]) -> dict[str, Any]:
    # FilterLogEvents' ``interleaved``: "As of June 17, 2019, this parameter is ignored and
    # the value is assumed to be true", and "The returned log events are sorted by event
    # timestamp" across streams. moto sorts across streams only when asked.
    return {**params, "interleaved": True}


def _end_exclusive(params: dict[str, Any]) -> dict[str, Any]:
    # GetLogEvents' ``endTime``: "Events with a timestamp equal to or later than this time
    # are not included"; moto includes them.
    if int(params.get("endTime") or 0) > 0:
        return {**params, "endTime": int(params["endTime"]) - 1}
    return params


REWRITES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "logs:FilterLogEvents": _interleaved,
    "logs:GetLogEvents": _end_exclusive,
}


def rewrite(request: AwsRequest) -> dict[str, Any] | None:
    """The JSON body moto must see to answer ``request`` as the service does; None when
    the request goes as it is."""
    change = REWRITES.get(request.name)
    return change(dict(request.params)) if change else None
