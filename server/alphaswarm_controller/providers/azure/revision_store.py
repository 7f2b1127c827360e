"""ACI revision records in Azure Blob Storage: one JSON blob per service, compare-and-swap.

The blob ``<namespace>/<service>.json`` in the container of ``revision_settings`` holds
the service's ``ServiceRecord`` (``revision_record``). Every write is conditional on
what was read: ``If-Match`` the ETag of the read, or ``If-None-Match: *`` when there
was no blob (Put Blob's conditional headers, learn.microsoft.com/rest/api/
storageservices/specifying-conditional-headers-for-blob-service-operations). Two
controllers that read the same record cannot both write the next revision: the second
gets 412 (or 409 for a blob that appeared meanwhile), reads again and decides again
from what it finds (``update``), at most ``MAX_ATTEMPTS`` times.

Every call is blocking azure-storage-blob I/O: it runs on the provider's bounded
blocking runner, at most ``max_parallel`` at once, within the caller's deadline
(``remaining_timeout``), with the SDK's own retries bounded by that deadline too.
Errors become provider errors (``translate``) without the connection string or any
record content in their message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.storage.blob import BlobServiceClient, ContainerClient

from alphaswarm_core.providers.concurrency import remaining_timeout
from alphaswarm_core.providers.protocol import (
    BackendConflictError,
    BackendPermissionDenied,
    BackendRejectedError,
    BackendTimeoutError,
    BackendUnavailableError,
    InfrastructureProvider,
    InfrastructureProviderError,
    InvalidSpecError,
)

from .revision_record import RecordInvalid, ServiceRecord, from_json, to_json
from .revision_settings import RevisionSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_ATTEMPTS = 5
"""Reads and writes of one update before a lost race is the caller's error (ABORTED)."""
MAX_RECORD_BYTES = 4 * 1024 * 1024
"""A record is at most history x (spec + config): far below this; a larger blob is refused."""
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


class LostRace(Exception):
    """Another writer changed the record since it was read."""


def blob_name(namespace: str, service_id: str) -> str:
    """``<namespace>/<service>.json``; both must be DNS-1123 labels (full match)."""
    for value in (namespace, service_id):
        if not _LABEL.fullmatch(value):
            raise InvalidSpecError.single(
                "service_id", "namespace and service id must be DNS-1123 labels"
            )
    return f"{namespace}/{service_id}.json"


def translate(error: Exception, container: str) -> Exception:
    """The provider error for a Blob Storage SDK error (others pass through)."""
    where = f"the revision records (blob container {container!r})"
    if isinstance(error, ClientAuthenticationError) and error.status_code in (None, 401):
        return BackendPermissionDenied(
            f"Azure Storage refused the credential for {where}; check "
            "ALPHASWARM_AZURE_REVISIONS_ACCOUNT_URL or _CONNECTION_STRING and the identity",
            metadata={"container": container},
        )
    if isinstance(error, HttpResponseError):
        status = error.status_code or 0
        code = str(getattr(error, "error_code", "") or "")
        if status == 403:
            return BackendPermissionDenied(
                f"Azure Storage denied access to {where} ({code or 403}): the controller's "
                "identity needs the role Storage Blob Data Contributor on it",
                metadata={"container": container, "role": "Storage Blob Data Contributor"},
            )
        if status == 429 or status >= 500:
            return BackendUnavailableError(
                f"Azure Storage failed ({code or status}) on {where}",
                retry_after_seconds=1.0,
                metadata={"container": container},
            )
        return BackendRejectedError(
            f"Azure Storage refused a request on {where} ({code or status})",
            metadata={"container": container, "code": code},
        )
    if isinstance(error, ServiceRequestError | ServiceResponseError):
        return BackendUnavailableError(
            f"cannot reach Azure Storage for {where}", metadata={"container": container}
        )
    if isinstance(error, TimeoutError):
        return BackendTimeoutError(f"Azure Storage did not answer in time for {where}")
    return error


def _options() -> dict[str, Any]:
    remaining = remaining_timeout()
    return {"timeout": max(int(remaining), 1), "connection_timeout": remaining}


class RevisionStore:
    """Reads and conditional writes of the revision records of one provider."""

    def __init__(
        self,
        provider: InfrastructureProvider,
        settings: RevisionSettings,
        credential: Callable[[], TokenCredential],
        max_parallel: int,
    ) -> None:
        self._provider = provider
        self.settings = settings
        self._credential = credential
        self._limit = asyncio.Semaphore(max_parallel)
        self._service: BlobServiceClient | None = None
        self._container_ready = False

    @property
    def history(self) -> int:
        return self.settings.history

    def _container(self) -> ContainerClient:
        if self._service is None:
            # The SDK's retries, bounded: each request also carries the call's deadline.
            if self.settings.connection_string:
                self._service = BlobServiceClient.from_connection_string(
                    self.settings.connection_string, retry_total=3, retry_backoff_max=5
                )
            else:
                self._service = BlobServiceClient(
                    self.settings.account_url,
                    credential=self._credential(),
                    retry_total=3,
                    retry_backoff_max=5,
                )
        return self._service.get_container_client(self.settings.container)

    async def _call(self, fn: Callable[[], T]) -> T:
        async with self._limit:
            try:
                return await self._provider.run_blocking(fn)
            except (InfrastructureProviderError, LostRace):
                raise
            except Exception as error:
                translated = translate(error, self.settings.container)
                if translated is error:
                    raise
                raise translated from None  # the SDK's text may quote the connection

    def close(self) -> None:
        service, self._service = self._service, None
        if service is not None:
            service.close()

    # -- reads and writes ------------------------------------------------------------------

    async def read(self, namespace: str, service_id: str) -> tuple[ServiceRecord | None, str]:
        """The record and its ETag; (None, "") when there is none."""
        name = blob_name(namespace, service_id)

        def download() -> tuple[bytes, str] | None:
            blob = self._container().get_blob_client(name)
            try:
                stream = blob.download_blob(**_options())
            except ResourceNotFoundError:
                return None
            if (stream.size or 0) > MAX_RECORD_BYTES:
                raise BackendRejectedError(f"revision record {name} is larger than expected")
            return stream.readall(), str(stream.properties.etag)

        found = await self._call(download)
        if found is None:
            return None, ""
        raw, etag = found
        try:
            return from_json(raw, namespace, service_id), etag
        except RecordInvalid as exc:
            raise BackendRejectedError(
                f"the revision record {name} in container {self.settings.container!r} is not "
                f"one alphaswarm wrote ({exc}); delete it to start the history again",
                metadata={"blob": name},
            ) from None

    async def write(self, record: ServiceRecord, etag: str) -> None:
        """Write ``record`` if the blob is still at ``etag`` ("": still absent); else
        ``LostRace``. Creates the container on first use."""
        name = blob_name(record.namespace, record.service_id)
        body = to_json(record)
        condition: dict[str, Any] = (
            {"etag": etag, "match_condition": MatchConditions.IfNotModified}
            if etag
            else {"match_condition": MatchConditions.IfMissing}
        )

        def upload() -> None:
            container = self._container()
            if not self._container_ready:
                with contextlib.suppress(ResourceExistsError):
                    container.create_container(**_options())
                self._container_ready = True
            try:
                container.get_blob_client(name).upload_blob(
                    body, overwrite=True, **condition, **_options()
                )
            except (ResourceModifiedError, ResourceExistsError) as exc:
                raise LostRace(name) from exc
            except ResourceNotFoundError as exc:
                if etag:  # the blob was deleted since it was read
                    raise LostRace(name) from exc
                raise

        await self._call(upload)

    async def update(
        self,
        namespace: str,
        service_id: str,
        change: Callable[[ServiceRecord | None], ServiceRecord | None],
    ) -> ServiceRecord | None:
        """Read, apply ``change`` (None: nothing to write), write conditionally; after a
        lost race read again and decide again. ``change`` may raise (a stale
        ``expected_revision``): nothing is written then. Returns the record as written
        (or as read when nothing was)."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            current, etag = await self.read(namespace, service_id)
            updated = change(current)
            if updated is None:
                return current
            try:
                await self.write(updated, etag)
            except LostRace:
                log.info(
                    "revision record of %s/%s changed under us (attempt %d); reading it again",
                    namespace,
                    service_id,
                    attempt,
                )
                await asyncio.sleep(0.05 * attempt)
                continue
            return updated
        raise BackendConflictError(
            f"the revision record of {namespace}/{service_id} kept changing under "
            f"{MAX_ATTEMPTS} attempts to update it; try again",
            metadata={"blob": blob_name(namespace, service_id)},
        )

    async def delete(self, namespace: str, service_id: str) -> None:
        """Remove the record (gone already is fine)."""
        name = blob_name(namespace, service_id)

        def remove() -> None:
            with contextlib.suppress(ResourceNotFoundError):
                self._container().get_blob_client(name).delete_blob(**_options())

        await self._call(remove)

    async def probe(self) -> None:
        """One cheap authenticated request (health): the container's properties."""

        def properties() -> None:
            with contextlib.suppress(ResourceNotFoundError):  # created on first write
                self._container().get_container_properties(**_options())

        await self._call(properties)
