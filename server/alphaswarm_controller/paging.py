"""Opaque, stable page tokens for ListDeployments.

Providers return every matching service (paging through their backend
themselves); the service sorts by (namespace, service_id) and resumes after the
last key of the previous page, so a token stays valid while services come and
go. The token also binds the query, so it cannot be replayed on another one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence

from alphaswarm_core.providers.errors import InvalidSpecError
from alphaswarm_core.providers.models import DeploymentStatus, Revision

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def _query_key(provider: str, namespace: str) -> str:
    return hashlib.sha256(f"{provider}\0{namespace}".encode()).hexdigest()[:16]


def page_size(requested: int) -> int:
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    if not 1 <= requested <= MAX_PAGE_SIZE:
        raise InvalidSpecError.single("page_size", f"must be between 0 and {MAX_PAGE_SIZE}")
    return requested


def _not_a_token(rpc: str) -> InvalidSpecError:
    return InvalidSpecError.single(
        "page_token", f"not a token from a previous {rpc} with the same query"
    )


def decode(token: str, provider: str, namespace: str, rpc: str) -> tuple[str, str] | None:
    """The key to resume after, from a token ``encode`` made for the same provider and
    namespace (``rpc`` names the call in the refusal of any other token)."""
    if not token:
        return None
    try:
        raw = json.loads(base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)))
        after = (str(raw["after"][0]), str(raw["after"][1]))
        if raw["q"] != _query_key(provider, namespace):
            raise ValueError("token of another query")
    except (ValueError, KeyError, IndexError, TypeError, binascii.Error) as exc:
        raise _not_a_token(rpc) from exc
    return after


def encode(after: tuple[str, str], provider: str, namespace: str) -> str:
    raw = json.dumps({"after": list(after), "q": _query_key(provider, namespace)})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def page(
    items: Sequence[DeploymentStatus], size: int, after: tuple[str, str] | None
) -> tuple[list[DeploymentStatus], tuple[str, str] | None]:
    """One page of ``items`` after ``after``, and the key to resume from (None at the end)."""
    ordered = sorted(items, key=lambda s: (s.namespace, s.service_id))
    if after is not None:
        ordered = [s for s in ordered if (s.namespace, s.service_id) > after]
    chunk = ordered[:size]
    more = len(ordered) > size
    return chunk, ((chunk[-1].namespace, chunk[-1].service_id) if more else None)


_REVISION = "revision"
"""The first half of a ListRevisions resume key, beside the revision number."""


def page_revisions(
    revisions: Sequence[Revision], size: int, after: tuple[str, str] | None
) -> tuple[list[Revision], tuple[str, str] | None]:
    """One page of a service's revisions, newest first, after revision ``after``."""
    ordered = sorted(revisions, key=lambda r: -r.number)
    if after is not None:
        kind, number = after
        if kind != _REVISION or not number.isdigit():
            raise _not_a_token("ListRevisions")
        ordered = [r for r in ordered if r.number < int(number)]
    chunk = ordered[:size]
    more = len(ordered) > size
    return chunk, ((_REVISION, str(chunk[-1].number)) if more else None)
