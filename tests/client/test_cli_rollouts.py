"""The CLI's rollout side (issue 21) without a real backend: the flags of a change, the
renderings of plans, history and rollouts, and the commands end to end over real gRPC
against the in-process server on the memory provider (instant rollouts; an image named
``crash`` fails its rollout with CRASH_LOOP). tests/e2e/test_cli_rollouts.py drives the
real server on `local`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import io
import json
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import timestamp_pb2

from alphaswarm.provider.v1 import types_pb2
from alphaswarm_client import (
    AlphaswarmClient,
    RevisionConflict,
    RevisionNotFound,
    SyncAlphaswarmClient,
    cli,
    render,
)
from alphaswarm_client.exits import EXIT_OUTCOME_UNKNOWN, EXIT_ROLLOUT_FAILED
from alphaswarm_client.output import Output
from alphaswarm_core.providers.models import DeploymentStatus, RolloutState
from tests.client.conftest import InProcess

# -- flags ------------------------------------------------------------------------------------


def test_change_flags_on_every_mutating_command() -> None:
    args = cli.parse_args(
        ["start", "web", "--dry-run", "--expected-revision", "3", "--change-cause", "why not",
         "--", "sleep", "1"]
    )  # fmt: skip
    assert (args.dry_run, args.expected_revision, args.change_cause, args.wait) == (
        True, 3, "why not", False,
    )  # fmt: skip
    assert cli.parse_args(["start", "web", "--expected-revision", "-1"]).expected_revision == -1
    wait = cli.parse_args(["config", "set", "web", "A=1", "--wait", "--wait-timeout", "9", "B=2"])
    assert (wait.wait, wait.wait_timeout, wait.pairs) == (True, 9.0, [("A", "1"), ("B", "2")])
    undo = cli.parse_args(["rollout", "undo", "web", "--to-revision", "2", "--wait"])
    assert (undo.to_revision, undo.wait, undo.mutating) == (2, True, True)
    assert cli.parse_args(["rollout", "undo", "web"]).to_revision == 0  # the previous one
    assert cli.parse_args(["scale", "web", "3", "--dry-run"]).dry_run
    assert cli.parse_args(["set", "env", "web", "A=1", "--wait"]).wait
    assert cli.parse_args(["stop", "web", "--expected-revision", "4"]).expected_revision == 4
    assert cli.parse_args(["delete", "web", "--expected-revision", "4"]).expected_revision == 4
    assert cli.parse_args(["rollout", "status", "web", "--wait-timeout", "5"]).wait_timeout == 5


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["start", "web", "--change-cause", "x" * 1025], "at most 1024 characters"),
        (["start", "web", "--change-cause", "two\nlines"], "printable characters only"),
        (["start", "web", "--change-cause", "esc\x1b[2J"], "printable characters only"),
        (["start", "web", "--expected-revision", "-2"], "-1 for 'must not exist yet'"),
        (["start", "web", "--expected-revision", "two"], "expected a revision number"),
        (["rollout", "undo", "web", "--to-revision", "0"], "must be greater than 0"),
        (["set", "replicas", "web", "3", "--wait"], "unrecognized arguments: --wait"),
        (["scale", "web", "3", "--wait"], "unrecognized arguments: --wait"),
        (["rollout", "history", "web", "--dry-run"], "unrecognized arguments: --dry-run"),
    ],
)
def test_bad_change_flags_exit_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.parse_args(argv)
    assert exited.value.code == 2
    assert says in capsys.readouterr().err


def test_a_cause_of_1024_printable_characters_is_taken() -> None:
    assert cli.parse_args(["start", "web", "--change-cause", "é" * 1024]).change_cause == "é" * 1024


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["start", "web", "--dry-run", "--wait", "--", "sleep", "1"], "nothing to --wait for"),
        (["config", "set", "web", "A=1", "--wait-timeout", "3"], "--wait-timeout goes with --wait"),
        (["stop", "a", "b", "--expected-revision", "2"], "name one service"),
        (["delete", "a", "b", "--yes", "--expected-revision", "2"], "name one service"),
    ],
)
def test_flags_that_do_not_go_together_exit_2_before_any_call(
    argv: list[str],
    says: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("ALPHASWARM_CONFIG", str(tmp_path / "none.yaml"))
    # Nothing listens there: a call would be UNAVAILABLE (exit 1), not a usage error.
    assert cli.main(["--target", "127.0.0.1:1", "--timeout", "2", *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.splitlines()) == 1


# -- renderings -------------------------------------------------------------------------------


def _change(path: str, old: str, new: str) -> types_pb2.FieldChange:
    return types_pb2.FieldChange(path=path, old_value=old, new_value=new)


def test_a_plan_is_a_diff_with_its_action_and_revision() -> None:
    plan = types_pb2.Plan(
        revision=4,
        action=types_pb2.PLAN_ACTION_REPLACE,
        changes=[
            _change("spec.image", "web:1", "web:2"),
            _change("spec.env['NEW']", "", "1"),
            _change("spec.env['OLD']", "x", ""),
            _change("config['secret.TOKEN']", "<secret>", "<secret>"),
        ],
    )
    assert render.plan(plan, "shop/web").splitlines() == [
        "plan for shop/web, computed against revision 4:",
        "  action: REPLACE (replicas are replaced by new ones, one at a time)",
        "  ~ spec.image: web:1 -> web:2",
        "  + spec.env['NEW']: 1",
        "  - spec.env['OLD']: x",
        "  ~ config['secret.TOKEN']: <secret> -> <secret>",
    ]
    new = types_pb2.Plan(action=types_pb2.PLAN_ACTION_CREATE)
    assert "against no revision (the service is new)" in render.plan(new, "default/api")


def test_what_the_server_sends_cannot_drive_the_terminal() -> None:
    plan = types_pb2.Plan(
        revision=1,
        action=types_pb2.PLAN_ACTION_REPLACE,
        changes=[_change("spec.env['A']", "\x1b]0;pwned\x07", "b\x1b[2J\r\n")],
    )
    text = render.plan(plan, "default/web")
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    assert "\\x1b]0;pwned\\x07 -> b\\x1b[2J\\x0d\\x0a" in text
    status = types_pb2.DeploymentStatus(
        service_id="web",
        namespace="default",
        revision=2,
        message="bad\x1b[31m",
        rollout=types_pb2.Rollout(
            state=types_pb2.ROLLOUT_STATE_FAILED, reason="CRASH_LOOP", message="x\x9b2J"
        ),
        instances=[types_pb2.InstanceStatus(instance_id="w\x1b[A", message="m\x08")],
    )
    for shown in (
        render.rollout_line(status),
        render.rollout_outcome(status),
        render.instances_table(status),
        *render.instance_lines(status),
    ):
        assert not any(ch in shown for ch in "\x1b\x9b\x08"), repr(shown)
    history = [types_pb2.Revision(number=1, change_cause="c\x1b[2J", config_version="v\x07")]
    assert "\x1b" not in render.revisions(history, wide=True)


def test_rollout_lines_and_outcome() -> None:
    status = types_pb2.DeploymentStatus(
        service_id="web",
        namespace="default",
        desired_replicas=3,
        ready_replicas=2,
        revision=5,
        observed_revision=4,
        message="2/3 ready",
        rollout=types_pb2.Rollout(
            state=types_pb2.ROLLOUT_STATE_FAILED,
            reason="CRASH_LOOP",
            message="replica 0 exited 3 times in a row",
        ),
        updated_at=timestamp_pb2.Timestamp(seconds=3600 * 10 + 61),
    )
    assert render.rollout_header_line().split() == [
        "TIME",
        "REVISION",
        "ROLLOUT",
        "READY",
        "MESSAGE",
    ]
    assert render.rollout_line(status).split() == [
        "10:01:01", "5", "(runs", "4)", "FAILED", "2/3", "2/3", "ready",
    ]  # fmt: skip
    assert render.rollout_outcome(status) == (
        "rollout of default/web to revision 5: FAILED: CRASH_LOOP: replica 0 exited 3 times "
        "in a row (2/3 ready, replicas run revision 4)"
    )


def test_status_shows_the_revision_and_the_rollout() -> None:
    status = types_pb2.DeploymentStatus(
        service_id="web",
        namespace="default",
        revision=3,
        observed_revision=2,
        rollout=types_pb2.Rollout(
            state=types_pb2.ROLLOUT_STATE_FAILED, reason="CRASH_LOOP", message="exits\x1b[2J"
        ),
    )
    lines = render.status(status).splitlines()
    assert "revision: 3 (runs 2)" in lines
    assert "rollout:  FAILED (CRASH_LOOP): exits\\x1b[2J" in lines
    assert not any(
        line.startswith("revision")
        for line in render.status(types_pb2.DeploymentStatus()).splitlines()
    )


def test_history_table_notes_rollbacks() -> None:
    history = [
        types_pb2.Revision(number=4, rollback_of=2, automatic=True, change_cause=""),
        types_pb2.Revision(
            number=3,
            rollback_of=1,
            change_cause="back to a",
            created_at=timestamp_pb2.Timestamp(seconds=86400),
        ),
        types_pb2.Revision(
            number=2,
            change_cause="mode b",
            config_version="7",
            spec=types_pb2.DeploymentSpec(command=["sh", "-c", "exit 3"]),
        ),
    ]
    lines = render.revisions(history).splitlines()
    assert lines[0].split() == ["REVISION", "CREATED", "CHANGE-CAUSE", "NOTE"]
    assert lines[1].split() == ["4", "-", "-", "automatic", "rollback", "to", "2"]
    assert lines[2].split() == [
        "3",
        "1970-01-02T00:00:00Z",
        "back",
        "to",
        "a",
        "rollback",
        "to",
        "1",
    ]
    wide = render.revisions(history, wide=True).splitlines()
    assert wide[0].split()[-2:] == ["CONFIG", "RUNS"]
    assert wide[3].endswith("7       sh -c 'exit 3'")
    assert render.revisions([]) == "no revisions"


# -- the commands over gRPC (memory provider) ---------------------------------------------


class _Run:
    def __init__(
        self, inproc: InProcess, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self._target = inproc.target
        self._capsys = capsys
        monkeypatch.setenv("ALPHASWARM_CONFIG", "/nonexistent/alphaswarm.yaml")

    async def __call__(self, *argv: str) -> tuple[int, str, str]:
        args = cli.parse_args(["--target", self._target, *argv])
        stream = io.StringIO()
        code = await cli.run(args, Output(args.output, stream=stream, env={}))
        return code, stream.getvalue(), self._capsys.readouterr().err


@pytest.fixture
def alphaswarm(
    inproc: InProcess, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> _Run:
    return _Run(inproc, capsys, monkeypatch)


async def test_wait_dry_run_history_undo_and_conflicts(inproc: InProcess, alphaswarm: _Run) -> None:
    code, out, err = await alphaswarm(
        "start", "web", "--image", "web:1", "--change-cause", "first", "--wait"
    )
    assert (code, err) == (0, ""), err
    assert out.splitlines()[0] == "default/web: revision 1; waiting for its rollout"
    assert out.splitlines()[-1].startswith("rollout of default/web to revision 1: SUCCEEDED")

    # A dry run shows the diff and the revision, and changes nothing.
    code, out, err = await alphaswarm("start", "web", "--image", "web:2", "--dry-run")
    assert (code, err) == (0, "")
    assert "computed against revision 1" in out and "~ spec.image: web:1 -> web:2" in out
    assert "--expected-revision 1" in out
    assert (await inproc.client.get_status("web")).revision == 1
    code, out, _ = await alphaswarm(
        "config", "set", "web", "secret.K=hidden", "--dry-run", "-o", "json"
    )
    plan = json.loads(out)["plan"]
    assert plan["changes"] == [
        {"path": "config['secret.K']", "oldValue": "", "newValue": "<secret>"}
    ]
    assert "hidden" not in out

    code, _, err = await alphaswarm(
        "start", "web", "--image", "web:2", "--expected-revision", "1", "--change-cause", "two"
    )
    assert (code, err) == (0, "")
    code, out, err = await alphaswarm(
        "start", "web", "--image", "web:3", "--expected-revision", "1"
    )
    assert (code, out) == (1, "")
    assert err.startswith("error: ABORTED: ") and "REVISION_CONFLICT" in err
    with pytest.raises(RevisionConflict) as conflict:
        await inproc.client.start_deployment(service_id="web", image="web:3", expected_revision=1)
    assert conflict.value.metadata["current_revision"] == "2"

    # A rollout that fails: exit 4, its reason and message on stderr.
    code, out, err = await alphaswarm(
        "start", "web", "--image", "web:crash", "--wait", "--change-cause", "bad"
    )
    assert code == EXIT_ROLLOUT_FAILED, err
    assert err.startswith(
        "error: rollout of default/web to revision 3: FAILED: CRASH_LOOP: replicas exit at once ("
    )
    assert len(err.splitlines()) == 1
    code, _, err = await alphaswarm("rollout", "status", "web")
    assert code == EXIT_ROLLOUT_FAILED and "CRASH_LOOP" in err

    code, out, err = await alphaswarm("rollout", "undo", "web", "--to-revision", "1", "--wait")
    assert code == 0, err
    assert (await inproc.client.get_status("web")).image == "web:1"
    code, out, _ = await alphaswarm("rollout", "history", "web")
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [row[0] for row in rows] == ["4", "3", "2", "1"]
    assert rows[0][-3:] == ["rollback", "to", "1"] and rows[1][2] == "bad"
    code, out, _ = await alphaswarm("rollout", "history", "web", "-o", "name")
    assert out.split() == ["4", "3", "2", "1"]
    code, out, _ = await alphaswarm("rollout", "history", "web", "-o", "yaml")
    assert "rollbackOf: '1'" in out and "changeCause: first" in out
    with pytest.raises(RevisionNotFound):
        await inproc.client.plan_rollback("web", to_revision=99)


async def test_wait_in_json_is_one_object_per_line(alphaswarm: _Run) -> None:
    code, out, err = await alphaswarm("-o", "json", "start", "web", "--image", "web:1", "--wait")
    assert (code, err) == (0, "")
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["status"]["revision"] == "1"  # the change's response, then each status
    assert lines[-1]["status"]["rollout"]["state"] == "ROLLOUT_STATE_SUCCEEDED"


async def test_a_wait_that_ends_first_is_an_unknown_outcome(
    inproc: InProcess, alphaswarm: _Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    await inproc.client.start_deployment(service_id="web", image="web:1")
    memory = await inproc.memory()
    status = await memory.status("web")
    assert status.rollout is not None
    stuck = dataclasses.replace(
        status,
        rollout=dataclasses.replace(
            status.rollout, state=RolloutState.IN_PROGRESS, finished_at=None
        ),
    )

    async def in_progress_forever(
        *_: object, **__: object
    ) -> AsyncGenerator[DeploymentStatus, None]:
        yield stuck
        await asyncio.Event().wait()

    monkeypatch.setattr(memory, "watch", in_progress_forever)
    code, out, err = await alphaswarm("rollout", "status", "web", "--wait-timeout", "0.5")
    assert code == EXIT_OUTCOME_UNKNOWN
    assert "IN_PROGRESS" in out.splitlines()[1]
    assert err.startswith("error: rollout of web: still in progress after 0.5s; outcome unknown")
    assert "'alphaswarm rollout status web'" in err


async def test_a_view_older_than_the_change_is_not_its_outcome(
    inproc: InProcess, alphaswarm: _Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An eventually consistent backend may answer the first watch with the previous
    # revision's finished rollout: the wait opens the watch again instead of ending.
    memory = await inproc.memory()
    real_watch = memory.watch
    opened: list[int] = []

    async def lagging(service_id: str, **kwargs: Any) -> AsyncGenerator[DeploymentStatus, None]:
        opened.append(1)
        async for status in real_watch(service_id, **kwargs):
            lag = 1 if len(opened) == 1 else 0
            yield dataclasses.replace(status, revision=status.revision - lag)

    monkeypatch.setattr(memory, "watch", lagging)
    await inproc.client.start_deployment(service_id="web", image="web:1")
    code, out, err = await alphaswarm("start", "web", "--image", "web:2", "--wait")
    assert (code, err) == (0, ""), err
    assert len(opened) == 2
    assert out.splitlines()[-1].startswith("rollout of default/web to revision 2: SUCCEEDED")


async def test_without_revisions_wait_says_the_change_was_made(alphaswarm: _Run) -> None:
    code, _, err = await alphaswarm(
        "--provider", "plain", "start", "web", "--image", "web:1", "--wait"
    )
    assert code == 1
    assert "UNIMPLEMENTED" in err and "the change was made" in err


# -- the Python client's rollout methods ------------------------------------------------------


def test_every_async_method_has_a_blocking_twin() -> None:
    public = {
        name
        for name, member in vars(AlphaswarmClient).items()
        if not name.startswith("_")
        and (inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member))
    }
    assert public - {"close"} <= set(vars(SyncAlphaswarmClient)), public


async def test_plans_revisions_and_rollback_through_the_blocking_client(inproc: InProcess) -> None:
    def blocking_calls() -> None:
        with SyncAlphaswarmClient(inproc.target, timeout=10) as client:
            created = client.plan_start(service_id="sync", image="web:1", expected_revision=-1)
            assert created.plan.action == types_pb2.PLAN_ACTION_CREATE
            assert not created.HasField("status")
            client.start_deployment(service_id="sync", image="web:1", change_cause="one")
            client.start_deployment(service_id="sync", image="web:2", expected_revision=1)
            scale = client.plan_scale("sync", 3)
            assert (scale.plan.revision, scale.plan.action) == (2, types_pb2.PLAN_ACTION_IN_PLACE)
            config = client.plan_config("sync", set={"secret.K": "v"})
            assert [c.new_value for c in config.plan.changes] == ["<secret>"]
            back = client.plan_rollback("sync")
            assert [(c.path, c.old_value, c.new_value) for c in back.plan.changes] == [
                ("spec.image", "web:2", "web:1")
            ]
            assert client.get_status("sync").revision == 2  # plans change nothing
            assert client.rollback_deployment("sync", change_cause="undo").revision == 3
            page = client.list_revisions("sync", page_size=2)
            assert [r.number for r in page.revisions] == [3, 2] and page.next_page_token
            history = list(client.iter_revisions("sync", page_size=2))
            assert [(r.number, r.rollback_of, r.change_cause) for r in history] == [
                (3, 1, "undo"), (2, 0, ""), (1, 0, "one"),
            ]  # fmt: skip
            with contextlib.closing(client.watch("sync", until_rollout_done=True)) as statuses:
                final = list(statuses)[-1]
            assert final.rollout.state == types_pb2.ROLLOUT_STATE_SUCCEEDED
            with pytest.raises(RevisionConflict):
                client.stop_deployment("sync", expected_revision=2)
            with pytest.raises(RevisionConflict):
                client.delete_deployment("sync", expected_revision=2)
            assert client.delete_deployment("sync", expected_revision=3)

    await asyncio.to_thread(blocking_calls)
