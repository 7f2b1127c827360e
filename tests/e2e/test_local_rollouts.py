"""Revisions and rollouts through grpcurl against the real server on `local`.

A plan (validate_only) shows the diff and leaves the process table as it was (the
same pids); a change followed with WatchDeployment until_rollout_done ends SUCCEEDED;
a stale expected_revision is ABORTED with REVISION_CONFLICT; a crash-looping change
ends FAILED with its reason while the old replicas keep running; a rollback brings the
earlier environment back into the running processes (read from /proc/<pid>/environ).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from tests.e2e.processes import environ_of, marked
from tests.e2e.server_process import ServerProcess
from tests.e2e.test_grpcurl import MARKER, SERVICE, call, grpcurl
from tests.e2e.test_local_logs import Message, messages
from tests.waiting import until_sync

REF = {"service_id": "web", "namespace": "demo"}


def watch_rollout(server: ServerProcess) -> list[Message]:
    """WatchDeployment until_rollout_done: the statuses it sent before it ended by itself."""
    out = grpcurl(server, f"{SERVICE}/WatchDeployment", data={**REF, "until_rollout_done": True})
    return [message["status"] for message in messages(out.stdout)]


def environments(tag: str) -> list[dict[str, str]]:
    return [environ_of(process) for process in marked(MARKER, tag)]


def pids(tag: str) -> set[int]:
    return {process.pid for process in marked(MARKER, tag)}


def plan_changes_nothing(
    server: ServerProcess, tag: str, changed: dict[str, Any], running: set[int]
) -> None:
    # A plan changes nothing: the same processes, the same revision, the diff shown.
    planned = call(server, "StartDeployment", {"spec": changed, "validate_only": True})
    assert planned["plan"]["revision"] == "1"
    assert planned["plan"]["action"] == "PLAN_ACTION_REPLACE"
    assert {"path": "spec.env['MODE']", "oldValue": "a", "newValue": "b"} in planned["plan"][
        "changes"
    ]
    config_plan = call(
        server,
        "ApplyConfig",
        {"patch": {**REF, "set": {"secret.TOKEN": "s3cr3t"}}, "validate_only": True},
    )
    assert config_plan["plan"]["action"] == "PLAN_ACTION_ROLLING_RESTART"
    assert config_plan["plan"]["changes"] == [
        {"path": "config['secret.TOKEN']", "newValue": "<secret>"}
    ]
    assert pids(tag) == running, "validate_only left the process table as it was"
    assert all(env["MODE"] == "a" and "TOKEN" not in env for env in environments(tag))
    history = call(server, "ListRevisions", REF)["revisions"]
    assert [r["number"] for r in history] == ["1"]


def crash_loop_fails_while_the_old_replicas_serve(
    server: ServerProcess, tag: str, spec: Callable[[list[str], str], dict[str, Any]]
) -> None:
    # A change whose replicas exit at once: FAILED with its reason, the old ones serve on.
    crashing = ["sh", "-c", "echo 'no config' >&2; exit 3"]
    call(server, "StartDeployment", {"spec": spec(crashing, "c"), "change_cause": "broken"})
    statuses = watch_rollout(server)
    failed = statuses[-1]
    assert failed["revision"] == "3"
    rollout = failed["rollout"]
    assert (rollout["state"], rollout["reason"]) == ("ROLLOUT_STATE_FAILED", "CRASH_LOOP")
    assert "exited 3 times in a row" in rollout["message"]
    assert "no further replica replaced" in rollout["message"]
    assert "finishedAt" in rollout
    assert failed["state"] == "DEPLOYMENT_STATE_DEGRADED"
    progressing = {c["type"]: c for c in failed["conditions"]}["Progressing"]
    assert (progressing["status"], progressing["reason"]) == (
        "CONDITION_STATUS_FALSE",
        "CRASH_LOOP",
    )
    until_sync(
        lambda: [env.get("MODE") for env in environments(tag)] == ["b", "b"],
        "two replicas of revision 2 (slot 0 back on it)",
    )
    settled = call(server, "GetDeploymentStatus", REF)["status"]
    assert (settled["revision"], settled["observedRevision"]) == ("3", "2")


def test_plan_change_conflict_crash_loop_and_rollback(server: ServerProcess) -> None:
    tag = uuid.uuid4().hex

    def spec(command: list[str], mode: str) -> dict[str, Any]:
        return {**REF, "command": command, "replicas": 2, "env": {MARKER: tag, "MODE": mode}}

    sleeper = ["sleep", "300"]
    started = call(server, "StartDeployment", {"spec": spec(sleeper, "a"), "change_cause": "first"})
    assert started["status"]["revision"] == "1"
    assert started["plan"]["action"] == "PLAN_ACTION_CREATE"
    first = watch_rollout(server)[-1]
    assert first["rollout"]["state"] == "ROLLOUT_STATE_SUCCEEDED", first
    assert (first["revision"], first["observedRevision"]) == ("1", "1")
    until_sync(lambda: len(marked(MARKER, tag)) == 2, "2 replicas")
    running = pids(tag)

    plan_changes_nothing(server, tag, spec(sleeper, "b"), running)

    # The change itself, conditional on the revision it was planned against.
    changed = call(
        server,
        "StartDeployment",
        {"spec": spec(sleeper, "b"), "expected_revision": 1, "change_cause": "mode b"},
    )
    assert changed["status"]["revision"] == "2"
    second = watch_rollout(server)[-1]
    assert second["rollout"]["state"] == "ROLLOUT_STATE_SUCCEEDED", second
    until_sync(
        lambda: [env.get("MODE") for env in environments(tag)] == ["b", "b"],
        "both replicas replaced with MODE=b",
    )
    replaced = pids(tag)
    assert not replaced & running

    # Planned against revision 1, applied after 2: refused, nothing changes.
    stale = grpcurl(
        server,
        f"{SERVICE}/StartDeployment",
        data={"spec": spec(sleeper, "c"), "expected_revision": 1},
        check=False,
    )
    assert stale.returncode == 64 + 10, stale.stderr  # ABORTED
    assert "REVISION_CONFLICT" in stale.stderr
    assert pids(tag) == replaced

    crash_loop_fails_while_the_old_replicas_serve(server, tag, spec)

    # Roll back to revision 1: its environment comes back in the running processes.
    rolled = call(
        server,
        "RollbackDeployment",
        {**REF, "to_revision": 1, "expected_revision": 3, "change_cause": "back to a"},
    )
    assert rolled["status"]["revision"] == "4"
    back = watch_rollout(server)[-1]
    assert back["rollout"]["state"] == "ROLLOUT_STATE_SUCCEEDED", back
    assert (back["revision"], back["observedRevision"]) == ("4", "4")
    until_sync(
        lambda: (
            len(marked(MARKER, tag)) == 2
            and all(env.get("MODE") == "a" for env in environments(tag))
        ),
        "both replicas running with MODE=a again",
    )
    assert all(process.cmdline() == ["sleep", "300"] for process in marked(MARKER, tag)), (
        "revision 1's command too"
    )

    history = call(server, "ListRevisions", REF)["revisions"]
    assert [r["number"] for r in history] == ["4", "3", "2", "1"]
    assert [r.get("changeCause", "") for r in history] == ["back to a", "broken", "mode b", "first"]
    assert history[0]["rollbackOf"] == "1" and "automatic" not in history[0]
    assert "replicas" not in history[0]["spec"]

    assert call(server, "DeleteDeployment", REF) == {"deleted": True}
    assert marked(MARKER, tag) == []
