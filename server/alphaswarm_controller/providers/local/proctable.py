"""What /proc says about processes: parents, sessions, uids, markers; and signalling them.

Reads /proc directly (one small read per process): psutil would build an object
per process for the same fields. Everything here is blocking.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

OWNER_ENV = "ALPHASWARM_LOCAL_STATE_DIR"
"""The marker every replica carries: the state directory of the server that started it."""


@functools.cache
def libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True, slots=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    sid: int
    zombie: bool


def process_table() -> dict[int, Proc]:
    """Every process, from /proc/<pid>/stat (one read each; blocking)."""
    table: dict[int, Proc] = {}
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as stat_file:
                    raw = stat_file.read()
            except OSError:
                continue
            # The command name may hold spaces and parentheses: fields start after the last ")".
            fields = raw[raw.rfind(b")") + 2 :].split()
            pid = int(entry.name)
            table[pid] = Proc(
                pid, int(fields[1]), int(fields[2]), int(fields[3]), fields[0] in (b"Z", b"X")
            )
    return table


def descendants(table: dict[int, Proc], roots: Iterable[int]) -> set[int]:
    """``roots`` that exist and every process below them."""
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found = {pid for pid in roots if pid in table}
    stack = list(found)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def session_members(table: dict[int, Proc], sids: Iterable[int]) -> set[int]:
    """Live processes of the given sessions or process groups, and their descendants."""
    wanted = set(sids) - {0, 1, os.getsid(0), os.getpgrp()}
    seeds = {p.pid for p in table.values() if p.sid in wanted or p.pgid in wanted}
    return {pid for pid in descendants(table, seeds) if killable(table, pid)}


def killable(table: dict[int, Proc], pid: int) -> bool:
    return pid not in (0, 1, os.getpid()) and not table[pid].zombie


def uid_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def owner_marker(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            for item in environ.read().split(b"\0"):
                if item.startswith(OWNER_ENV.encode() + b"="):
                    return item.split(b"=", 1)[1].decode(errors="replace")
    except OSError:
        return None
    return None


def kill_all(pids: Iterable[int], sig: int) -> int:
    """Signal each pid; how many were still there."""
    sent = 0
    for pid in pids:
        if pid <= 1 or pid == os.getpid():
            continue
        try:
            os.kill(pid, sig)
            sent += 1
        except ProcessLookupError:
            continue
        except PermissionError:
            log.warning("not allowed to signal pid %d", pid)
    return sent
