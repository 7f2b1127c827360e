"""Service config in SSM Parameter Store, with a version for optimistic concurrency.

Layout, for service ``web`` in namespace ``shop``::

    /alphaswarm/shop/web/<KEY>            one parameter per config key
    /alphaswarm/shop/web/_meta/version    the config version (its SSM Version)

Config keys cannot contain ``/``, so the version parameter (one level deeper)
can never collide with a key, and a non-recursive GetParametersByPath returns
exactly the keys. The config version is the SSM ``Version`` of the version
parameter: every apply writes it once, first, and SSM numbers the writes, so
``PutParameter`` returning anything but ``expected + 1`` means another writer
got in between; that apply stops before touching any key (ABORTED) and the
winner's keys stand. A stale ``expected_version`` is detected before any write.

Keys named ``secret.<NAME>`` are stored as SecureString (KMS key
``alias/aws/ssm`` unless ``ALPHASWARM_AWS_SSM_KMS_KEY_ID`` names one). The
controller never decrypts them: reads return ``<secret>`` in their place, so
neither GetServiceConfig nor a log line can show a secret, and the controller's
role needs no kms:Decrypt. Tasks read their config at start from the path in
``ALPHASWARM_CONFIG_SSM_PATH`` (their task role needs ssm:GetParametersByPath
and kms:Decrypt); apply_config therefore forces a new ECS deployment.

SSM cannot hold an empty value; such a key is INVALID_ARGUMENT before any write.
"""

from __future__ import annotations

from datetime import UTC, datetime

from alphaswarm_core.providers.models import SECRET_MASK as REDACTED
from alphaswarm_core.providers.models import SECRET_PREFIX
from alphaswarm_core.providers.protocol import (
    ConfigMapPatch,
    ConfigVersionConflict,
    FieldViolation,
    InfrastructureProviderError,
    InvalidSpecError,
    ServiceConfig,
)

from .clients import Clients

VERSION_PARAMETER = "_meta/version"
NO_VERSION = "0"
DELETE_BATCH = 10
PAGE_SIZE = 10


def is_secret(key: str) -> bool:
    return key.startswith(SECRET_PREFIX)


def base_path(namespace: str, service_id: str) -> str:
    return f"/alphaswarm/{namespace}/{service_id}"


class SsmConfig:
    def __init__(self, clients: Clients, kms_key_id: str = "") -> None:
        self._clients = clients
        self._kms_key_id = kms_key_id

    def _version(self, base: str) -> str:
        try:
            found = self._clients.call("ssm", "GetParameter", Name=f"{base}/{VERSION_PARAMETER}")
        except InfrastructureProviderError as exc:
            if exc.metadata.get("aws_error_code") == "ParameterNotFound":
                return NO_VERSION
            raise
        return str(found["Parameter"]["Version"])

    def _data(self, base: str) -> dict[str, str]:
        data: dict[str, str] = {}
        for page in self._clients.pages(
            "ssm",
            "GetParametersByPath",
            token_field="NextToken",
            Path=base,
            Recursive=False,
            WithDecryption=False,
            MaxResults=PAGE_SIZE,
        ):
            for parameter in page.get("Parameters", []):
                key = str(parameter["Name"]).rsplit("/", 1)[-1]
                secure = parameter.get("Type") == "SecureString"
                data[key] = REDACTED if secure else str(parameter.get("Value", ""))
        return data

    def read(self, namespace: str, service_id: str) -> ServiceConfig:
        base = base_path(namespace, service_id)
        # Version first: a writer bumps it before its keys, so data read after it is at
        # least as new as the version returned (a retry with it is then never lost).
        version = self._version(base)
        return ServiceConfig(service_id, namespace, self._data(base), version)

    def apply(self, patch: ConfigMapPatch) -> ServiceConfig:
        base = base_path(patch.namespace, patch.service_id)
        empty = [
            FieldViolation(f"patch.set[{key!r}]", "SSM Parameter Store cannot hold an empty value")
            for key, value in patch.set.items()
            if value == ""
        ]
        if empty:
            raise InvalidSpecError(empty)
        current = self.read(patch.namespace, patch.service_id)
        if patch.expected_version and patch.expected_version != current.version:
            raise ConfigVersionConflict(
                patch.service_id,
                patch.namespace,
                expected=patch.expected_version,
                actual=current.version,
            )
        merged = patch.applied_to(current.data)  # size bounds, before any write
        put = self._clients.call(
            "ssm",
            "PutParameter",
            write=True,
            Name=f"{base}/{VERSION_PARAMETER}",
            Value=datetime.now(UTC).isoformat(),
            Type="String",
            Overwrite=True,
        )
        version = str(put["Version"])
        if patch.expected_version and int(version) != int(current.version) + 1:
            raise ConfigVersionConflict(
                patch.service_id,
                patch.namespace,
                expected=patch.expected_version,
                actual=version,
            )
        for key, value in sorted(patch.set.items()):
            if not is_secret(key) and current.data.get(key) == value:
                continue
            self._put(f"{base}/{key}", value, secret=is_secret(key))
        doomed = [f"{base}/{key}" for key in patch.remove if key in current.data]
        for start in range(0, len(doomed), DELETE_BATCH):
            self._clients.call(
                "ssm", "DeleteParameters", write=True, Names=doomed[start : start + DELETE_BATCH]
            )
        shown = {k: REDACTED if is_secret(k) else v for k, v in merged.items()}
        return ServiceConfig(patch.service_id, patch.namespace, shown, version)

    def _put(self, name: str, value: str, *, secret: bool) -> None:
        args: dict[str, object] = {
            "Name": name,
            "Value": value,
            "Type": "SecureString" if secret else "String",
            "Overwrite": True,
            # Values up to 64 KiB: Intelligent-Tiering picks Advanced only above 4 KiB.
            "Tier": "Intelligent-Tiering",
        }
        if secret and self._kms_key_id:
            args["KeyId"] = self._kms_key_id
        self._clients.call("ssm", "PutParameter", write=True, redact=True, **args)
