"""Which processes make up a replica, and how to end every one of them.

A replica is its leader process plus everything it starts, however it starts
it: children that call setsid(), fork twice, clear their environment or ignore
SIGTERM. Stop, scale-down, a config roll, shutdown and the start-up scan all end
the whole tree. Two ways to know the tree, picked once per provider:

* ``cgroup``: each replica runs in a cgroup v2 group of its own, under one group
  per state directory beside the server's own cgroup. The kernel keeps every
  descendant in it and a replica cannot leave it (the groups are the server's,
  not the replica user's); ``cgroup.kill`` ends them all at once, and groups a
  crashed server left behind are found and killed at the next start. Needs a
  writable cgroup2 hierarchy (root, or a delegated subtree).
* ``session`` (the fallback): the server becomes a child subreaper, so a
  descendant whose parent dies is reparented to the server rather than to
  init. A replica's processes are its session (the leader's sid), its process
  group and every descendant of those; an adopted process that left its
  replica's session can no longer be told apart from a daemon, so it is killed
  within ``sweep_interval`` ("stray"). Adopted processes are attributed to
  replicas only by what a replica cannot forge or by what it left in place:
  the replica's uid (when it differs from the server's), the sessions of this
  run's replicas, or the owner marker in the environment. Other children of the
  server (anything else in the process that forks) are never touched.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from alphaswarm_core.providers.errors import InfrastructureProviderUnavailable
from alphaswarm_core.providers.reasons import ErrorReason

from .proctable import (
    Proc,
    descendants,
    kill_all,
    killable,
    libc,
    owner_marker,
    process_table,
    session_members,
    uid_of,
)
from .settings import CGROUP_ENV

log = logging.getLogger(__name__)

_PR_SET_CHILD_SUBREAPER = 36
_SEEN_LIMIT = 10_000


# -- one replica's tree ----------------------------------------------------------------------


class ReplicaTree(ABC):
    """The processes of one replica: created before the spawn, released once empty."""

    leader: int | None = None
    inline = False
    """Cheap enough to ask on the event loop (cgroup files); else run it on a thread."""

    def child_hook(self) -> Callable[[], None]:
        """Runs in the forked child before anything else (before privileges are dropped)."""
        return lambda: None

    def attach(self, pid: int) -> None:
        self.leader = pid

    def spawned(self) -> None:  # noqa: B027 - most trees hold nothing for the spawn
        """The spawn is over (succeeded or failed): parent-side resources can go."""

    @abstractmethod
    def members(self) -> set[int]: ...

    def signal(self, sig: int) -> int:
        return kill_all(self.members(), sig)

    @abstractmethod
    def kill(self) -> None:
        """SIGKILL every process of the tree now; does not wait."""

    def gone(self) -> bool:
        """No process of the tree is left (zombies count as gone)."""
        return not self.members()

    @abstractmethod
    def release(self) -> None: ...


class CgroupTree(ReplicaTree):
    inline = True

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self._procs_fd: int | None = None
        if create:
            path.mkdir(mode=0o755)
            # Opened now, by the server: the child joins before it drops its privileges.
            self._procs_fd = os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)

    def child_hook(self) -> Callable[[], None]:
        fd = self._procs_fd
        assert fd is not None
        write = os.write

        def join() -> None:
            write(fd, b"0")  # 0 = the writing process

        return join

    def spawned(self) -> None:
        if self._procs_fd is not None:
            os.close(self._procs_fd)
            self._procs_fd = None

    def members(self) -> set[int]:
        try:
            return {int(pid) for pid in (self.path / "cgroup.procs").read_text().split()}
        except FileNotFoundError:
            return set()

    def kill(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / "cgroup.kill").write_text("1")

    def gone(self) -> bool:
        try:
            return "populated 0" in (self.path / "cgroup.events").read_text()
        except FileNotFoundError:
            return True

    def __repr__(self) -> str:
        return f"cgroup {self.path}"

    def release(self) -> None:
        self.spawned()
        try:
            self.path.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:  # still populated: the next start-up scan removes it
            log.warning("cannot remove cgroup %s yet: %s", self.path, exc)


class SessionTree(ReplicaTree):
    def __init__(self, containment: Containment) -> None:
        self._containment = containment

    def __repr__(self) -> str:
        return f"session {self.leader}"

    def attach(self, pid: int) -> None:
        super().attach(pid)
        self._containment.register(pid)

    def members(self) -> set[int]:
        if self.leader is None:
            return set()
        return session_members(process_table(), [self.leader])

    def kill(self) -> None:
        if self.leader is None:
            return
        table = process_table()
        kill_all(session_members(table, [self.leader]), signal.SIGKILL)
        self._containment.sweep(table)

    def gone(self) -> bool:
        """Also kills strays: a process that left the session while its parent died is gone
        only once the sweep found none left."""
        if self.leader is None:
            return True
        table = process_table()
        return not session_members(table, [self.leader]) and not self._containment.sweep(table)

    def release(self) -> None:
        if self.leader is not None:
            self._containment.unregister(self.leader)


# -- the provider's view ---------------------------------------------------------------------


def _uid_in(pid: int, uids: range) -> bool:
    uid = uid_of(pid)
    return uid is not None and uid in uids


class _Leaders:
    """Replica leaders this process spawned, across every provider instance in it.

    Shared, so that one provider's sweep never takes another's replicas (children
    of the same process) for strays.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[int] = set()
        self._seen: dict[int, None] = {}
        """Leaders of this run, oldest first (bounded): their sessions are replicas' as long as
        they last. The kernel reuses no pid still naming a session or group, and a leader is
        unregistered once it exited (reaped, or SIGKILLed by a spawn that failed midway): a
        process that itself leads session (or group) P, P not live, is a new one whose pid
        came round again (_adopted)."""
        self._spawning = 0

    @contextlib.contextmanager
    def spawning(self) -> Iterator[None]:
        """While a spawn is in flight its child is unknown: sweeps leave children alone."""
        with self._lock:
            self._spawning += 1
        try:
            yield
        finally:
            with self._lock:
                self._spawning -= 1

    def register(self, leader: int) -> None:
        with self._lock:
            self._live.add(leader)
            self._seen[leader] = None
            if len(self._seen) > _SEEN_LIMIT:
                del self._seen[next(iter(self._seen))]

    def unregister(self, leader: int) -> None:
        with self._lock:
            self._live.discard(leader)

    def any_seen(self) -> bool:
        return bool(self._seen)

    def snapshot(self) -> tuple[bool, set[int], set[int]]:
        """(a spawn is in flight, live leaders, every leader seen)."""
        with self._lock:
            return self._spawning > 0, set(self._live), set(self._seen)


_LEADERS = _Leaders()


def _cgroup2_mount() -> Path | None:
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields = line.split()
            dash = fields.index("-")
            if fields[dash + 1] == "cgroup2":
                return Path(fields[4])
    return None


def _own_cgroup() -> str | None:
    with open("/proc/self/cgroup") as cgroup:
        for line in cgroup:
            if line.startswith("0::"):
                return line[3:].strip()
    return None


def replica_cgroup_root(owner: str) -> Path | None:
    """Where the groups of this state directory's replicas go: beside this process's cgroup."""
    mount, own = _cgroup2_mount(), _own_cgroup()
    if mount is None or own is None:
        return None
    tag = hashlib.sha256(owner.encode()).hexdigest()[:12]
    return mount / own.lstrip("/") / f"alphaswarm-local-{tag}"


def _cgroup_base(owner: str) -> tuple[Path | None, str]:
    """The parent group of this state directory's replicas, or why there is none."""
    try:
        base = replica_cgroup_root(owner)
    except OSError as exc:
        return None, f"cannot read /proc: {exc}"
    if base is None:
        return None, "no cgroup2 hierarchy is mounted"
    try:
        base.mkdir(mode=0o755, exist_ok=True)
        if not (base / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                base.rmdir()
            return None, "the kernel has no cgroup.kill (Linux 5.14+)"
        probe = base / f"probe-{os.getpid()}"
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        return None, f"{base} is not writable ({exc.strerror or exc})"
    return base, ""


class Containment:
    """How this provider keeps track of replica processes (see the module docstring)."""

    def __init__(
        self, base: Path | None, owner: str, replica_uids: range, *, why_not_cgroup: str = ""
    ) -> None:
        self.base = base
        self.owner = owner
        self.replica_uids = replica_uids
        self.why_not_cgroup = why_not_cgroup
        self._serial = 0
        self._serial_lock = threading.Lock()

    @property
    def mode(self) -> str:
        return "cgroup" if self.base is not None else "session"

    @property
    def active(self) -> bool:
        """Whether a sweep can find anything: session mode, after the first spawn."""
        return self.base is None and _LEADERS.any_seen()

    @classmethod
    def create(cls, setting: str, owner: str, replica_uids: range) -> Containment:
        """Blocking. ``setting`` is ALPHASWARM_LOCAL_CGROUP: auto, on or off."""
        why = f"{CGROUP_ENV}=off"
        base = None
        if setting != "off":
            base, why = _cgroup_base(owner)
            if base is None and setting == "on":
                raise InfrastructureProviderUnavailable(
                    f"{CGROUP_ENV}=on, but no cgroup per replica can be made: {why}",
                    reason=ErrorReason.CGROUP_UNAVAILABLE,
                    metadata={"setting": CGROUP_ENV},
                )
        containment = cls(base, owner, replica_uids, why_not_cgroup=why)
        if base is None:
            containment._become_subreaper()
        return containment

    def _become_subreaper(self) -> None:
        if libc().prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            log.warning("cannot become a child subreaper: %s", os.strerror(errno))

    def new_tree(self, label: str) -> ReplicaTree:
        """Blocking (a mkdir in cgroup mode)."""
        if self.base is None:
            return SessionTree(self)
        with self._serial_lock:
            self._serial += 1
            serial = self._serial
        return CgroupTree(self.base / f"{label}.{serial}")

    # -- session mode bookkeeping ------------------------------------------------------------

    def spawning(self) -> contextlib.AbstractContextManager[None]:
        return _LEADERS.spawning()

    def register(self, leader: int) -> None:
        _LEADERS.register(leader)

    def unregister(self, leader: int) -> None:
        _LEADERS.unregister(leader)

    def _adopted(self, table: dict[int, Proc]) -> list[Proc]:
        """Children of the server that a replica left behind (session mode only)."""
        me, my_sid = os.getpid(), os.getsid(0)
        spawning, live, seen = _LEADERS.snapshot()
        other_uid = os.geteuid() not in self.replica_uids
        found = []
        for proc in table.values():
            if proc.ppid != me or proc.pid in live or proc.sid == my_sid:
                continue
            if (proc.sid in seen and proc.sid != proc.pid) or (
                proc.pgid in seen and proc.pgid != proc.pid
            ):
                # Left in a past replica's session or group. Not the leader of one: that is a
                # new session with a reused pid (a leader being spawned, or any other child).
                found.append(proc)
            elif spawning:
                # A leader being spawned is a child that nothing knows yet, with the
                # replica's uid and marker: only the session rule is safe until it is known.
                continue
            elif (other_uid and _uid_in(proc.pid, self.replica_uids)) or (
                not proc.zombie and owner_marker(proc.pid) == self.owner
            ):
                found.append(proc)
        return found

    def sweep(self, table: dict[int, Proc] | None = None) -> int:
        """Blocking. Kill strays (adopted, outside every live replica), reap adopted zombies."""
        if self.base is not None:
            return 0
        table = process_table() if table is None else table
        live = _LEADERS.snapshot()[1]
        strays: set[int] = set()
        for proc in self._adopted(table):
            if proc.zombie:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(proc.pid, os.WNOHANG)
            elif proc.sid not in live and proc.pgid not in live:
                strays |= descendants(table, [proc.pid])
        strays = {pid for pid in strays if killable(table, pid)}
        if strays:
            log.warning(
                "killing %d process(es) that escaped their replica: %s",
                len(strays),
                sorted(strays),
            )
            kill_all(strays, signal.SIGKILL)
        return len(strays)

    # -- start-up ----------------------------------------------------------------------------

    def kill_leftovers(self, recorded: Iterable[int], timeout: float = 5.0) -> list[int]:
        """Blocking. End everything a previous run of this state directory left behind.

        cgroup mode: every group under the base. Both modes: the sessions of the
        recorded leaders, and the sessions of processes carrying the owner marker.
        Returns the pids that were killed.
        """
        killed: set[int] = set()
        deadline = time.monotonic() + timeout
        groups = [path for path in self.base.iterdir() if path.is_dir()] if self.base else []
        for group in groups:
            tree = CgroupTree(group, create=False)
            killed |= tree.members()
            tree.kill()
        table = process_table()
        seeds = set(recorded) | self._marked(table)
        members = session_members(table, {table[p].sid for p in seeds if p in table} | seeds)
        kill_all(members, signal.SIGKILL)
        killed |= members
        while time.monotonic() < deadline:
            table = process_table()
            left = {pid for pid in killed if pid in table and not table[pid].zombie}
            if not left:
                break
            kill_all(left, signal.SIGKILL)
            time.sleep(0.05)
        for group in groups:
            with contextlib.suppress(OSError):
                group.rmdir()
        return sorted(killed)

    def _marked(self, table: dict[int, Proc]) -> set[int]:
        uids = (range(os.geteuid(), os.geteuid() + 1), self.replica_uids)
        return {
            proc.pid
            for proc in table.values()
            if not proc.zombie
            and proc.pid != os.getpid()
            and any(_uid_in(proc.pid, allowed) for allowed in uids)
            and owner_marker(proc.pid) == self.owner
        }

    def close(self, within: float = 0.3) -> None:
        """Blocking, bounded. Remove this state directory's groups: every replica has been
        stopped (or SIGKILLed by a close out of time), so what is left is killed now."""
        if self.base is None:
            return
        trees = [CgroupTree(path, create=False) for path in self.base.iterdir() if path.is_dir()]
        for tree in trees:
            tree.kill()
        deadline = time.monotonic() + within
        while any(not tree.gone() for tree in trees) and time.monotonic() < deadline:
            time.sleep(0.01)
        for tree in trees:
            with contextlib.suppress(OSError):
                tree.path.rmdir()
        try:
            self.base.rmdir()
        except OSError as exc:  # still populated: the next start kills and removes it
            log.warning("cannot remove cgroup %s: %s", self.base, exc)
