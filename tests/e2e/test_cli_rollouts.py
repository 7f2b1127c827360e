"""The CLI's rollouts (issue 21) as a user runs them against the real server on `local`.

Each step is checked in what the CLI prints and exits with, and in the process table
(the replicas carry a per-test marker in their environment): a ``--wait`` that ends
SUCCEEDED, a dry run that leaves the same pids and prints the diff, a stale
``--expected-revision`` refused (exit 1) with nothing changed, a crash-looping change
whose ``--wait`` exits 4 with CRASH_LOOP while the old replicas serve on, the history,
an undo that brings the earlier environment back into the running processes, the live
view on a terminal, a wait cut short (exit 3) or interrupted (exit 130), a rollout that
makes no progress for its deadline, and completion of the new commands.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.processes import environ_of, marked
from tests.e2e.server_process import ServerProcess, start_server
from tests.e2e.terminal import cli_in_terminal
from tests.e2e.test_cli import MARKER, Result, ok, run
from tests.e2e.test_cli_workflow import VENV_BIN
from tests.waiting import until_sync

EXIT_ROLLOUT_FAILED = 4
EXIT_OUTCOME_UNKNOWN = 3


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    running = start_server(tmp_path / "state", {"ALPHASWARM_CONFIG": str(tmp_path / "none.yaml")})
    try:
        yield running
    finally:
        assert running.terminate() == 0, running.log


def modes(tag: str) -> list[str | None]:
    return sorted((environ_of(p).get("MODE") for p in marked(MARKER, tag)), key=str)


def pids(tag: str) -> set[int]:
    return {p.pid for p in marked(MARKER, tag)}


def refused(result: Result, code: int) -> str:
    """The one stderr line of a command that exited with ``code``."""
    assert result.code == code, f"exit {result.code}, expected {code}: {result.err}"
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    return lines[0]


@dataclass
class Web:
    """The service ``demo/web`` of one test: two replicas carrying ``tag`` and a MODE."""

    server: ServerProcess
    tag: str

    def cli(self, *args: str) -> Result:
        return run(self.server, "-n", "demo", *args)

    def start(self, mode: str, *extra: str, command: tuple[str, ...] = ("sleep", "300")) -> Result:
        return self.cli(
            "start", "web", "--replicas", "2", "--env", f"{MARKER}={self.tag}",
            "--env", f"MODE={mode}", *extra, "--", *command,
        )  # fmt: skip

    def settles_on(self, mode: str) -> None:
        until_sync(lambda: modes(self.tag) == [mode, mode], f"both replicas with MODE={mode}")


def test_wait_plan_conflict_crash_loop_history_and_undo(server: ServerProcess) -> None:
    web = Web(server, uuid.uuid4().hex)
    first = web.start("a", "--change-cause", "first", "--wait")
    assert (first.code, first.err) == (0, ""), first.err
    lines = first.out.splitlines()
    assert lines[0] == "demo/web: revision 1; waiting for its rollout"
    assert lines[1].split() == ["TIME", "REVISION", "ROLLOUT", "READY", "MESSAGE"]
    assert lines[-1].startswith("rollout of demo/web to revision 1: SUCCEEDED: ")
    assert lines[-1].endswith("(2/2 ready)")
    # SUCCEEDED means every desired replica runs the revision and is ready: no waiting here.
    assert modes(web.tag) == ["a", "a"]

    running = pids(web.tag)
    plan_changes_nothing(web, running)

    # The change, conditional on the planned revision, followed to its end.
    changed = web.start("b", "--expected-revision", "1", "--change-cause", "mode b", "--wait")
    assert (changed.code, changed.err) == (0, ""), changed.err
    assert "revision 2: SUCCEEDED" in changed.out.splitlines()[-1]
    web.settles_on("b")
    replaced = pids(web.tag)
    assert not replaced & running

    # Planned against revision 1, applied at 2: refused, exit 1, nothing changes.
    stale = refused(web.start("c", "--expected-revision", "1", "--wait"), 1)
    assert stale.startswith("error: ABORTED: demo/web is at revision 2, not at revision 1")
    assert "reason=REVISION_CONFLICT" in stale
    stale_config = web.cli("config", "set", "web", "X=1", "--expected-revision", "1")
    assert "REVISION_CONFLICT" in refused(stale_config, 1)
    assert pids(web.tag) == replaced

    crash_loop_exits_4_while_the_old_replicas_serve(web)
    undo_restores_revision_1_and_history_says_so(web)

    # The config, applied and followed: the replicas restart onto it.
    level = web.cli("config", "set", "web", "LEVEL=2", "--change-cause", "level 2", "--wait")
    assert (level.code, level.err) == (0, ""), level.err
    assert level.out.startswith("demo/web: config version ")
    assert "revision 5: SUCCEEDED" in level.out.splitlines()[-1]
    until_sync(
        lambda: [environ_of(p).get("LEVEL") for p in marked(MARKER, web.tag)] == ["2", "2"],
        "both replicas restarted with LEVEL=2",
    )
    assert web.cli("delete", "web", "--yes", "--expected-revision", "5").code == 0
    until_sync(lambda: not marked(MARKER, web.tag), "no replica left")


def plan_changes_nothing(web: Web, running: set[int]) -> None:
    """A plan: the diff, the action and the revision; the same processes afterwards."""
    planned = web.start("b", "--dry-run")
    assert (planned.code, planned.err) == (0, ""), planned.err
    assert planned.out.splitlines() == [
        "plan for demo/web, computed against revision 1:",
        "  action: REPLACE (replicas are replaced by new ones, one at a time)",
        "  ~ spec.env['MODE']: a -> b",
        "(dry run: nothing changed; add --expected-revision 1 to apply exactly this plan)",
    ]
    secret = web.cli("config", "set", "web", "secret.TOKEN=s3cr3t", "--dry-run")
    assert "  + config['secret.TOKEN']: <secret>" in secret.out.splitlines()
    assert "ROLLING_RESTART" in secret.out and "s3cr3t" not in secret.out
    as_json = json.loads(web.start("b", "--dry-run", "-o", "json").out)
    assert as_json["plan"]["revision"] == "1" and as_json["status"]["revision"] == "1"
    undo = web.cli("rollout", "undo", "web", "--dry-run")
    assert "REVISION_NOT_FOUND" in refused(undo, 1)  # no revision before the first
    assert pids(web.tag) == running, "a dry run leaves the process table as it was"
    assert modes(web.tag) == ["a", "a"]
    history = web.cli("rollout", "history", "web", "-o", "json").out
    assert [r["number"] for r in json.loads(history)["revisions"]] == ["1"]


def crash_loop_exits_4_while_the_old_replicas_serve(web: Web) -> None:
    crashing = ("sh", "-c", "echo 'no config' >&2; exit 3")
    broken = web.start("c", "--change-cause", "broken", "--wait", command=crashing)
    line = refused(broken, EXIT_ROLLOUT_FAILED)
    assert line.startswith("error: rollout of demo/web to revision 3: FAILED: CRASH_LOOP: ")
    assert "exited 3 times in a row" in line and "replicas run revision 2" in line
    assert "IN_PROGRESS" in broken.out  # the progress lines came first
    web.settles_on("b")  # slot 0 goes back to revision 2
    status = web.cli("rollout", "status", "web")
    assert "CRASH_LOOP" in refused(status, EXIT_ROLLOUT_FAILED)


def undo_restores_revision_1_and_history_says_so(web: Web) -> None:
    undo = web.cli(
        "rollout", "undo", "web", "--to-revision", "1", "--expected-revision", "3",
        "--change-cause", "back to a", "--wait",
    )  # fmt: skip
    assert (undo.code, undo.err) == (0, ""), undo.err
    assert "revision 4: SUCCEEDED" in undo.out.splitlines()[-1]
    web.settles_on("a")
    assert all(p.cmdline() == ["sleep", "300"] for p in marked(MARKER, web.tag))

    table = web.cli("rollout", "history", "web").out.splitlines()
    assert table[0].split() == ["REVISION", "CREATED", "CHANGE-CAUSE", "NOTE"]
    assert [row.split()[0] for row in table[1:]] == ["4", "3", "2", "1"]
    assert table[1].split()[2:] == ["back", "to", "a", "rollback", "to", "1"]
    assert table[2].split()[2:] == ["broken", "-"]
    assert table[3].split()[2:] == ["mode", "b", "-"]
    assert table[4].split()[2:] == ["first", "-"]
    revisions = json.loads(web.cli("rollout", "history", "web", "-o", "json").out)["revisions"]
    assert revisions[0]["rollbackOf"] == "1"
    assert revisions[0]["spec"]["env"]["MODE"] == "a"


def test_the_live_view_on_a_terminal_and_set_with_wait(server: ServerProcess) -> None:
    tag = uuid.uuid4().hex
    ok(server, "start", "web", "--replicas", "2", "--env", f"{MARKER}={tag}", "--", "sleep", "300")
    with cli_in_terminal(server, "set", "env", "web", "MODE=live", "--wait", columns=100) as term:
        assert term.wait(60) == 0, term.text
        raw, text = term.raw, term.text
    assert "\x1b[2K" in raw, "redrawn in place"
    assert "━" in raw  # rich's progress bar
    assert re.search(r"━+ [0-2]/2 ready, revision 2", text), text
    assert "INSTANCE" in text and "STATE" in text  # one row per replica
    assert (
        text.rstrip().splitlines()[-1].startswith("rollout of default/web to revision 2: SUCCEEDED")
    )
    until_sync(lambda: modes(tag) == ["live", "live"], "both replicas with MODE=live")
    # Off a terminal, TERM=dumb too: lines, not redraws.
    dumb = run(server, "rollout", "status", "web", env={**server.env, "TERM": "dumb"})
    assert dumb.code == 0 and "\x1b" not in dumb.out
    ok(server, "delete", "web", "--yes")
    until_sync(lambda: not marked(MARKER, tag), "no replica left")


@pytest.fixture
def never_ready(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server whose replicas never count as ready: every rollout stays IN_PROGRESS."""
    running = start_server(
        tmp_path / "state",
        {
            "ALPHASWARM_CONFIG": str(tmp_path / "none.yaml"),
            "ALPHASWARM_LOCAL_READY_SECONDS": "3600",
        },
    )
    try:
        yield running
    finally:
        assert running.terminate() == 0, running.log


def test_a_wait_cut_short_interrupted_or_past_the_progress_deadline(
    never_ready: ServerProcess,
) -> None:
    server, tag = never_ready, uuid.uuid4().hex
    cut = run(
        server, "start", "slow", "--env", f"{MARKER}={tag}", "--wait", "--wait-timeout", "1.5",
        "--", "sleep", "300",
    )  # fmt: skip
    line = refused(cut, EXIT_OUTCOME_UNKNOWN)
    assert line == (
        "error: rollout of slow: still in progress after 1.5s; outcome unknown: "
        "follow it with 'alphaswarm rollout status slow'"
    )
    assert len(marked(MARKER, tag)) == 1, "the rollout goes on without the CLI"

    # Ctrl-C stops the waiting, not the rollout.
    with cli_in_terminal(server, "rollout", "status", "slow") as term:
        term.expect(r"rollout of default/slow to revision 1: IN_PROGRESS")
        term.expect(r"0/1 ready")
        term.type("\x03")
        assert term.wait() == 130
    assert len(marked(MARKER, tag)) == 1

    # No progress for the spec's deadline: FAILED with PROGRESS_DEADLINE_EXCEEDED.
    late = run(
        server, "start", "late", "--env", f"{MARKER}={tag}", "--progress-deadline", "2",
        "--wait", "--", "sleep", "300",
    )  # fmt: skip
    line = refused(late, EXIT_ROLLOUT_FAILED)
    assert line.startswith(
        "error: rollout of default/late to revision 1: FAILED: PROGRESS_DEADLINE_EXCEEDED: "
        "no progress for 2 s"
    )
    for name in ("slow", "late"):
        ok(server, "delete", name, "--yes")
    until_sync(lambda: not marked(MARKER, tag), "no replica left")


def test_completion_of_the_rollout_commands(server: ServerProcess, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    ok(server, "start", "web", "--env", f"{MARKER}={tag}", "--", "sleep", "300")
    ok(server, "set", "env", "web", "MODE=b", "--wait")
    bash = shutil.which("bash")
    assert bash, "bash is not installed"
    (tmp_path / "alphaswarm.bash").write_text(ok(server, "completion", "bash").out, "utf-8")
    env = {**server.env, "PATH": f"{VENV_BIN}{os.pathsep}{server.env.get('PATH', '')}",
           "ALPHASWARM_TARGET": server.address}  # fmt: skip

    def complete(line: str) -> list[str]:
        words = line.split(" ")
        program = (
            f"source {tmp_path / 'alphaswarm.bash'}\n"
            f"COMP_LINE={line!r}; COMP_POINT=${{#COMP_LINE}}\n"
            f"COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
            '_python_argcomplete alphaswarm\nprintf "%s\\n" "${COMPREPLY[@]}"\n'
        )
        done = subprocess.run(
            [bash, "-c", program], capture_output=True, text=True, env=env, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        return sorted(word.strip() for word in done.stdout.splitlines() if word.strip())

    actions = [word for word in complete("alphaswarm rollout ") if not word.startswith("-")]
    assert actions == ["history", "status", "undo"]
    assert complete("alphaswarm rollout undo w") == ["web"]
    # Revision numbers of the service on the line, from the server.
    assert complete("alphaswarm rollout undo web --to-revision ") == ["1", "2"]
    assert "--expected-revision" in complete("alphaswarm start web --ex")
    assert complete("alphaswarm config set web --wa") == ["--wait", "--wait-timeout"]
    ok(server, "delete", "web", "--yes")
    until_sync(lambda: not marked(MARKER, tag), "no replica left")
