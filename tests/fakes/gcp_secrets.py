"""Secret Manager v1 emulator (google.cloud.secretmanager.v1.SecretManagerService over gRPC).

Rules, from google/cloud/secretmanager/v1/{service,resources}.proto and the docs:

* ``secret_id``: "a maximum length of 255 characters", letters, digits, ``-`` and ``_``;
  ``replication`` is REQUIRED on create; labels follow the Google Cloud label rules
  (``gcp_common.check_labels``, quoted in ``Secret.labels``);
* UpdateSecret's ``update_mask`` is REQUIRED; an ``etag`` that does not match the stored
  one fails with FAILED_PRECONDITION (https://cloud.google.com/secret-manager/docs/etags:
  "otherwise, it fails with a FAILED_PRECONDITION error"), and every update changes the
  etag, a no-op one included;
* AddSecretVersion's payload is REQUIRED and "Must be no larger than 64KiB"
  (``SecretPayload.data``): a larger one is INVALID_ARGUMENT and adds nothing;
* versions are numbered from 1; ``latest`` is "an alias to the most recently created"
  version; accessing a disabled or destroyed version is FAILED_PRECONDITION;
* DestroySecretVersion "Sets the state of the SecretVersion to DESTROYED and irrevocably
  destroys the secret data" (service.proto); its name is ``projects/*/secrets/*/versions/*``
  and its optional ``etag`` must match the version's. The ``latest`` alias is documented
  only for Get and Access (their ``name`` fields), so Destroy takes a version number. A
  version already destroyed is refused: the real service answers "Error 400:
  SecretVersion.state is already DESTROYED." (hashicorp/terraform-provider-google#12504),
  and 400 with a state precondition is FAILED_PRECONDITION in the google.rpc.Code mapping.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from google.cloud import secretmanager_v1 as sm
from google.protobuf import empty_pb2

from .gcp_common import EmulatorError, Method, Plumbing, check_labels, generic_handler, invalid

_SECRET_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
_PARENT = re.compile(r"projects/[a-z0-9][-a-z0-9.:]*")
_SECRET_NAME = re.compile(_PARENT.pattern + r"/secrets/" + _SECRET_ID.pattern)
_VERSION_NAME = re.compile(_SECRET_NAME.pattern + r"/versions/(latest|[1-9][0-9]*)")
MAX_PAYLOAD_BYTES = 64 * 1024
UPDATABLE = frozenset({"labels", "annotations"})
_ENABLED = sm.SecretVersion.State.ENABLED
_DESTROYED = sm.SecretVersion.State.DESTROYED


def _etag() -> str:
    return f'"{uuid.uuid4().hex[:12]}"'


class SecretManagerEmulator:
    def __init__(self, plumbing: Plumbing) -> None:
        self.plumbing = plumbing
        self.secrets: dict[str, sm.Secret] = {}
        self.versions: dict[str, list[tuple[sm.SecretVersion, bytes]]] = {}

    def _secret(self, name: str) -> sm.Secret:
        if not _SECRET_NAME.fullmatch(name):
            raise invalid(f"{name!r} is not a secret name (projects/*/secrets/*)")
        secret = self.secrets.get(name)
        if secret is None:
            raise EmulatorError(grpc.StatusCode.NOT_FOUND, f"Secret [{name}] not found.")
        return secret

    def exists(self, secret: str, version: str) -> bool:
        """Whether a version a Cloud Run revision references can be read (lock held)."""
        history = self.versions.get(secret)
        if not history:
            return False
        if version == "latest":
            return True
        if not version.isdigit() or not 1 <= int(version) <= len(history):
            return False
        return history[int(version) - 1][0].state == _ENABLED

    def create_secret(self, request: sm.CreateSecretRequest) -> sm.Secret:
        if not _PARENT.fullmatch(request.parent):
            raise invalid(f"parent {request.parent!r}: projects/*")
        if not _SECRET_ID.fullmatch(request.secret_id):
            raise invalid("secret_id: at most 255 letters, digits, hyphens and underscores")
        if "replication" not in request.secret:
            raise invalid("Secret.replication is required")
        check_labels(request.secret.labels.items(), "secret.labels")
        name = f"{request.parent}/secrets/{request.secret_id}"
        if name in self.secrets:
            raise EmulatorError(grpc.StatusCode.ALREADY_EXISTS, f"Secret [{name}] already exists.")
        secret = sm.Secret(request.secret)
        secret.name = name
        secret.etag = _etag()
        self.secrets[name] = secret
        self.versions[name] = []
        return sm.Secret(secret)

    def get_secret(self, request: sm.GetSecretRequest) -> sm.Secret:
        return sm.Secret(self._secret(request.name))

    def update_secret(self, request: sm.UpdateSecretRequest) -> sm.Secret:
        current = self._secret(request.secret.name)
        paths = list(request.update_mask.paths)
        if not paths:
            raise invalid("update_mask is required")
        if request.secret.etag and request.secret.etag != current.etag:
            raise EmulatorError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"The etag provided in the request does not match the etag of Secret "
                f"[{current.name}].",
            )
        for path in paths:
            if path not in UPDATABLE:
                raise invalid(f"update_mask: {path} cannot be updated")
        if "labels" in paths:
            check_labels(request.secret.labels.items(), "secret.labels")
            current.labels = dict(request.secret.labels)
        if "annotations" in paths:
            current.annotations = dict(request.secret.annotations)
        current.etag = _etag()
        return sm.Secret(current)

    def delete_secret(self, request: sm.DeleteSecretRequest) -> empty_pb2.Empty:
        secret = self._secret(request.name)
        if request.etag and request.etag != secret.etag:
            raise EmulatorError(
                grpc.StatusCode.FAILED_PRECONDITION, "The etag does not match the secret's."
            )
        del self.secrets[request.name]
        del self.versions[request.name]
        return empty_pb2.Empty()

    def add_secret_version(self, request: sm.AddSecretVersionRequest) -> sm.SecretVersion:
        self._secret(request.parent)
        if "payload" not in request:
            raise invalid("payload is required")
        data = bytes(request.payload.data)
        if len(data) > MAX_PAYLOAD_BYTES:
            raise invalid(
                f"Secret Payload cannot be larger than {MAX_PAYLOAD_BYTES} bytes (got {len(data)})."
            )
        history = self.versions[request.parent]
        version = sm.SecretVersion(
            name=f"{request.parent}/versions/{len(history) + 1}", state=_ENABLED, etag=_etag()
        )
        history.append((version, data))
        return sm.SecretVersion(version)

    def access_secret_version(
        self, request: sm.AccessSecretVersionRequest
    ) -> sm.AccessSecretVersionResponse:
        if not _VERSION_NAME.fullmatch(request.name):
            raise invalid(f"{request.name!r} is not a secret version name")
        secret_name, _, version_id = request.name.rpartition("/versions/")
        self._secret(secret_name)
        history = self.versions[secret_name]
        index = len(history) - 1 if version_id == "latest" else int(version_id) - 1
        if not 0 <= index < len(history):
            raise EmulatorError(
                grpc.StatusCode.NOT_FOUND, f"Secret Version [{request.name}] not found."
            )
        version, data = history[index]
        if version.state != _ENABLED:
            raise EmulatorError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Secret Version [{version.name}] is in {version.state.name} state.",
            )
        return sm.AccessSecretVersionResponse(
            name=version.name, payload=sm.SecretPayload(data=data)
        )

    def destroy_secret_version(self, request: sm.DestroySecretVersionRequest) -> sm.SecretVersion:
        if not _VERSION_NAME.fullmatch(request.name) or request.name.endswith("/latest"):
            raise invalid(f"{request.name!r} is not a secret version name")
        secret_name, _, version_id = request.name.rpartition("/versions/")
        self._secret(secret_name)
        history = self.versions[secret_name]
        index = int(version_id) - 1
        if index >= len(history):
            raise EmulatorError(
                grpc.StatusCode.NOT_FOUND, f"Secret Version [{request.name}] not found."
            )
        version, _ = history[index]
        if request.etag and request.etag != version.etag:
            raise EmulatorError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"The etag provided in the request does not match the etag of Secret "
                f"Version [{version.name}].",
            )
        if version.state == _DESTROYED:
            raise EmulatorError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "SecretVersion.state is already DESTROYED.",
            )
        destroyed = sm.SecretVersion(version, state=_DESTROYED, etag=_etag())
        history[index] = (destroyed, b"")  # the data is gone for good
        return sm.SecretVersion(destroyed)

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        methods: dict[str, tuple[Method, Callable[[bytes], Any]]] = {
            "CreateSecret": (self.create_secret, sm.CreateSecretRequest.deserialize),
            "GetSecret": (self.get_secret, sm.GetSecretRequest.deserialize),
            "UpdateSecret": (self.update_secret, sm.UpdateSecretRequest.deserialize),
            "DeleteSecret": (self.delete_secret, sm.DeleteSecretRequest.deserialize),
            "AddSecretVersion": (self.add_secret_version, sm.AddSecretVersionRequest.deserialize),
            "AccessSecretVersion": (
                self.access_secret_version,
                sm.AccessSecretVersionRequest.deserialize,
            ),
            "DestroySecretVersion": (
                self.destroy_secret_version,
                sm.DestroySecretVersionRequest.deserialize,
            ),
        }
        return generic_handler(
            "google.cloud.secretmanager.v1.SecretManagerService",
            "secretmanager",
            self.plumbing,
            methods,
            conflict=grpc.StatusCode.FAILED_PRECONDITION,
        )
