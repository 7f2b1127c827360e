"""Per-replica CPU and memory from psutil, summed over each replica's process tree.

psutil's ``cpu_percent(None)`` measures since the previous call on the same
``Process`` object, so one sampler per stream keeps those objects between
samples; the first sample of a process reads 0 % CPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psutil


@dataclass(frozen=True, slots=True)
class Reading:
    replicas: int
    cpu_percent: float
    memory_bytes: int
    per_replica_rss: dict[int, int]


class ProcessTreeSampler:
    def __init__(self) -> None:
        self._known: dict[int, psutil.Process] = {}

    def _process(self, pid: int) -> psutil.Process:
        cached = self._known.get(pid)
        if cached is not None and cached.is_running():
            return cached
        fresh = psutil.Process(pid)
        self._known[pid] = fresh
        return fresh

    def sample(self, replica_pids: Iterable[int]) -> Reading:
        """Blocking: call it off the event loop. Vanished processes are skipped, not errors."""
        seen: set[int] = set()
        total_cpu = 0.0
        total_rss = 0
        per_replica: dict[int, int] = {}
        for pid in replica_pids:
            try:
                leader = self._process(pid)
                tree = [leader, *leader.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            rss = 0
            for member in tree:
                try:
                    proc = self._process(member.pid)
                    with proc.oneshot():
                        total_cpu += proc.cpu_percent(None)
                        rss += proc.memory_info().rss
                    seen.add(member.pid)
                except psutil.NoSuchProcess:
                    continue
            per_replica[pid] = rss
            total_rss += rss
        for gone in set(self._known) - seen:
            del self._known[gone]
        return Reading(len(per_replica), round(total_cpu, 2), total_rss, per_replica)
