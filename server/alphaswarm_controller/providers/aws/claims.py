"""Claims: the check-and-set of a change of what an ECS service runs, kept in SSM.

ECS has no conditional update: UpdateService applies whatever it is sent, so two
controllers that both read revision C could each register a revision and deploy
it, the later UpdateService silently winning. SSM's create-only write is the one
compare-and-swap at hand (PutParameter with ``Overwrite=False``: a second create of
the same name is ``ParameterAlreadyExists``), the one the config generations use
(config.py). Every change that makes a revision first *claims* the revision it
starts from:

    /alphaswarm/<namespace>/<service>/_claims/<C>/<k>

``C`` is the revision the service is at, ``k`` counts claims of it (0 first). Of two
controllers that read C, exactly one creates ``_claims/C/<k>``; the other sees the
claim live and waits (bounded) for the service to move on, then plans again against
the new revision (a caller's stale ``expected_revision`` is then ABORTED). The holder
registers the revision, deploys it, and marks its claim ``done`` with the revision it
made, or deletes it when it made none (a refused or failed change leaves nothing
behind; the next change of C takes the same ``k`` again); a later change of the same
C (ECS's circuit breaker rolled the service back to it) takes the next ``k``.

A holder that dies leaves its claim live. Each claim carries the wall-clock time its
holder gives up by (``until``: the call's deadline, at most ``LEASE_SECONDS``); the
holder checks it before it deploys, and others take the claim over (the next ``k``,
created the same create-only way) once ``until`` plus ``CLOCK_SKEW_SECONDS`` has passed.

``done`` claims also tell a rollback by ECS apart from a change still on its way: a
service back at C while a done claim of C says revision N > C was deployed was rolled
back (revisions.py records that as a revision of its own).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass

from alphaswarm_core.providers.concurrency import remaining_timeout
from alphaswarm_core.providers.protocol import InfrastructureProviderError

from .clients import Clients

log = logging.getLogger(__name__)

CLAIMS = "_claims"
LEASE_SECONDS = 300.0
CLOCK_SKEW_SECONDS = 60.0
"""How far the clocks of two controllers may disagree (claims compare wall-clock times)."""
LIVE, DONE, ABORTED = "live", "done", "aborted"
PAGE_SIZE = 10
DESCRIBE_PAGE_SIZE = 50
DELETE_BATCH = 10


@dataclass(frozen=True, slots=True)
class ClaimRecord:
    """One claim as SSM holds it."""

    revision: int
    k: int
    token: str
    state: str
    until: float
    target: int = 0
    """The revision its holder made (``done``); 0 otherwise."""

    @property
    def busy(self) -> bool:
        """Whether its holder may still be at work (live, and not given up on)."""
        return self.state == LIVE and time.time() <= self.until + CLOCK_SKEW_SECONDS

    def value(self) -> str:
        return json.dumps(
            {"t": self.token, "s": self.state, "u": round(self.until, 3), "n": self.target},
            separators=(",", ":"),
        )

    @classmethod
    def parse(cls, revision: int, k: int, value: str) -> ClaimRecord | None:
        try:
            fields = json.loads(value)
            return cls(
                revision,
                k,
                str(fields["t"]),
                str(fields["s"]),
                float(fields["u"]),
                int(fields.get("n", 0)),
            )
        except (ValueError, KeyError, TypeError):
            return None  # not ours: ignored, and the next k is used


def claims_path(base: str, revision: int) -> str:
    return f"{base}/{CLAIMS}/{revision}"


class Claim:
    """A claim this controller holds; ``done`` or ``abort`` ends it."""

    def __init__(self, claims: RevisionClaims, name: str, record: ClaimRecord) -> None:
        self._claims = claims
        self._name = name
        self.record = record
        self.ended = False

    @property
    def revision(self) -> int:
        return self.record.revision

    def check_time(self) -> bool:
        """Whether the claim still holds (before a deployment: after ``until`` others may
        have taken over)."""
        return time.time() < self.record.until

    def done(self, target: int) -> None:
        self._end(DONE, target)

    def abort(self) -> None:
        """End the claim of a change that made no revision: the claim is deleted."""
        if self.ended:
            return
        self.ended = True
        try:
            self._claims.delete(self._name)
        except InfrastructureProviderError as exc:
            # Left live, it is taken over after its ``until``; mark it aborted at least.
            log.warning("could not delete claim %s: %s", self._name, exc.message)
            self.ended = False
            self._end(ABORTED, 0)

    def _end(self, state: str, target: int) -> None:
        if self.ended:
            return
        self.ended = True
        record = ClaimRecord(
            self.record.revision, self.record.k, self.record.token, state, self.record.until, target
        )
        try:
            self._claims.put(self._name, record.value(), overwrite=True)
        except InfrastructureProviderError as exc:
            # A live claim left behind is taken over after its ``until``; a done one only
            # serves to recognise a rollback by ECS, which is then not recorded.
            log.warning("could not mark claim %s %s: %s", self._name, state, exc.message)


class RevisionClaims:
    def __init__(self, clients: Clients) -> None:
        self._clients = clients

    def records(self, base: str, revision: int) -> list[ClaimRecord]:
        """Every claim of ``revision`` (malformed ones left out), oldest first."""
        found: list[ClaimRecord] = []
        for page in self._clients.pages(
            "ssm",
            "GetParametersByPath",
            token_field="NextToken",
            Path=claims_path(base, revision),
            Recursive=False,
            MaxResults=PAGE_SIZE,
        ):
            for parameter in page.get("Parameters", []):
                k = str(parameter["Name"]).rsplit("/", 1)[-1]
                if not k.isdigit() or len(k) > 6:
                    continue
                record = ClaimRecord.parse(revision, int(k), str(parameter.get("Value", "")))
                if record is not None:
                    found.append(record)
        return sorted(found, key=lambda record: record.k)

    def latest(self, base: str, revision: int) -> ClaimRecord | None:
        records = self.records(base, revision)
        return records[-1] if records else None

    def try_claim(self, base: str, revision: int) -> Claim | None:
        """Claim ``revision``; None while another holder may be at work on it."""
        latest = self.latest(base, revision)
        if latest is not None and latest.busy:
            return None
        k = 0 if latest is None else latest.k + 1
        until = time.time() + remaining_timeout(LEASE_SECONDS)
        record = ClaimRecord(revision, k, secrets.token_hex(8), LIVE, until)
        name = f"{claims_path(base, revision)}/{k}"
        if self.put(name, record.value(), overwrite=False):
            return Claim(self, name, record)
        return None  # another controller created this k first

    def put(self, name: str, value: str, *, overwrite: bool) -> bool:
        """Write a claim; with ``overwrite`` False, whether this call created it (a create
        retried after a lost answer finds its own value)."""
        try:
            self._clients.call(
                "ssm",
                "PutParameter",
                Name=name,
                Value=value,
                Type="String",
                Tier="Standard",
                Overwrite=overwrite,
            )
        except InfrastructureProviderError as exc:
            if overwrite or exc.metadata.get("aws_error_code") != "ParameterAlreadyExists":
                raise
            found = self._clients.call("ssm", "GetParameter", Name=name)
            return str(found["Parameter"].get("Value", "")) == value
        return True

    def delete(self, name: str) -> None:
        """Delete one claim (gone already is fine: a retried delete)."""
        try:
            self._clients.call("ssm", "DeleteParameter", Name=name)
        except InfrastructureProviderError as exc:
            if exc.metadata.get("aws_error_code") != "ParameterNotFound":
                raise

    def trim(self, base: str, below: int) -> None:
        """Delete the claims of revisions below ``below`` (left the history)."""
        doomed: list[str] = []
        for page in self._clients.pages(
            "ssm",
            "DescribeParameters",
            token_field="NextToken",
            ParameterFilters=[
                {"Key": "Path", "Option": "Recursive", "Values": [f"{base}/{CLAIMS}"]}
            ],
            MaxResults=DESCRIBE_PAGE_SIZE,
        ):
            for parameter in page.get("Parameters", []):
                name = str(parameter["Name"])
                revision = name.removeprefix(f"{base}/{CLAIMS}/").split("/", 1)[0]
                if revision.isdigit() and int(revision) < below:
                    doomed.append(name)
        for start in range(0, len(doomed), DELETE_BATCH):
            self._clients.call(
                "ssm", "DeleteParameters", Names=doomed[start : start + DELETE_BATCH]
            )
