"""What the aws tests share beyond fixtures: the leftovers of a service, read from the
backend itself, and a spec whose tasks write output."""

from __future__ import annotations

import asyncio

from alphaswarm_controller.providers.aws.config import base_path
from alphaswarm_controller.providers.aws.taskdef import log_group, service_name
from alphaswarm_core.testing import Leftovers, SpecFactory, spec_factory_for
from tests.fakes.moto_server import IMAGE, MISSING_IMAGE, EcsTestBed

LOG_COMMAND = ("sh", "-c", "while true; do echo tick; sleep 1; done")
"""The emulated container writes ``<command> #<n>`` once a second (tests/fakes/awslogs_driver)."""


def log_spec_factory() -> SpecFactory:
    return spec_factory_for(image=IMAGE, command=LOG_COMMAND)


def failing_spec_factory() -> SpecFactory:
    """Specs whose tasks never start: an image the emulated registry does not have."""
    return spec_factory_for(image=MISSING_IMAGE)


def leftovers_in(bed: EcsTestBed, service_id: str, namespace: str) -> list[str]:
    """Everything of the service the emulated AWS account still holds, read from moto (and,
    for the service's ECS status, from the emulated ECS, as moto marks a deleted service
    INACTIVE at once), never through the provider or the front."""
    name = service_name(namespace, service_id)
    found: list[str] = []
    status = bed.ecs.service_status(name)
    if status not in ("", "INACTIVE"):
        found.append(f"ECS service {name} ({status})")
    ecs = bed.aws.client("ecs")
    for service in ecs.describe_services(cluster=bed.cluster, services=[name])["services"]:
        if service["status"] != "INACTIVE":
            found.append(f"moto ECS service {name} ({service['status']})")
    running = ecs.list_tasks(cluster=bed.cluster, desiredStatus="RUNNING")["taskArns"]
    for start in range(0, len(running), 100):
        for task in ecs.describe_tasks(cluster=bed.cluster, tasks=running[start : start + 100])[
            "tasks"
        ]:
            if task.get("group") == f"service:{name}":
                found.append(f"task {task['taskArn']}")
    for state in ("ACTIVE", "INACTIVE"):
        arns = ecs.list_task_definitions(familyPrefix=name, status=state)["taskDefinitionArns"]
        found.extend(f"{state} task definition {arn}" for arn in arns)
    pages = (
        bed.aws.client("ssm")
        .get_paginator("describe_parameters")
        .paginate(
            ParameterFilters=[
                {"Key": "Path", "Option": "Recursive", "Values": [base_path(namespace, service_id)]}
            ]
        )
    )
    found.extend(f"SSM parameter {p['Name']}" for page in pages for p in page["Parameters"])
    group = log_group(namespace, service_id)
    groups = bed.aws.client("logs").describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    found.extend(f"log group {g['logGroupName']}" for g in groups if g["logGroupName"] == group)
    return found


def leftovers_of(bed: EcsTestBed) -> Leftovers:
    async def still(service_id: str, namespace: str) -> list[str]:
        return await asyncio.to_thread(leftovers_in, bed, service_id, namespace)

    return still
