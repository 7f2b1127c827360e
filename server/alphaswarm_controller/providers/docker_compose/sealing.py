"""Sealing ``secret.*`` config values, so the engine stores them only as ciphertext.

The engine is this provider's only store, and everything it stores is metadata
that ``docker inspect``, ``docker volume ls --format '{{.Labels}}'``, the event
stream, monitoring agents and engine backups show. So a secret value is sealed
with AES-256-GCM under a key only the controller holds (the file named by
``ALPHASWARM_DOCKER_COMPOSE_SECRET_KEY_FILE``) before it is written into a
definition, and unsealed only in the controller, right before a replica is
created with it as an environment variable.

The associated data binds each ciphertext to its project, service and key, so a
sealed value copied into another service's definition does not unseal there. The
key's id (an HMAC of a fixed string, not the key) is stored beside the values so
that a controller holding a different key says so instead of failing obscurely.

What it protects against: anyone who can read engine metadata but not the
controller's key file (read-only socket proxies, monitoring, backups of
/var/lib/docker, a stopped service's leftovers). What it does not: a running
replica's environment is in its container's ``Config.Env`` (that is how it
reaches the process), and whoever holds the Docker socket is root on the host.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from alphaswarm_core.providers.errors import InfrastructureProviderUnavailable, SettingInvalid
from alphaswarm_core.providers.reasons import ErrorReason

KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID_INFO = b"alphaswarm docker_compose secret key id"

#: How to make a key, for messages.
KEY_HINT = "create one with: head -c 32 /dev/urandom | base64 > KEYFILE; chmod 600 KEYFILE"


@dataclass(frozen=True, slots=True)
class Sealer:
    """AES-256-GCM under one key; ``key_id`` names the key without revealing it."""

    key: bytes
    key_id: str

    @classmethod
    def from_key(cls, key: bytes) -> Sealer:
        digest = hmac.new(key, _KEY_ID_INFO, hashlib.sha256).hexdigest()
        return cls(key=key, key_id=digest[:16])

    def seal(self, project: str, service: str, name: str, value: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.key).encrypt(nonce, value.encode(), _aad(project, service, name))
        return base64.b64encode(nonce + sealed).decode()

    def unseal(self, project: str, service: str, name: str, token: str) -> str:
        try:
            raw = base64.b64decode(token, validate=True)
            plain = AESGCM(self.key).decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(project, service, name)
            )
        except (binascii.Error, ValueError, InvalidTag):
            raise SecretsUnreadable(
                f"the sealed value of {name} in {project}/{service} does not unseal with "
                "this controller's key (altered, or copied from another service); "
                "set the secret again with ApplyConfig",
                metadata={"cause": "SECRET_UNREADABLE", "key": name},
            ) from None
        return plain.decode()


class SecretsUnreadable(InfrastructureProviderUnavailable):
    """Sealed secrets this controller cannot open: the operator's key is wrong or missing."""

    reason = ErrorReason.SETTING_INVALID


def _aad(project: str, service: str, name: str) -> bytes:
    return f"alphaswarm/docker_compose/{project}/{service}/{name}".encode()


def load(path: str, setting: str) -> Sealer:
    """The sealer for the key in ``path``; ``SettingInvalid`` naming ``setting`` if unusable.

    The file holds 32 random bytes in base64, and must not be accessible to group or
    others: the key opens every secret of every service on the engine.
    """
    if not path:
        raise SettingInvalid(
            setting,
            "must name a key file to store secret.* config keys (they are sealed with "
            f"it before the engine stores them); {KEY_HINT}",
        )
    try:
        info = os.stat(path)
        with open(path, "rb") as handle:
            text = handle.read(4096)
    except OSError as exc:
        raise SettingInvalid(setting, f"cannot read {path}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingInvalid(
            setting,
            f"{path} is accessible to group or others (mode {stat.S_IMODE(info.st_mode):o}); "
            "chmod 600 it (on Kubernetes: defaultMode 0400 on the Secret volume)",
        )
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise SettingInvalid(setting, f"{path} must hold {KEY_BYTES} bytes in base64; {KEY_HINT}")
    return Sealer.from_key(key)
