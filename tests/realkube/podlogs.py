"""What the kwok node's containers print: one log file, written while the cluster runs.

kwok runs no containers; it serves ``/containerLogs`` as a kubelet does, from
the file its ``ClusterLogs`` configuration names, read with the kubelet's own CRI
log reader (tail, since, timestamps, follow). ``PodOutput`` appends a line in the
CRI log format (``<RFC 3339 time> <stream> F <text>``) twice a second, so every
pod on the node "writes a line every half second"; every fifth goes to stderr.
It is one file for every pod: which pod a line belongs to is the API path it was
read from (``pods/<name>/log``), which is what the provider is tested on.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

INTERVAL = 0.5


def clusterlogs_config(path: Path, logs: Path) -> Path:
    """A kwok configuration file: every pod's container ``main`` logs ``logs``, followable."""
    config = {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "ClusterLogs",
        "metadata": {"name": "alphaswarm-tests"},
        "spec": {"logs": [{"containers": ["main"], "logsFile": str(logs), "follow": True}]},
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


class PodOutput:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.touch()
        self.lines = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, name="kwok-pod-output", daemon=True)

    def start(self) -> PodOutput:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _write(self) -> None:
        with self.path.open("a", buffering=1) as out:
            while not self._stop.wait(INTERVAL):
                self.lines += 1
                stream = "stderr" if self.lines % 5 == 0 else "stdout"
                now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                out.write(f"{now} {stream} F line {self.lines} at {now}\n")
