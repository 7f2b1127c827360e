"""Where ACI revision records are kept: ``ALPHASWARM_AZURE_REVISIONS_*`` (read, no I/O).

* ``ALPHASWARM_AZURE_REVISIONS_ACCOUNT_URL``: the blob endpoint of the operator's storage
  account (``https://<account>.blob.core.windows.net``), reached with the provider's
  Entra ID credential (azure-identity's chain), which needs the role Storage Blob Data
  Contributor on the container (or the account);
* ``ALPHASWARM_AZURE_REVISIONS_CONNECTION_STRING``: instead of the URL, a storage
  connection string (an account key or SAS; Azurite's well-known one in the tests). It
  is a secret: never logged, never echoed in a message;
* ``ALPHASWARM_AZURE_REVISIONS_CONTAINER``: the blob container (default
  ``alphaswarm-revisions``; created on first write when missing);
* ``ALPHASWARM_AZURE_REVISION_HISTORY``: revisions kept per service (default 10, 2..100).

Neither the URL nor the connection string set: the aci mode keeps no revisions (the
registry serves ``AciProvider``, without the ``revisions`` capability).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from alphaswarm_core.providers.protocol import InfrastructureProvider, SettingInvalid

DEFAULT_CONTAINER = "alphaswarm-revisions"
DEFAULT_HISTORY, MIN_HISTORY, MAX_HISTORY = 10, 2, 100
# Container names: 3-63 of lowercase letters, digits and '-', starting and ending with a
# letter or digit, no '--' (learn.microsoft.com/rest/api/storageservices/
# naming-and-referencing-containers--blobs--and-metadata).
_CONTAINER = re.compile(r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_KEYS = ("ACCOUNT_URL", "CONNECTION_STRING")


@dataclass(frozen=True, slots=True)
class RevisionSettings:
    account_url: str
    connection_string: str
    container: str
    history: int

    def __repr__(self) -> str:  # the connection string is a secret
        return f"RevisionSettings({self.account_url or 'connection string'}, {self.container})"


def revisions_configured(provider: InfrastructureProvider) -> bool:
    """Whether the operator asked for revision records (either way of reaching them)."""
    return any(provider.setting(f"REVISIONS_{key}").strip() for key in _KEYS)


def read_revision_settings(provider: InfrastructureProvider) -> RevisionSettings:
    """The settings, or ``SettingInvalid`` naming the first bad one (never its value when
    it is the connection string)."""
    url = provider.setting("REVISIONS_ACCOUNT_URL").strip().rstrip("/")
    connection = provider.setting("REVISIONS_CONNECTION_STRING").strip()
    if url and connection:
        raise SettingInvalid(
            provider.setting_name("REVISIONS_CONNECTION_STRING"),
            f"set it or {provider.setting_name('REVISIONS_ACCOUNT_URL')}, not both",
        )
    if not url and not connection:
        raise SettingInvalid(provider.setting_name("REVISIONS_ACCOUNT_URL"), "must be set")
    if url:
        _check_url(provider, url)
    else:
        _check_connection_string(provider, connection)
    container = provider.setting("REVISIONS_CONTAINER").strip() or DEFAULT_CONTAINER
    if not _CONTAINER.fullmatch(container):
        raise SettingInvalid(
            provider.setting_name("REVISIONS_CONTAINER"),
            "must be 3-63 lowercase letters, digits and '-' (no '--', no '-' at either end)",
        )
    history = provider.setting_int(
        "REVISION_HISTORY", DEFAULT_HISTORY, minimum=MIN_HISTORY, maximum=MAX_HISTORY
    )
    return RevisionSettings(url, connection, container, history)


def _check_url(provider: InfrastructureProvider, url: str) -> None:
    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if (
        parts.scheme != "https"
        or not _HOST.fullmatch(parts.hostname or "")
        or not port_ok
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise SettingInvalid(
            provider.setting_name("REVISIONS_ACCOUNT_URL"),
            "must be the https blob endpoint of a storage account, no path "
            "(https://<account>.blob.core.windows.net)",
        )


def _check_connection_string(provider: InfrastructureProvider, connection: str) -> None:
    """The SDK's own parser decides; its message is not shown (it may quote the value)."""
    from azure.storage.blob import BlobServiceClient

    try:
        BlobServiceClient.from_connection_string(connection).close()
    except (ValueError, KeyError):
        raise SettingInvalid(
            provider.setting_name("REVISIONS_CONNECTION_STRING"),
            "is not an Azure Storage connection string with a blob endpoint",
        ) from None  # the parser's error may quote the value
