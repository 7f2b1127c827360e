"""The ``aws`` provider (ECS services, or an EKS cluster via the kubernetes provider)."""

from .provider import AwsProvider

__all__ = ["AwsProvider"]
