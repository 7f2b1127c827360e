"""Service config in Secret Manager: one secret per service, its versions the config versions.

The secret ``alphaswarm-<cloud run name>`` holds the config as a JSON object; its
``alphaswarm-config-version`` label names the version that is the config ("0" before
the first write), and that number is the config ``version``.

A write adds a version, then moves the label to it with a compare-and-swap on the
secret's etag as it was read with the config: of two writers that read the same
version both add one, but only the first label update matches the etag; the second
is ConfigVersionConflict, and its version, which nothing names, is destroyed. (The
label used to be moved first, as a claim, with the newest version as the config: a
writer that read between another's claim and its version passed the same CAS, and
both wrote.) A write that fails before the label moves leaves the previous config
what is read, and retrying it completes.

The whole config is one secret version, whose payload Secret Manager caps at 64 KiB
(``SecretPayload.data``, google/cloud/secretmanager/v1/resources.proto), while the
provider-agnostic model allows 512 KiB: a config that would not fit is INVALID_ARGUMENT
before anything is written (the label is not moved, no version is added).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from google.api_core import exceptions as gexc
from google.cloud import secretmanager_v1 as sm
from google.protobuf import field_mask_pb2

from alphaswarm_core.providers.concurrency import remaining_timeout
from alphaswarm_core.providers.protocol import ConfigVersionConflict, InvalidSpecError

from . import retry
from .cloudrun import MANAGED_BY, NAMESPACE_LABEL, SERVICE_LABEL
from .errors import api_errors

VERSION_LABEL = "alphaswarm-config-version"
MAX_DELETE_ATTEMPTS = 3
MAX_PAYLOAD_BYTES = 64 * 1024


def encode(data: Mapping[str, str]) -> bytes:
    """The secret payload of ``data``; INVALID_ARGUMENT if Secret Manager would refuse it."""
    payload = json.dumps(dict(sorted(data.items()))).encode()
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InvalidSpecError.single(
            "patch.set",
            f"the config would be {len(payload)} bytes as JSON; on gcp it is one Secret "
            f"Manager version, at most {MAX_PAYLOAD_BYTES} bytes",
        )
    return payload


@dataclass(frozen=True)
class StoredConfig:
    data: dict[str, str]
    version: str
    secret: sm.Secret | None


def named_version(secret: sm.Secret) -> str:
    """The config version ``secret``'s label names; "0" before the first write."""
    return secret.labels.get(VERSION_LABEL, "0")


def secret_id(cloud_run_name: str) -> str:
    return f"alphaswarm-{cloud_run_name}"


class SecretConfigStore:
    def __init__(self, client: sm.SecretManagerServiceAsyncClient, project: str) -> None:
        self.client = client
        self.project = project

    def secret_name(self, cloud_run_name: str) -> str:
        return f"projects/{self.project}/secrets/{secret_id(cloud_run_name)}"

    async def read(self, cloud_run_name: str) -> StoredConfig:
        name = self.secret_name(cloud_run_name)
        with api_errors("secretmanager"):
            try:
                secret = await self.client.get_secret(
                    name=name, retry=retry.policy(), timeout=remaining_timeout()
                )
            except gexc.NotFound:
                return StoredConfig({}, "0", None)
        version = named_version(secret)
        if version == "0":
            return StoredConfig({}, "0", secret)
        return StoredConfig(await self.read_at(name, version), version, secret)

    async def read_at(self, secret: str, version: str) -> dict[str, str]:
        """The data version ``version`` of ``secret`` (its full name) holds: what a revision
        that pins it runs with. A version never changes, so callers may cache this."""
        with api_errors("secretmanager"):
            access = await self.client.access_secret_version(
                name=f"{secret}/versions/{version}",
                retry=retry.policy(),
                timeout=remaining_timeout(),
            )
        data = json.loads(access.payload.data.decode() or "{}")
        return {str(k): str(v) for k, v in data.items()}

    async def _ensure_secret(
        self, cloud_run_name: str, namespace: str, service_id: str
    ) -> sm.Secret:
        secret = sm.Secret(
            replication=sm.Replication(automatic=sm.Replication.Automatic()),
            labels={
                MANAGED_BY[0]: MANAGED_BY[1],
                NAMESPACE_LABEL: namespace,
                SERVICE_LABEL: service_id,
                VERSION_LABEL: "0",
            },
        )
        with api_errors("secretmanager"):
            try:
                return await self.client.create_secret(
                    parent=f"projects/{self.project}",
                    secret_id=secret_id(cloud_run_name),
                    secret=secret,
                    retry=retry.policy(),
                    timeout=remaining_timeout(),
                )
            except gexc.AlreadyExists:
                return await self.client.get_secret(
                    name=self.secret_name(cloud_run_name),
                    retry=retry.policy(),
                    timeout=remaining_timeout(),
                )

    async def delete(self, cloud_run_name: str, namespace: str, service_id: str) -> bool:
        """Delete the service's secret and its versions if it is this service's (by its
        labels); False if there was none. The delete carries the etag it was read with
        (Secret Manager answers a stale one with FAILED_PRECONDITION): read again, a few times."""
        name = self.secret_name(cloud_run_name)
        for attempt in range(1, MAX_DELETE_ATTEMPTS + 1):
            with api_errors("secretmanager"):
                try:
                    secret = await self.client.get_secret(
                        name=name, retry=retry.policy(), timeout=remaining_timeout()
                    )
                except gexc.NotFound:
                    return False
                labels = secret.labels
                if (
                    labels.get(MANAGED_BY[0]) != MANAGED_BY[1]
                    or labels.get(NAMESPACE_LABEL) != namespace
                    or labels.get(SERVICE_LABEL) != service_id
                ):
                    return False  # not ours: someone else's secret of that name stays
                try:
                    await self.client.delete_secret(
                        request=sm.DeleteSecretRequest(name=name, etag=secret.etag),
                        retry=retry.policy(),
                        timeout=remaining_timeout(),
                    )
                    return True
                except gexc.NotFound:
                    return False
                except (gexc.FailedPrecondition, gexc.Aborted):
                    if attempt == MAX_DELETE_ATTEMPTS:
                        raise
        return False  # pragma: no cover - the loop returns or raises

    async def write(
        self,
        cloud_run_name: str,
        namespace: str,
        service_id: str,
        current: StoredConfig,
        data: Mapping[str, str],
    ) -> str:
        """Make ``data`` the config in place of ``current``; return its version id, or
        raise ConfigVersionConflict if another writer replaced ``current`` first."""
        payload = encode(data)
        secret = current.secret or await self._ensure_secret(cloud_run_name, namespace, service_id)
        if named_version(secret) != current.version:
            # Only on a first write: another writer created the secret and wrote since.
            raise ConfigVersionConflict(
                service_id, namespace, expected=current.version, actual=named_version(secret)
            )
        with api_errors("secretmanager"):
            added = await self.client.add_secret_version(
                parent=secret.name,
                payload=sm.SecretPayload(data=payload),
                retry=retry.policy(),
                timeout=remaining_timeout(),
            )
            version = str(added.name.rsplit("/", 1)[1])
            commit = sm.Secret(
                name=secret.name, etag=secret.etag, labels={**secret.labels, VERSION_LABEL: version}
            )
            try:
                await self.client.update_secret(
                    secret=commit,
                    update_mask=field_mask_pb2.FieldMask(paths=["labels"]),
                    retry=retry.policy(),
                    timeout=remaining_timeout(),
                )
            except (gexc.Aborted, gexc.FailedPrecondition) as exc:
                now = await self.client.get_secret(
                    name=secret.name, retry=retry.policy(), timeout=remaining_timeout()
                )
                named = named_version(now)
                if named == version:
                    return version  # a retried update whose first attempt landed
                await self._destroy_unnamed(added.name)
                raise ConfigVersionConflict(
                    service_id, namespace, expected=current.version, actual=named
                ) from exc
        return version

    async def _destroy_unnamed(self, version_name: str) -> None:
        """Destroy a version the label never named (a lost write's), so its data is not
        kept readable. Best effort: if it fails, the version stays, read by no one."""
        with contextlib.suppress(gexc.GoogleAPICallError):  # the conflict is the answer
            await self.client.destroy_secret_version(
                name=version_name, retry=retry.policy(), timeout=remaining_timeout()
            )
