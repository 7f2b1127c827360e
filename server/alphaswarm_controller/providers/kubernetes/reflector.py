"""List, then watch from the list's resourceVersion: client-go's reflector for one collection.

The rules are those of k8s.io/client-go/tools/cache/reflector.go:

* A (paged) list gives the items and a fresh *collection* resourceVersion; the
  watch starts there, with ``allowWatchBookmarks`` so that an idle watch still
  learns newer versions. An object's own resourceVersion is never a starting
  point: for an object untouched for a while it is older than the API server's
  watch cache and the watch is answered 410 Gone.
* 410 Gone (an HTTP 410 opening the watch, or an ERROR event with code 410)
  means the version fell out of the watch cache: list again.
* Any other failure (429/5xx, a dropped connection, a non-410 ERROR event, a
  watch that ends within a second without one event, client-go's "very short
  watch") waits with capped exponential backoff and jitter, then watches again
  from the last version seen (a 410 then turns that into a list).
* Every failure, 410 included, waits before the next request: whatever the
  server answers, the request rate stays bounded (at most one request per
  ``Backoff.initial / 2`` seconds, falling to one per ``cap / 2``). The
  backoff resets once the collection has been healthy for ``reset_after``.
* Permanent errors (RBAC, credentials, a missing namespace) end the stream at
  once; transient ones end it only after the backend failed without a break for
  ``give_up_after`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

from kubernetes.client.exceptions import ApiException

from alphaswarm_core.providers.errors import BackendUnavailableError, InfrastructureProviderError

from .errors import SERVER_RETRY_AFTER
from .transport import JsonObj
from .watch import WatchStream

log = logging.getLogger(__name__)

GONE = 410
#: client-go's reflector treats a watch that ends this fast without an event as a failure.
SHORT_WATCH_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Listed:
    """The whole collection after a (re)list."""

    items: list[JsonObj]


@dataclass(frozen=True, slots=True)
class Changed:
    """One watch event: ``kind`` is ADDED, MODIFIED or DELETED."""

    kind: str
    obj: JsonObj


Event = Listed | Changed


class Gone(Exception):
    """The watch's resourceVersion is older than the server keeps (410): list again."""


class Backoff:
    """Capped exponential backoff with jitter, reset after a healthy stretch.

    client-go's reflector uses 800 ms doubling to 30 s with jitter, reset after
    two minutes without a failure; these defaults are a little quicker to
    recover from a single blip and identical in the cap.
    """

    def __init__(
        self,
        *,
        initial: float = 0.5,
        cap: float = 30.0,
        reset_after: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.initial = initial
        self.cap = cap
        self.reset_after = reset_after
        self.clock = clock
        self.failures = 0
        self._last_failure = 0.0
        self._first_failure = 0.0

    def failed(self, retry_after: float = 0.0) -> float:
        """Record a failure; how long to wait before the next request."""
        now = self.clock()
        if self.failures and now - self._last_failure > self.reset_after:
            self.failures = 0
        if not self.failures:
            self._first_failure = now
        self.failures += 1
        self._last_failure = now
        ceiling = min(self.cap, self.initial * 2 ** (self.failures - 1))
        # Half the ceiling plus up to the other half at random: callers that failed
        # together (an API server restart) do not come back together.
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        return float(min(self.cap, max(delay, retry_after)))

    def succeeded(self) -> None:
        """Something worked: the current outage is over (the delay ramps down by time)."""
        self._first_failure = 0.0

    def outage_seconds(self) -> float:
        """How long the backend has been failing without a success in between."""
        return self.clock() - self._first_failure if self._first_failure else 0.0


class Reflector:
    """Events of one collection (a path plus selectors) until the consumer closes them.

    ``list_page(continue_token)`` returns one page of the list (errors already
    translated); ``open_watch(resource_version)`` returns the watch's
    ``WatchStream``; ``translate(exc)`` turns what the watch raised into a
    provider error.
    """

    def __init__(
        self,
        *,
        list_page: Callable[[str], Awaitable[JsonObj]],
        open_watch: Callable[[str], WatchStream],
        translate: Callable[[BaseException], InfrastructureProviderError],
        what: str,
        backoff: Backoff | None = None,
        give_up_after: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.list_page = list_page
        self.open_watch = open_watch
        self.translate = translate
        self.what = what
        self.backoff = backoff or Backoff(clock=clock)
        self.give_up_after = give_up_after
        self.clock = clock
        self.version = ""

    async def events(self) -> AsyncGenerator[Event, None]:
        """``Listed`` after each list (the first one's failure is raised as is: the caller
        learns at once that the collection cannot be read), then ``Changed`` per event."""
        synced = False
        while True:
            try:
                items = await self._list()
            except InfrastructureProviderError as error:
                if not synced:
                    raise
                await self._wait(error)
                continue
            synced = True
            self.backoff.succeeded()
            yield Listed(items)
            while True:
                try:
                    async for change in self._watch():
                        yield change
                except Gone:
                    await self._wait(None)
                    break  # list again
                except InfrastructureProviderError as error:
                    await self._wait(error)

    async def _list(self) -> list[JsonObj]:
        """Every page of the collection; sets ``version`` to the list's resourceVersion."""
        items: list[JsonObj] = []
        token = ""
        while True:
            page = await self.list_page(token)
            items.extend(page.get("items") or [])
            metadata = page.get("metadata") or {}
            token = str(metadata.get("continue") or "")
            if not token:
                self.version = str(metadata.get("resourceVersion") or "")
                return items

    async def _watch(self) -> AsyncGenerator[Changed, None]:
        """One watch request from ``version``; raises Gone or a provider error when it fails."""
        opened = self.clock()
        delivered = 0
        stream = self.open_watch(self.version)
        events = stream.events()
        try:
            async for event in events:
                kind = str(event.get("type") or "")
                obj: JsonObj = event.get("object") or {}
                if kind == "ERROR":
                    raise self._error_event(obj)
                delivered += 1
                self.backoff.succeeded()
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if version:
                    self.version = str(version)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    yield Changed(kind, obj)
        except ApiException as exc:
            if exc.status == GONE:
                raise Gone() from exc
            raise self.translate(exc) from exc
        except (InfrastructureProviderError, Gone):
            raise
        except Exception as exc:  # a dropped connection, a broken line
            raise self.translate(exc) from exc
        finally:
            await events.aclose()  # type: ignore[attr-defined]
        if not delivered and self.clock() - opened < SHORT_WATCH_SECONDS:
            raise BackendUnavailableError(
                f"the watch of {self.what} ended at once without an event (very short watch)"
            )

    def _error_event(self, status: JsonObj) -> Exception:
        if status.get("code") == GONE:
            return Gone()
        return BackendUnavailableError(
            f"the watch of {self.what} failed: {str(status.get('message') or status)[:300]}",
            metadata={"http_status": str(status.get("code") or "")},
        )

    async def _wait(self, error: InfrastructureProviderError | None) -> None:
        """Back off after a failure; re-raise ``error`` if it is permanent or lasted too long."""
        if error is not None and not isinstance(error, BackendUnavailableError):
            raise error
        # The server's own Retry-After (429/503) is honoured; the provider's generic hint
        # for callers (``retry_after_seconds``) is not a reason to wait here.
        asked = error.metadata.get(SERVER_RETRY_AFTER, "") if error is not None else ""
        delay = self.backoff.failed(float(asked or 0.0))
        if error is not None and self.backoff.outage_seconds() + delay > self.give_up_after:
            raise error
        log.info(
            "watch of %s: %s; next request in %.1fs",
            self.what,
            error.message if error is not None else "410 Gone, listing again",
            delay,
        )
        await asyncio.sleep(delay)
