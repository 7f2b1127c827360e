"""Secret Manager v1 emulator (google.cloud.secretmanager.v1.SecretManagerService over gRPC).

Secrets carry an etag that changes on every update; UpdateSecret with a stale
etag is ABORTED, as the real API does. Versions are numbered from 1 and the
``latest`` alias resolves to the newest enabled version.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from google.cloud import secretmanager_v1 as sm
from google.protobuf import empty_pb2

from .gcp_common import CallLog, EmulatorError, Handler, generic_handler

_SECRET_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


def _etag() -> str:
    return f'"{uuid.uuid4().hex[:12]}"'


class SecretManagerEmulator:
    def __init__(self, log: CallLog) -> None:
        self.log = log
        self.secrets: dict[str, sm.Secret] = {}
        self.versions: dict[str, list[tuple[sm.SecretVersion, bytes]]] = {}

    def _secret(self, name: str) -> sm.Secret:
        secret = self.secrets.get(name)
        if secret is None:
            raise EmulatorError(grpc.StatusCode.NOT_FOUND, f"Secret [{name}] not found.")
        return secret

    async def create_secret(self, request: sm.CreateSecretRequest, context: object) -> sm.Secret:
        if not _SECRET_ID.match(request.secret_id):
            raise EmulatorError(grpc.StatusCode.INVALID_ARGUMENT, "invalid secret_id")
        if "replication" not in request.secret:
            raise EmulatorError(grpc.StatusCode.INVALID_ARGUMENT, "Secret.replication is required")
        name = f"{request.parent}/secrets/{request.secret_id}"
        if name in self.secrets:
            raise EmulatorError(grpc.StatusCode.ALREADY_EXISTS, f"Secret [{name}] already exists.")
        secret = sm.Secret(request.secret)
        secret.name = name
        secret.etag = _etag()
        self.secrets[name] = secret
        self.versions[name] = []
        return sm.Secret(secret)

    async def get_secret(self, request: sm.GetSecretRequest, context: object) -> sm.Secret:
        return sm.Secret(self._secret(request.name))

    async def update_secret(self, request: sm.UpdateSecretRequest, context: object) -> sm.Secret:
        current = self._secret(request.secret.name)
        if request.secret.etag and request.secret.etag != current.etag:
            raise EmulatorError(grpc.StatusCode.ABORTED, "etag does not match the current etag")
        for path in request.update_mask.paths or ["labels", "annotations"]:
            if path == "labels":
                current.labels = dict(request.secret.labels)
            elif path == "annotations":
                current.annotations = dict(request.secret.annotations)
            else:
                raise EmulatorError(grpc.StatusCode.INVALID_ARGUMENT, f"cannot update {path}")
        current.etag = _etag()
        return sm.Secret(current)

    async def delete_secret(
        self, request: sm.DeleteSecretRequest, context: object
    ) -> empty_pb2.Empty:
        self._secret(request.name)
        del self.secrets[request.name]
        del self.versions[request.name]
        return empty_pb2.Empty()

    async def add_secret_version(
        self, request: sm.AddSecretVersionRequest, context: object
    ) -> sm.SecretVersion:
        self._secret(request.parent)
        history = self.versions[request.parent]
        version = sm.SecretVersion(
            name=f"{request.parent}/versions/{len(history) + 1}",
            state=sm.SecretVersion.State.ENABLED,
            etag=_etag(),
        )
        history.append((version, bytes(request.payload.data)))
        return sm.SecretVersion(version)

    async def access_secret_version(
        self, request: sm.AccessSecretVersionRequest, context: object
    ) -> sm.AccessSecretVersionResponse:
        secret_name, _, version_id = request.name.rpartition("/versions/")
        self._secret(secret_name)
        history = self.versions[secret_name]
        if version_id == "latest":
            enabled = [v for v in history if v[0].state == sm.SecretVersion.State.ENABLED]
            if not enabled:
                raise EmulatorError(
                    grpc.StatusCode.NOT_FOUND, f"Secret [{secret_name}] has no enabled version."
                )
            version, data = enabled[-1]
        else:
            index = int(version_id) - 1 if version_id.isdigit() else -1
            if not 0 <= index < len(history):
                raise EmulatorError(
                    grpc.StatusCode.NOT_FOUND, f"Secret Version [{request.name}] not found."
                )
            version, data = history[index]
        return sm.AccessSecretVersionResponse(
            name=version.name, payload=sm.SecretPayload(data=data)
        )

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        methods: dict[str, tuple[Handler, Callable[[bytes], Any]]] = {
            "CreateSecret": (self.create_secret, sm.CreateSecretRequest.deserialize),
            "GetSecret": (self.get_secret, sm.GetSecretRequest.deserialize),
            "UpdateSecret": (self.update_secret, sm.UpdateSecretRequest.deserialize),
            "DeleteSecret": (self.delete_secret, sm.DeleteSecretRequest.deserialize),
            "AddSecretVersion": (self.add_secret_version, sm.AddSecretVersionRequest.deserialize),
            "AccessSecretVersion": (
                self.access_secret_version,
                sm.AccessSecretVersionRequest.deserialize,
            ),
        }
        return generic_handler(
            "google.cloud.secretmanager.v1.SecretManagerService", self.log, methods
        )
