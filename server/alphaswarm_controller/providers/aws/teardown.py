"""Deleting a service's ECS resources: the service, then its task definition revisions.

As the ECS API reference describes them:

* DeleteService: "You can delete a service if you have no running tasks in it and the
  desired task count is zero"; ``force`` deletes one that is scaled up. The service turns
  DRAINING while its tasks stop, then INACTIVE, and "If you attempt to create a new
  service with the same name as an existing service in either ACTIVE or DRAINING status,
  you receive an error." The provider scales to zero first (the tasks stop as in any
  scale-in), deletes with ``force`` (so a concurrent scale-up cannot make the delete
  fail), and the caller waits, bounded, for INACTIVE.
* DeregisterTaskDefinition turns one revision INACTIVE ("Existing tasks and services
  that reference an INACTIVE task definition continue to run"); DeleteTaskDefinitions
  (at most 10 per request) then deletes INACTIVE revisions. ListTaskDefinitions shows
  INACTIVE revisions only "as long as an active task or service still references them",
  so a revision deregistered long ago (after a failed start) may be out of reach: it
  stays INACTIVE, which runs nothing and costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from alphaswarm_core.providers.protocol import InfrastructureProviderError

from .clients import Clients, JsonDict

log = logging.getLogger(__name__)

DELETE_BATCH = 10
"""DeleteTaskDefinitions: "You can specify up to 10 task definitions"."""
LIST_PAGE_SIZE = 100


def _code(error: InfrastructureProviderError) -> str:
    return str(error.metadata.get("aws_error_code", ""))


def delete_service(clients: Clients, cluster: str, service: JsonDict) -> None:
    """Scale ``service`` (described, ACTIVE) to zero and delete it."""
    name = str(service["serviceName"])
    try:
        if int(service.get("desiredCount", 0)):
            clients.call("ecs", "UpdateService", cluster=cluster, service=name, desiredCount=0)
        clients.call("ecs", "DeleteService", cluster=cluster, service=name, force=True)
    except InfrastructureProviderError as exc:
        # Another caller deleted it meanwhile: what this call wanted happened.
        if _code(exc) not in ("ServiceNotFoundException", "ServiceNotActiveException"):
            raise


def service_status(clients: Clients, cluster: str, name: str) -> str:
    """ACTIVE, DRAINING or INACTIVE; "" once ECS no longer knows the service."""
    found = clients.call("ecs", "DescribeServices", cluster=cluster, services=[name])
    for service in found.get("services", []):
        return str(service.get("status", ""))
    return ""


def _revisions(clients: Clients, family: str, status: str) -> Iterator[str]:
    for page in clients.pages(
        "ecs",
        "ListTaskDefinitions",
        familyPrefix=family,
        status=status,
        maxResults=LIST_PAGE_SIZE,
    ):
        for arn in page.get("taskDefinitionArns", []):
            # "The full family name" is what familyPrefix filters on; checked all the same.
            if str(arn).rsplit("/", 1)[-1].rpartition(":")[0] == family:
                yield str(arn)


def delete_revisions(clients: Clients, family: str) -> int:
    """Deregister every ACTIVE revision of ``family`` and delete them with the INACTIVE
    ones ECS still lists; the number of ACTIVE revisions there were."""
    active = list(_revisions(clients, family, "ACTIVE"))
    for arn in active:
        clients.call("ecs", "DeregisterTaskDefinition", taskDefinition=arn)
    doomed = sorted(set(active) | set(_revisions(clients, family, "INACTIVE")))
    for start in range(0, len(doomed), DELETE_BATCH):
        answer = clients.call(
            "ecs", "DeleteTaskDefinitions", taskDefinitions=doomed[start : start + DELETE_BATCH]
        )
        for failure in answer.get("failures", []):
            # Deregistered already, so an INACTIVE revision that stays is harmless.
            log.warning("ECS did not delete %s: %s", failure.get("arn"), failure.get("reason", ""))
    return len(active)
