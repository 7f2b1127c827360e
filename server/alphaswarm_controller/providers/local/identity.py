"""Which user replicas run as: never root by accident.

A server running as root starts replicas as an unprivileged user (the one
named by ``ALPHASWARM_LOCAL_RUN_AS``, else the dedicated ``alphaswarm-replica``
user if it exists, else ``nobody``), without supplementary groups. Root replicas
need ``ALPHASWARM_LOCAL_ALLOW_ROOT=true``. With ``ALPHASWARM_LOCAL_UID_RANGE``
each namespace gets a uid of its own from that range instead (gid the same
number, no passwd entry, never given to another namespace), so replicas of
different namespaces cannot signal, trace or read each other. A server running
as any other user cannot switch users: replicas run as that user, and so can do
whatever it can. Whatever cannot be arranged is a FAILED_PRECONDITION naming
the setting to fix.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
from collections.abc import Mapping
from dataclasses import dataclass

from alphaswarm_core.providers.errors import InfrastructureProviderUnavailable
from alphaswarm_core.providers.reasons import ErrorReason

from .settings import ALLOW_ROOT_ENV, DEDICATED_USER, RUN_AS_ENV, UID_RANGE_ENV, LocalSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReplicaIdentity:
    uid: int
    gid: int
    user: str
    home: str
    switch: bool
    """True when the child must change uid/gid (and drop groups) before exec."""

    @property
    def groups(self) -> frozenset[int]:
        """The groups whose permission bits apply to the replica."""
        if self.switch:
            return frozenset({self.gid})
        return frozenset({self.gid, *os.getgroups()})

    def describe(self) -> str:
        return f"{self.user} (uid {self.uid}, gid {self.gid})"


@dataclass(frozen=True, slots=True)
class IdentityPolicy:
    """Who each namespace's replicas run as: one user for all, or one uid per namespace."""

    single: ReplicaIdentity | None
    uid_range: tuple[int, int] | None = None

    @property
    def uids(self) -> range:
        """Every uid a replica of this server may have."""
        if self.uid_range is not None:
            return range(self.uid_range[0], self.uid_range[1] + 1)
        assert self.single is not None
        return range(self.single.uid, self.single.uid + 1)

    @property
    def same_user(self) -> bool:
        """Replicas share the server's uid (a server that is not root)."""
        return self.single is not None and not self.single.switch

    def for_uid(self, uid: int) -> ReplicaIdentity:
        """A namespace's own identity: no passwd entry, so its name is the number."""
        return ReplicaIdentity(uid, uid, str(uid), "/", switch=True)

    def describe(self) -> str:
        if self.uid_range is not None:
            first, last = self.uid_range
            return f"one uid per namespace from {first}-{last} ({UID_RANGE_ENV})"
        assert self.single is not None
        return self.single.describe()


def uid_taken(uid: int) -> bool:
    """A user or group of this machine has the number: not ours to give out."""
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
        except KeyError:
            continue
        return True
    return False


def policy(settings: LocalSettings, controller_env: Mapping[str, str]) -> IdentityPolicy:
    if settings.uid_range is None:
        return IdentityPolicy(resolve(settings, controller_env))
    if os.geteuid() != 0:
        raise _unavailable(
            f"{UID_RANGE_ENV} needs a server running as root (it runs as uid {os.geteuid()})",
            setting=UID_RANGE_ENV,
        )
    return IdentityPolicy(None, settings.uid_range)


def _unavailable(message: str, **metadata: str) -> InfrastructureProviderUnavailable:
    return InfrastructureProviderUnavailable(
        message, reason=ErrorReason.REPLICA_USER_UNAVAILABLE, metadata=metadata
    )


def _user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        return None


def _group(name: str) -> int | None:
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def _configured(raw: str) -> tuple[int, int, str, str]:
    """``user[:group]``: names or numeric ids; a numeric uid needs no passwd entry."""
    user, _, group = raw.partition(":")
    entry = _user(user) if user else None
    if entry is None and not user.isdigit():
        raise _unavailable(
            f"{RUN_AS_ENV}={raw!r}: no user {user!r} on this machine",
            setting=RUN_AS_ENV,
        )
    uid = entry.pw_uid if entry else int(user)
    gid: int | None = entry.pw_gid if entry else uid
    if group:
        gid = _group(group)
        if gid is None:
            raise _unavailable(
                f"{RUN_AS_ENV}={raw!r}: no group {group!r} on this machine",
                setting=RUN_AS_ENV,
            )
    assert gid is not None
    name = entry.pw_name if entry else user
    home = entry.pw_dir if entry else "/"
    return uid, gid, name, home


def resolve(settings: LocalSettings, controller_env: Mapping[str, str]) -> ReplicaIdentity:
    """The user every replica of this server runs as, or why there is none."""
    euid = os.geteuid()
    if euid == 0:
        return _as_root(settings)
    me = _user(str(euid))
    if settings.run_as:
        uid, gid, name, _ = _configured(settings.run_as)
        if (uid, gid) != (euid, os.getegid()):
            raise _unavailable(
                f"{RUN_AS_ENV}={settings.run_as!r}, but the server runs as uid {euid} and "
                "cannot switch users; unset it, or run the server as root",
                setting=RUN_AS_ENV,
            )
    name = me.pw_name if me else controller_env.get("USER", str(euid))
    home = me.pw_dir if me else controller_env.get("HOME", "/")
    return ReplicaIdentity(euid, os.getegid(), name, home, switch=False)


def _as_root(settings: LocalSettings) -> ReplicaIdentity:
    if settings.run_as:
        uid, gid, name, home = _configured(settings.run_as)
    elif settings.allow_root:
        uid, gid, name, home = 0, 0, "root", "/root"
    else:
        entry = _user(DEDICATED_USER) or _user("nobody")
        if entry is None:
            raise _unavailable(
                "the server runs as root and refuses to run replicas as root, but neither "
                f"{DEDICATED_USER!r} nor 'nobody' exists: set {RUN_AS_ENV}=user[:group] "
                f"(or {ALLOW_ROOT_ENV}=true to run replicas as root)",
                setting=RUN_AS_ENV,
            )
        uid, gid, name, home = entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir
    if (uid == 0 or gid == 0) and not settings.allow_root:
        raise _unavailable(
            f"{RUN_AS_ENV}={settings.run_as!r} would run replicas as root (uid {uid}, "
            f"gid {gid}); set {ALLOW_ROOT_ENV}=true if that is really meant",
            setting=ALLOW_ROOT_ENV,
        )
    if uid == 0:
        log.warning(
            "local provider: replicas run as root (%s=true): any caller allowed to "
            "start a deployment can do anything on this machine",
            ALLOW_ROOT_ENV,
        )
    return ReplicaIdentity(uid, gid, name, home, switch=uid != 0 or gid != 0)
