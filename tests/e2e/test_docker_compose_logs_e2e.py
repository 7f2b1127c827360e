"""StreamLogs and DeleteDeployment through grpcurl against the real server on docker_compose.

The server runs with ``ALPHASWARM_CP_PROVIDER=docker_compose`` against the engine at
DOCKER_HOST (``eval "$(bash scripts/ci/start-dockerd.sh)"``; without one the test
fails, never skips). Replicas write ``line <n>`` every 0.2 s; the engine itself is
checked after the delete.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import docker
import pytest

from alphaswarm_core.testing import unique_name
from tests.e2e.server_process import ServerProcess
from tests.e2e.test_grpcurl import SERVICE, call, grpcurl, grpcurl_binary
from tests.fakes.docker_images import ensure_busybox_image
from tests.providers.docker_compose.support import (
    LOG_SCRIPT,
    NOTHING,
    project_objects,
    remove_project,
)
from tests.providers.docker_compose.test_contract import engine_leftovers
from tests.waiting import until_sync

SETTLE = 60.0


class FollowingStream:
    """``grpcurl`` on a following StreamLogs, its messages decoded as they arrive."""

    def __init__(self, server: ServerProcess, request: dict[str, Any]) -> None:
        self.process = subprocess.Popen(
            [
                grpcurl_binary(),
                "-plaintext",
                "-d",
                json.dumps(request),
                server.address,
                f"{SERVICE}/StreamLogs",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.entries: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._decode, daemon=True).start()

    def _decode(self) -> None:
        assert self.process.stdout is not None
        decoder = json.JSONDecoder()
        buffer = ""
        for line in self.process.stdout:
            buffer += line
            while buffer.strip():
                try:
                    message, end = decoder.raw_decode(buffer.lstrip())
                except json.JSONDecodeError:
                    break  # the rest of this message is still on its way
                self.entries.put(message["entry"])
                buffer = buffer.lstrip()[end:]

    def read_until(self, done: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
        deadline = time.monotonic() + SETTLE
        while not done(self.seen):
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                done_err = self.process.stderr if self.process.poll() is not None else None
                stderr = done_err.read() if done_err is not None else ""
                pytest.fail(f"the stream did not deliver in time: {self.seen[-5:]} {stderr}")
            try:
                self.seen.append(self.entries.get(timeout=min(left, 1.0)))
            except queue.Empty:
                continue
        return self.seen

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # grpcurl cancels the call
        self.process.wait(10)


def _instances(status: dict[str, Any]) -> set[str]:
    return {i["instanceId"] for i in status.get("instances", [])}


def _wait_ready(server: ServerProcess, ref: dict[str, str], count: int) -> dict[str, Any]:
    status: dict[str, Any] = until_sync(
        lambda: call(server, "GetDeploymentStatus", ref)["status"],
        f"{count} ready replicas",
        holds=lambda s: s.get("readyReplicas", 0) == count and s.get("desiredReplicas") == count,
        within=SETTLE,
        every=0.3,
    )
    return status


def test_logs_tail_follow_scale_and_delete_through_grpcurl(
    compose_server: ServerProcess, engine: docker.APIClient
) -> None:
    image = ensure_busybox_image(engine)
    namespace = unique_name("e2e")
    ref = {"service_id": "talker", "namespace": namespace}
    try:
        spec = {
            **ref,
            "image": image,
            "command": ["/bin/sh", "-c", LOG_SCRIPT],
            "replicas": 2,
        }
        call(compose_server, "StartDeployment", {"spec": spec})
        first = _instances(_wait_ready(compose_server, ref, 2))

        # Tail: past lines of each replica, then the stream ends by itself with OK.
        def tail() -> list[dict[str, Any]]:
            out = grpcurl(
                compose_server, f"{SERVICE}/StreamLogs", data={**ref, "tail_lines": 3}
            ).stdout
            return [m["entry"] for m in _messages(out)]

        def six_counted(entries: list[dict[str, Any]]) -> bool:
            return len(entries) == 6 and all(e["text"].startswith("line ") for e in entries)

        # Right after the start a replica's last 3 lines may still include its stderr one.
        entries = until_sync(
            tail, "3 lines of each replica", holds=six_counted, within=SETTLE, every=0.5
        )
        per_replica = {i: [e for e in entries if e["instanceId"] == i] for i in first}
        assert all(len(lines) == 3 for lines in per_replica.values()), entries
        assert {e["instanceId"] for e in entries} == first
        assert all(e["stream"] == "LOG_STREAM_STDOUT" for e in entries)
        assert all(e["text"].startswith("line ") for e in entries)

        # Follow: lines written later, then those of a replica ScaleDeployment adds.
        stream = FollowingStream(compose_server, {**ref, "follow": True, "tail_lines": 1})
        try:
            newest = max(_time(e) for e in entries)
            stream.read_until(lambda seen: sum(_time(e) > newest for e in seen) >= 4)
            call(compose_server, "ScaleDeployment", {**ref, "replicas": 3})
            added = _instances(_wait_ready(compose_server, ref, 3)) - first
            assert len(added) == 1
            seen = stream.read_until(lambda seen: sum(e["instanceId"] in added for e in seen) >= 2)
        finally:
            stream.close()
        later = [e for e in seen if e["instanceId"] in added]
        assert any(e["stream"] == "LOG_STREAM_STDERR" for e in later), later
        assert [e["text"] for e in later if e["text"].startswith("line ")][:1] == ["line 0"]

        # Delete: nothing of the service is left on the engine, and the API says so.
        deleted = call(compose_server, "DeleteDeployment", ref)
        assert deleted.get("deleted") is True
        assert engine_leftovers(engine, "talker", namespace) == []
        assert project_objects(engine, namespace) == NOTHING
        again = grpcurl(compose_server, f"{SERVICE}/DeleteDeployment", data=ref, check=False)
        assert again.returncode == 64 + 5 and "DEPLOYMENT_NOT_FOUND" in again.stderr
        missing_ok = call(compose_server, "DeleteDeployment", {**ref, "allow_missing": True})
        assert not missing_ok.get("deleted")
        gone = grpcurl(compose_server, f"{SERVICE}/GetDeploymentStatus", data=ref, check=False)
        assert gone.returncode == 64 + 5, gone.stderr
    finally:
        remove_project(engine, namespace)


def _time(entry: dict[str, Any]) -> datetime:
    """An entry's time (JSON Timestamps have 0, 3, 6 or 9 fraction digits: not sortable
    as text)."""
    return datetime.fromisoformat(entry["time"])


def _messages(out: str) -> list[dict[str, Any]]:
    decoder = json.JSONDecoder()
    found = []
    rest = out.strip()
    while rest:
        message, end = decoder.raw_decode(rest)
        found.append(message)
        rest = rest[end:].strip()
    return found
