"""Reading a Cloud Run service's revisions (the Revisions API) and the config each ran with.

History is what Cloud Run lists, not controller memory: ``ListRevisions`` of the
service ("Results are sorted by creation time, descending", revision.proto), paged,
keeping the revisions that carry a controller number (``revisions.py``) until the
newest ``history`` of them are found. Cloud Run keeps older revisions too; they are
beyond the controller's history (the controller deletes none: Cloud Run deletes a
service's revisions with the service). Reading is bounded: at most ``MAX_PAGES``
pages of ``PAGE_SIZE``.

A revision never changes what it runs or its annotations once made, so a revision that
became ready is cached by name (its number, time and facts), and so is the config data
of a Secret Manager version (versions are immutable): a settled service's status costs
one GetService.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

from google.api_core import exceptions as gexc
from google.cloud import run_v2

from alphaswarm_core.providers.concurrency import remaining_timeout

from . import retry
from .errors import api_errors
from .revisions import facts_of
from .rollout import time_of

PAGE_SIZE = 50
MAX_PAGES = 20
"""1,000 revisions: beyond that the history is cut short rather than read without end."""
CACHE_SIZE = 256
EPOCH = datetime.fromtimestamp(0, UTC)

Clients = Callable[[], run_v2.RevisionsAsyncClient]


class RevisionReader:
    """The Revisions API for one provider, with a bounded cache of settled revisions."""

    def __init__(self, client: Clients, history: int) -> None:
        self._client = client
        self.history = history
        self._settled: OrderedDict[str, run_v2.Revision] = OrderedDict()

    def remember(self, revision: run_v2.Revision) -> None:
        """Keep a revision that became ready (what it is never changes again)."""
        self._settled[revision.name] = revision
        self._settled.move_to_end(revision.name)
        while len(self._settled) > CACHE_SIZE:
            self._settled.popitem(last=False)

    def cached(self, name: str, service: run_v2.Service) -> run_v2.Revision | None:
        """The cached revision ``name`` of ``service``, unless it is older than the service
        (a deleted service's revision whose name the new one happened to reuse)."""
        revision = self._settled.get(name)
        if revision is None or time_of(revision.create_time, EPOCH) < time_of(
            service.create_time, EPOCH
        ):
            return None
        return revision

    async def get(self, name: str) -> run_v2.Revision | None:
        """Revision ``name`` as Cloud Run reports it now (None: it does not exist)."""
        if not name:
            return None
        with api_errors("run"):
            try:
                revision: run_v2.Revision = await self._client().get_revision(
                    name=name, retry=retry.policy(), timeout=remaining_timeout()
                )
            except gexc.NotFound:
                return None
        return revision

    async def number(self, name: str, service: run_v2.Service) -> int:
        """The controller number of ``service``'s revision ``name``, one that serves (0:
        none, or no such revision)."""
        known = self.cached(name, service)
        if known is None:
            known = await self.get(name)
            if known is None:
                return 0
            self.remember(known)  # only its annotations are read: they never change
        return facts_of(known.annotations).number

    async def newest(self, service: str) -> list[run_v2.Revision]:
        """The newest ``history`` numbered revisions of ``service``, newest first."""
        found: dict[int, run_v2.Revision] = {}
        token = ""
        with api_errors("run"):
            for _ in range(MAX_PAGES):
                response = await self._client().list_revisions(
                    request=run_v2.ListRevisionsRequest(
                        parent=service, page_size=PAGE_SIZE, page_token=token
                    ),
                    retry=retry.policy(),
                    timeout=remaining_timeout(),
                )
                for revision in response.revisions:
                    number = facts_of(revision.annotations).number
                    if number and number not in found:  # newest first: keep the first seen
                        found[number] = revision
                token = response.next_page_token
                if not token or len(found) >= self.history:
                    break
        ordered = sorted(found.items(), reverse=True)[: self.history]
        return [revision for _, revision in ordered]
