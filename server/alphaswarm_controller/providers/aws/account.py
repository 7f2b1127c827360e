"""What both aws backend classes share: the region, the credentials, the caller's identity."""

from __future__ import annotations

from collections.abc import Mapping

from alphaswarm_core.providers.protocol import SettingInvalid

from .clients import Clients
from .errors import credentials_missing


class AwsAccount:
    """boto3 clients for one provider instance, and the checks ``health`` runs first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.clients = Clients(env)

    @property
    def region(self) -> str:
        return self.clients.region

    def check_region(self) -> None:
        if not self.clients.region:
            raise SettingInvalid(
                "ALPHASWARM_AWS_REGION", "(or AWS_REGION / AWS_DEFAULT_REGION) must be set"
            )

    def check_credentials(self) -> None:
        """Blocking: boto3 may ask the instance metadata service."""
        if self.clients.session().get_credentials() is None:
            raise credentials_missing()

    def identity(self) -> dict[str, str]:
        """Blocking: who the controller is (sts:GetCallerIdentity), for health details."""
        found = self.clients.call("sts", "GetCallerIdentity")
        return {
            "region": self.clients.region,
            "account": str(found.get("Account", "")),
            "identity": str(found.get("Arn", "")),
        }
