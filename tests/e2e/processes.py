"""Find the replica processes a test started, by a marker in their environment."""

from __future__ import annotations

import psutil


def marked(marker: str, value: str) -> list[psutil.Process]:
    """Live processes whose environment has ``marker=value``."""
    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            if process.environ().get(marker) == value:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def marked_roots(marker: str, value: str) -> list[psutil.Process]:
    """The marked processes whose parent is not marked: one per replica, however many
    children (a ``sleep`` of a shell loop) it has at the moment."""
    found = marked(marker, value)
    pids = {process.pid for process in found}
    roots = []
    for process in found:
        try:
            if process.ppid() not in pids:
                roots.append(process)
        except psutil.NoSuchProcess:
            continue
    return roots


def environ_of(process: psutil.Process) -> dict[str, str]:
    try:
        return dict(process.environ())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return {}


def cmdline_of(process: psutil.Process) -> list[str]:
    """The process's command line; empty once it has exited (a replica replaced by a
    roll may go between its listing and this read)."""
    try:
        return list(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
