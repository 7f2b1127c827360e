"""The ``aws`` provider: ECS services (``EcsProvider``, default) or an EKS cluster
(``EksProvider``, a ``KubernetesProvider``), one class per mode.

The registry's ``aws`` entry is ``select_backend``: it picks the class from
``ALPHASWARM_AWS_MODE`` (a bad value is SettingInvalid, FAILED_PRECONDITION), so
ListProviders reports that class's capabilities (EKS mode has Kubernetes' native
watch) and every method is the mode's own, with no mode branch in any of them.

Settings (``ALPHASWARM_AWS_*``; AWS's own variables for everything boto3 reads):

==============================  ==================================================
``MODE``                        ``ecs`` (default) or ``eks``
``REGION``                      else ``AWS_REGION`` / ``AWS_DEFAULT_REGION``
``ECS_CLUSTER``                 ECS cluster name or ARN (required in ECS mode)
``LAUNCH_TYPE``                 ``FARGATE`` (default) or ``EC2``
``SUBNETS``                     comma list; awsvpc subnets for the tasks
``SECURITY_GROUPS``             comma list
``ASSIGN_PUBLIC_IP``            ``true``/``false`` (default false; Fargate only)
``EXECUTION_ROLE_ARN``          task execution role (ECR pulls, logs; required on Fargate)
``TASK_ROLE_ARN``               role the containers run as (reads their SSM config)
``PLATFORM_VERSION``            Fargate platform version
``SSM_KMS_KEY_ID``              KMS key for ``secret.*`` config keys
``SSM_TIER``                    ``standard`` (default, 4 KB values), ``advanced`` or
                                ``intelligent-tiering`` (8 KB values, charged)
``LOG_RETENTION_DAYS``          retention of the log groups it creates (default 30; 0
                                = never expire; one of CloudWatch's values)
``LOGS_POLL_INTERVAL``          a following StreamLogs' poll of CloudWatch (default 2s)
``REVISION_HISTORY``            revisions (task definition revisions) kept per service
                                (default 10, 2 to 100)
``EKS_CLUSTER``                 EKS cluster name (required in EKS mode)
==============================  ==================================================

Each of LAUNCH_TYPE..PLATFORM_VERSION can be overridden per spec by the
provider option of the same name in lower case (``subnets``, ``launch_type``...).
Credentials come from boto3's standard chain; endpoints from
``AWS_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL_<SERVICE>`` (how the tests point
it at moto). docs/providers.md lists the IAM actions each mode needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from alphaswarm_core.providers.protocol import (
    InfrastructureProvider,
    InfrastructureProviderUnavailable,
)
from alphaswarm_core.providers.reasons import ErrorReason

from .ecs_provider import EcsProvider

if TYPE_CHECKING:
    from .eks_provider import EksProvider

__all__ = ["MODES", "EcsProvider", "EksProvider", "select_backend"]

MODES = ("ecs", "eks")
INSTALL = "pip install 'alphaswarm-controller[aws]'"


def select_backend(env: Mapping[str, str]) -> type[InfrastructureProvider]:
    """The class serving ``aws`` under ``env``: ``EcsProvider`` or ``EksProvider``."""
    # Constructors do no I/O: an instance is the base class's reader of typed settings.
    mode = EcsProvider(env=env).setting_choice("MODE", MODES, "ecs")
    if mode == "ecs":
        return EcsProvider
    return _eks_provider()


def _eks_provider() -> type[InfrastructureProvider]:
    try:
        from .eks_provider import EksProvider
    except ImportError as exc:  # the kubernetes SDK (part of the aws extra) is missing
        raise InfrastructureProviderUnavailable(
            f"EKS mode needs the kubernetes package: {INSTALL}",
            reason=ErrorReason.SDK_MISSING,
            metadata={"install": INSTALL, "missing_module": str(exc.name)},
        ) from exc
    return EksProvider


def __getattr__(name: str) -> Any:
    # EksProvider imports the kubernetes SDK: only when asked for (ECS mode never does).
    if name == "EksProvider":
        return _eks_provider()
    raise AttributeError(name)
