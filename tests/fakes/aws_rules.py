"""What AWS refuses and moto accepts, for the calls the aws provider makes.

The front (``aws_front``) runs ``check`` on every request before moto sees it; a
rule answers with the error the real service sends. Each rule cites its source:
the botocore service model (``botocore/data/<service>/<version>/service-2.json``,
shapes and member documentation) or the service's API reference / developer
guide. moto's own checks stay in force behind these.
"""

from __future__ import annotations

import re
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


def _counted(tags: list[dict[str, str]]) -> int:
    return sum(1 for tag in tags if not str(tag.get("key", "")).lower().startswith("aws:"))


def _too_many_tags(tags: list[dict[str, str]]) -> AwsError | None:
    if _counted(tags) > ECS_MAX_TAGS:
        return _invalid(f"Too many tags: at most {ECS_MAX_TAGS} tags per resource are allowed.")
    return None


def _public_ip_on_ec2(params: Params, launch_type: str) -> AwsError | None:
    # awsvpc tasks of the EC2 launch type get no public address (ECS developer guide,
    # "Amazon ECS task networking options for EC2"); ECS refuses the request.
    awsvpc = (params.get("networkConfiguration") or {}).get("awsvpcConfiguration") or {}
    if launch_type == "EC2" and awsvpc.get("assignPublicIp") == "ENABLED":
        return _invalid("Assign public IP is not supported for this launch type.")
    return None


def ecs_create_service(params: Params, _: RuleContext) -> AwsError | None:
    return _too_many_tags(params.get("tags", [])) or _public_ip_on_ec2(
        params, str(params.get("launchType") or "FARGATE")
    )


def ecs_update_service(params: Params, context: RuleContext) -> AwsError | None:
    if "networkConfiguration" not in params:
        return None
    launch = context.launch_type_of(str(params.get("cluster", "default")), params["service"])
    return _public_ip_on_ec2(params, launch)


def ecs_tag_resource(params: Params, context: RuleContext) -> AwsError | None:
    existing = {t["key"]: t for t in context.tags_of(params["resourceArn"])}
    existing.update({t["key"]: t for t in params.get("tags", [])})
    return _too_many_tags(list(existing.values()))


def ecs_register_task_definition(params: Params, _: RuleContext) -> AwsError | None:
    if error := _too_many_tags(params.get("tags", [])):
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


RULES: dict[str, Rule] = {
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
