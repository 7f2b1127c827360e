"""Service config in SSM Parameter Store: immutable generations, committed last.

Layout, for service ``web`` in namespace ``shop``::

    /alphaswarm/shop/web/_meta/<N>               commit record of generation N;
                                                 its value names the data prefix
    /alphaswarm/shop/web/v<N>-<token>/<KEY>      one parameter per key of generation N

An apply never touches the data of a committed generation. It writes the whole
new config under a fresh prefix (``v<N+1>-<token>``, the token unique per
attempt, so racing writers never share a prefix), then commits by *creating*
``_meta/<N+1>`` with ``Overwrite=False``: SSM's only compare-and-swap (a second
create of the same name is ``ParameterAlreadyExists``). The config version is N.
So:

* a failure anywhere before the commit (throttling, a 5xx, a crash) leaves
  generation N current, complete and readable; its leftovers are swept later,
  and the same apply sent again completes;
* of two writers that read N, exactly one commits N+1; the other gets
  ABORTED when it named ``expected_version`` (its data is deleted), or re-reads
  and merges again when it did not;
* a stale ``expected_version`` is ABORTED before any write.

Readers find the highest commit record, read its prefix, then check the record
still exists: a sweep deletes a generation's record before its data, so a read
that sees its record afterwards read complete data.

Tasks never read the commit records: the task definition names the prefix of
the generation it runs (``ALPHASWARM_CONFIG_SSM_PATH``), so a rollback of the
ECS deployment is a rollback of the config too. A rollback to an earlier revision
(revisions.py) *restores* that revision's generation: its data, secrets included,
committed again as the next generation, so the config version only grows and
GetServiceConfig shows what runs. The sweep keeps the current and the previous
generation and every generation a revision still in the history names.

Limits checked before any call (PutParameter's model, botocore ssm 2014-11-06):
a value holds at most 4 KB in the Standard tier (the default, free) and 8 KB
in the Advanced tier (``ALPHASWARM_AWS_SSM_TIER=advanced`` or
``intelligent-tiering``; advanced parameters are charged per parameter and
month); SSM cannot hold an empty value, nor one with ``{{...}}`` (parameter
references are refused). Every apply writes every key (one PutParameter each,
retried when throttled): Parameter Store's default throughput is a few
PutParameter per second, so a large config costs seconds per apply.

Keys named ``secret.<NAME>`` are SecureString (KMS key ``alias/aws/ssm`` unless
``ALPHASWARM_AWS_SSM_KMS_KEY_ID`` names one). Reads return ``<secret>`` in their
place: neither GetServiceConfig nor a log line shows one. Copying an unchanged
secret into a new generation needs its value, so the controller reads it with
decryption (kms:Decrypt on that key), keeps it in memory for the copy only and
never returns or logs it.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from alphaswarm_core.providers.models import SECRET_MASK as REDACTED
from alphaswarm_core.providers.models import SECRET_PREFIX
from alphaswarm_core.providers.protocol import (
    BackendConflictError,
    ConfigMapPatch,
    ConfigVersionConflict,
    FieldViolation,
    InfrastructureProviderError,
    InvalidSpecError,
    ServiceConfig,
)

from .clients import Clients, JsonDict

log = logging.getLogger(__name__)

META = "_meta"
NO_VERSION = 0
DELETE_BATCH = 10
"""DeleteParameters takes at most 10 names (model: ParameterNameList max 10)."""
GET_BATCH = 10
"""GetParameters takes at most 10 names."""
PAGE_SIZE = 10
"""GetParametersByPath returns at most 10 per page (model: GetParametersByPathMaxResults)."""
DESCRIBE_PAGE_SIZE = 50
"""DescribeParameters returns at most 50 per page (model: MaxResults 1-50)."""
READ_ATTEMPTS = 3
APPLY_ATTEMPTS = 3

#: ALPHASWARM_AWS_SSM_TIER -> (PutParameter Tier, largest value in bytes). "4 KB" and
#: "8 KB" per PutParameter's Value documentation, taken as 4096 and 8192 bytes.
TIERS: Mapping[str, tuple[str, int]] = {
    "standard": ("Standard", 4096),
    "advanced": ("Advanced", 8192),
    "intelligent-tiering": ("Intelligent-Tiering", 8192),
}
DEFAULT_TIER = "standard"

_PREFIX = re.compile(r"v(?P<n>[1-9][0-9]{0,9})-(?P<token>[0-9a-f]{12})")
_RECORD = re.compile(r"[1-9][0-9]{0,9}")
_REFERENCE = re.compile(r"\{\{.*?\}\}", re.DOTALL)


def is_secret(key: str) -> bool:
    return key.startswith(SECRET_PREFIX)


def base_path(namespace: str, service_id: str) -> str:
    return f"/alphaswarm/{namespace}/{service_id}"


@dataclass(frozen=True, slots=True)
class Generation:
    """One committed config: its number (the config version) and where its keys are."""

    number: int
    prefix: str
    """The data prefix's last path element, ``v<N>-<token>``; "" for generation 0."""

    def path(self, base: str) -> str:
        """What tasks read (GetParametersByPath), with the trailing slash."""
        return f"{base}/{self.prefix or 'v0'}/"


EMPTY = Generation(NO_VERSION, "")


def check_values(patch: ConfigMapPatch, tier: str) -> None:
    """INVALID_ARGUMENT naming each value SSM would refuse, before any call."""
    tier_name, limit = TIERS[tier]
    violations = []
    for key, value in sorted(patch.set.items()):
        field = f"patch.set[{key!r}]"
        if value == "":
            violations.append(
                FieldViolation(field, "SSM Parameter Store cannot hold an empty value")
            )
        elif len(value.encode()) > limit:
            violations.append(
                FieldViolation(
                    field,
                    f"{len(value.encode())} bytes; an SSM {tier_name} parameter holds at most "
                    f"{limit} bytes (ALPHASWARM_AWS_SSM_TIER)",
                )
            )
        elif _REFERENCE.search(value):
            violations.append(
                FieldViolation(
                    field, "SSM refuses values containing {{...}} (parameter references)"
                )
            )
    if violations:
        raise InvalidSpecError(violations)


class SsmConfig:
    def __init__(self, clients: Clients, *, kms_key_id: str = "", tier: str = DEFAULT_TIER) -> None:
        self._clients = clients
        self._kms_key_id = kms_key_id
        self.tier = tier

    # -- reads ------------------------------------------------------------------------------

    def _by_path(self, path: str, *, decrypt: bool = False) -> Iterator[JsonDict]:
        for page in self._clients.pages(
            "ssm",
            "GetParametersByPath",
            token_field="NextToken",
            Path=path,
            Recursive=False,
            WithDecryption=decrypt,
            MaxResults=PAGE_SIZE,
        ):
            yield from page.get("Parameters", [])

    def _records(self, base: str) -> dict[int, str]:
        """Commit records: generation number -> data prefix (malformed ones ignored)."""
        records: dict[int, str] = {}
        for parameter in self._by_path(f"{base}/{META}"):
            name = str(parameter["Name"]).rsplit("/", 1)[-1]
            value = str(parameter.get("Value", ""))
            match = _PREFIX.fullmatch(value)
            if _RECORD.fullmatch(name) and match and int(match["n"]) == int(name):
                records[int(name)] = value
        return records

    def current(self, namespace: str, service_id: str) -> Generation:
        records = self._records(base_path(namespace, service_id))
        if not records:
            return EMPTY
        number = max(records)
        return Generation(number, records[number])

    def _data(self, base: str, generation: Generation) -> dict[str, str]:
        if generation is EMPTY:
            return {}
        data: dict[str, str] = {}
        for parameter in self._by_path(f"{base}/{generation.prefix}"):
            key = str(parameter["Name"]).rsplit("/", 1)[-1]
            secure = parameter.get("Type") == "SecureString"
            data[key] = REDACTED if secure else str(parameter.get("Value", ""))
        return data

    def data_at(self, namespace: str, service_id: str, path: str) -> tuple[str, dict[str, str]]:
        """The version and the data (secrets masked) of the generation a task definition
        names (``ALPHASWARM_CONFIG_SSM_PATH``); ("0", {}) for none."""
        base = base_path(namespace, service_id)
        prefix = path.removeprefix(f"{base}/").rstrip("/")
        match = _PREFIX.fullmatch(prefix)
        if match is None:
            return str(NO_VERSION), {}
        return match["n"], self._data(base, Generation(int(match["n"]), prefix))

    def restore(self, namespace: str, service_id: str, path: str) -> Generation:
        """Commit the data of the generation at ``path`` again as the next generation (the
        current one when ``path`` is current): a rollback's config."""
        base = base_path(namespace, service_id)
        prefix = path.removeprefix(f"{base}/").rstrip("/")
        match = _PREFIX.fullmatch(prefix)
        for _ in range(APPLY_ATTEMPTS):
            current = self.current(namespace, service_id)
            if current.path(base) == path:
                return current
            values: dict[str, str] = {}
            if match is not None:
                source = Generation(int(match["n"]), prefix)
                values = {
                    str(p["Name"]).rsplit("/", 1)[-1]: str(p.get("Value", ""))
                    for p in self._by_path(f"{base}/{prefix}", decrypt=True)
                }
                # Checked after the read, as read() does: a sweep deletes the record
                # before the data, so a record still there means the data read is whole.
                if not self._committed(base, source):
                    raise BackendConflictError(
                        f"config generation {source.number} of {namespace}/{service_id} is no "
                        "longer kept; it cannot be restored"
                    )
            number = current.number + 1
            proposed = Generation(number, f"v{number}-{secrets.token_hex(6)}")
            if self._write(base, proposed, values):
                return proposed
        raise BackendConflictError(
            f"the config of {namespace}/{service_id} kept changing concurrently; retry"
        )

    def _secret_values(self, base: str, generation: Generation, keys: list[str]) -> dict[str, str]:
        """Decrypted values of ``keys`` (secret keys kept by an apply), for copying only."""
        values: dict[str, str] = {}
        names = [f"{base}/{generation.prefix}/{key}" for key in keys]
        for start in range(0, len(names), GET_BATCH):
            found = self._clients.call(
                "ssm",
                "GetParameters",
                redact=True,
                Names=names[start : start + GET_BATCH],
                WithDecryption=True,
            )
            for parameter in found.get("Parameters", []):
                values[str(parameter["Name"]).rsplit("/", 1)[-1]] = str(parameter["Value"])
        missing = set(keys) - set(values)
        if missing:
            raise BackendConflictError(
                f"config generation {generation.number} lost keys while it was copied "
                f"({', '.join(sorted(missing))}); retry"
            )
        return values

    def _committed(self, base: str, generation: Generation) -> bool:
        try:
            self._clients.call("ssm", "GetParameter", Name=f"{base}/{META}/{generation.number}")
        except InfrastructureProviderError as exc:
            if exc.metadata.get("aws_error_code") == "ParameterNotFound":
                return False
            raise
        return True

    def read(self, namespace: str, service_id: str) -> ServiceConfig:
        base = base_path(namespace, service_id)
        for _ in range(READ_ATTEMPTS):
            generation = self.current(namespace, service_id)
            data = self._data(base, generation)
            if generation is EMPTY or self._committed(base, generation):
                return ServiceConfig(service_id, namespace, data, str(generation.number))
        raise BackendConflictError(
            f"the config of {namespace}/{service_id} changed on every read; retry"
        )

    # -- apply ------------------------------------------------------------------------------

    def apply(self, patch: ConfigMapPatch) -> tuple[ServiceConfig, Generation]:
        """Commit ``patch`` as a new generation; the config and the generation now current.

        Values were checked (``check_values``) by the caller before any call.
        """
        base = base_path(patch.namespace, patch.service_id)
        for _ in range(APPLY_ATTEMPTS):
            current = self.current(patch.namespace, patch.service_id)
            if patch.expected_version and patch.expected_version != str(current.number):
                raise ConfigVersionConflict(
                    patch.service_id,
                    patch.namespace,
                    expected=patch.expected_version,
                    actual=str(current.number),
                )
            shown = self._data(base, current)
            merged = patch.applied_to(shown)  # size bounds, before any write
            if merged == shown and not any(is_secret(k) for k in patch.set):
                unchanged = ServiceConfig(
                    patch.service_id, patch.namespace, shown, str(current.number)
                )
                return unchanged, current
            kept_secrets = [k for k in merged if is_secret(k) and k not in patch.set]
            values = {**merged, **self._secret_values(base, current, kept_secrets)}
            number = current.number + 1
            proposed = Generation(number, f"v{number}-{secrets.token_hex(6)}")
            if self._write(base, proposed, values):
                masked = {k: REDACTED if is_secret(k) else v for k, v in merged.items()}
                config = ServiceConfig(
                    patch.service_id, patch.namespace, masked, str(proposed.number)
                )
                return config, proposed
            if patch.expected_version:
                raise ConfigVersionConflict(
                    patch.service_id,
                    patch.namespace,
                    expected=patch.expected_version,
                    actual=str(self.current(patch.namespace, patch.service_id).number),
                )
        raise BackendConflictError(
            f"the config of {patch.namespace}/{patch.service_id} kept changing concurrently; retry"
        )

    def _write(self, base: str, generation: Generation, values: Mapping[str, str]) -> bool:
        """Write ``values`` as ``generation`` and commit it; False when another writer
        committed that number first (this attempt's data is deleted again)."""
        written: list[str] = []
        try:
            for key, value in sorted(values.items()):
                name = f"{base}/{generation.prefix}/{key}"
                self._put(name, value, secret=is_secret(key))
                written.append(name)
            if self._commit(base, generation):
                return True
        except Exception:
            self._delete_quietly(written)
            raise
        self._delete_quietly(written)
        return False

    def _commit(self, base: str, generation: Generation) -> bool:
        record = f"{base}/{META}/{generation.number}"
        try:
            self._clients.call(
                "ssm",
                "PutParameter",
                Name=record,
                Value=generation.prefix,
                Type="String",
                Tier="Standard",
                Overwrite=False,  # create-only: the commit is a compare-and-swap
            )
        except InfrastructureProviderError as exc:
            if exc.metadata.get("aws_error_code") != "ParameterAlreadyExists":
                raise
            # Ours, when an earlier attempt of this call was committed but its answer lost.
            found = self._clients.call("ssm", "GetParameter", Name=record)
            return str(found["Parameter"].get("Value", "")) == generation.prefix
        return True

    def _put(self, name: str, value: str, *, secret: bool) -> None:
        tier_name, _ = TIERS[self.tier]
        args: dict[str, Any] = {
            "Name": name,
            "Value": value,
            "Type": "SecureString" if secret else "String",
            "Overwrite": True,  # a retried write of the same value into a fresh prefix
            "Tier": tier_name,
        }
        if secret and self._kms_key_id:
            args["KeyId"] = self._kms_key_id
        self._clients.call("ssm", "PutParameter", redact=True, **args)

    # -- sweeping ---------------------------------------------------------------------------

    def sweep(
        self,
        namespace: str,
        service_id: str,
        current: Generation,
        referenced: Iterable[str] = (),
    ) -> None:
        """Delete generations before ``current``'s predecessor that no path in ``referenced``
        names (the revisions still in the history) and leftovers of applies that never
        committed (numbered up to ``current``: a higher one may be an apply still in
        flight). Commit records go first, so a reader never trusts swept data."""
        base = base_path(namespace, service_id)
        records = self._records(base)
        named = {p.removeprefix(f"{base}/").rstrip("/") for p in referenced}
        kept = {records[n] for n in (current.number, current.number - 1) if n in records}
        kept |= {prefix for prefix in records.values() if prefix in named}
        doomed_records = [
            f"{base}/{META}/{n}"
            for n in sorted(records)
            if n < current.number - 1 and records[n] not in kept
        ]
        doomed_data = []
        for name in self._names_under(base):
            head = name.removeprefix(f"{base}/").split("/", 1)[0]
            match = _PREFIX.fullmatch(head)
            if match and int(match["n"]) <= current.number and head not in kept:
                doomed_data.append(name)
        self._delete(doomed_records)
        self._delete(doomed_data)

    def delete_all(self, namespace: str, service_id: str) -> int:
        """Delete every parameter of the service (each generation, its commit record,
        leftovers of applies in flight); how many there were. Commit records go first,
        so a reader racing the delete never trusts half-deleted data."""
        base = base_path(namespace, service_id)
        names = [n for n in self._names_under(base) if n.startswith(f"{base}/")]
        records = {n for n in names if n.startswith(f"{base}/{META}/")}
        self._delete(sorted(records))
        self._delete(n for n in names if n not in records)
        return len(names)

    def _names_under(self, base: str) -> Iterator[str]:
        for page in self._clients.pages(
            "ssm",
            "DescribeParameters",
            token_field="NextToken",
            ParameterFilters=[{"Key": "Path", "Option": "Recursive", "Values": [base]}],
            MaxResults=DESCRIBE_PAGE_SIZE,
        ):
            for parameter in page.get("Parameters", []):
                yield str(parameter["Name"])

    def _delete(self, names: Iterable[str]) -> None:
        doomed = list(names)
        for start in range(0, len(doomed), DELETE_BATCH):
            self._clients.call(
                "ssm", "DeleteParameters", Names=doomed[start : start + DELETE_BATCH]
            )

    def _delete_quietly(self, names: list[str]) -> None:
        try:
            self._delete(names)
        except InfrastructureProviderError as exc:
            log.warning("could not delete an uncommitted config generation: %s", exc.message)
