"""StreamLogs and DeleteDeployment through grpcurl against the real server on `local`.

Tail returns past lines and ends; follow delivers lines written later and the lines
of a replica added by ScaleDeployment; DeleteDeployment leaves nothing behind, as
the process table, the state directory and the state database (read with sqlite3)
show.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tests.e2e.processes import marked, marked_roots
from tests.e2e.server_process import ServerProcess
from tests.e2e.test_grpcurl import MARKER, SERVICE, call, grpcurl, grpcurl_binary
from tests.providers.local.support import TALKER, machine_leftovers
from tests.waiting import until_sync

Message = dict[str, Any]


def messages(output: str) -> list[Message]:
    """grpcurl prints each message as indented JSON; a top-level one ends with ``}``."""
    found, lines = [], []
    for line in output.splitlines():
        lines.append(line)
        if line == "}":
            found.append(json.loads("\n".join(lines)))
            lines = []
    return found


@contextmanager
def following(server: ServerProcess, data: dict[str, Any]) -> Iterator[queue.Queue[Message | None]]:
    """A ``grpcurl`` StreamLogs call left running; its messages arrive on the queue
    (None once it ended)."""
    command = [grpcurl_binary(), "-plaintext", "-d", json.dumps(data)]
    command += [server.address, f"{SERVICE}/StreamLogs"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    arrived: queue.Queue[Message | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        lines: list[str] = []
        for line in process.stdout:
            lines.append(line)
            if line == "}\n":
                arrived.put(json.loads("".join(lines)))
                lines = []
        arrived.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield arrived
    finally:
        process.terminate()
        process.wait(timeout=30)
        reader.join(timeout=30)
        assert process.stderr is not None
        process.stderr.close()
        assert process.stdout is not None
        process.stdout.close()


def next_matching(
    arrived: queue.Queue[Message | None], check: Callable[[Message], bool], what: str
) -> Message:
    deadline = time.monotonic() + 60
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {what}"
        try:
            message = arrived.get(timeout=left)
        except queue.Empty:
            continue
        assert message is not None, f"the stream ended before {what}"
        if check(message):
            return message


def number(entry: Message) -> int:
    """``line 12`` on stdout, ``warning 10`` on stderr (tests.providers.local.support.TALKER)."""
    return int(entry["text"].split()[1])


def test_stream_logs_tail_follow_scale_then_delete_leaves_nothing(server: ServerProcess) -> None:
    tag = uuid.uuid4().hex
    ref = {"service_id": "talker", "namespace": "demo"}
    spec = {**ref, "command": list(TALKER), "replicas": 1, "env": {MARKER: tag}}
    call(server, "StartDeployment", {"spec": spec})

    def tail() -> list[Message]:
        out = grpcurl(server, f"{SERVICE}/StreamLogs", data={**ref, "tail_lines": 3}).stdout
        return [message["entry"] for message in messages(out)]

    until_sync(lambda: len(tail()) == 3, "three past lines", within=60)
    past = tail()  # grpcurl exited 0: the call ended by itself, with OK
    assert len(past) == 3 and all(e["instanceId"].startswith("talker-0@") for e in past), past
    assert {e["stream"] for e in past} <= {"LOG_STREAM_STDOUT", "LOG_STREAM_STDERR"}
    newest = max(number(e) for e in past)

    with following(server, {**ref, "follow": True, "tail_lines": 1}) as arrived:
        next_matching(arrived, lambda m: number(m["entry"]) > newest + 2, "a line written later")
        scaled = call(server, "ScaleDeployment", {**ref, "replicas": 2})
        assert scaled["status"]["desiredReplicas"] == 2
        added = next_matching(
            arrived,
            lambda m: m["entry"]["instanceId"].startswith("talker-1@"),
            "a line of the replica added by ScaleDeployment",
        )
        assert added["entry"]["text"] == "line 1", "the new replica from its first line"
    until_sync(lambda: len(marked_roots(MARKER, tag)) == 2, "two replicas")
    one = added["entry"]["instanceId"]  # <service>-<n>@<pid>, as in status
    only = grpcurl(server, f"{SERVICE}/StreamLogs", data={**ref, "instance_id": one}).stdout
    assert {message["entry"]["instanceId"] for message in messages(only)} == {one}

    assert call(server, "DeleteDeployment", ref) == {"deleted": True}
    assert marked(MARKER, tag) == [], "no process of it is left"
    assert machine_leftovers(server.state_dir, "talker", "demo") == []
    assert not (server.state_dir / "local" / "logs" / "demo").exists()
    for method in ("GetDeploymentStatus", "StreamLogs", "DeleteDeployment"):
        missing = grpcurl(server, f"{SERVICE}/{method}", data=ref, check=False)
        assert missing.returncode == 64 + 5, (method, missing.stderr)
        assert "DEPLOYMENT_NOT_FOUND" in missing.stderr
    assert call(server, "DeleteDeployment", {**ref, "allow_missing": True}) == {}
    listed = call(server, "ListDeployments", {"namespace": "demo"})
    assert listed.get("deployments", []) == []
