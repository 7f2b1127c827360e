"""Revisions and rollouts of the local provider, against the real process table.

A crash-looping revision FAILS without taking the old replicas down, the
progress deadline fails a rollout whose replica never gets ready, auto_rollback
brings back the last good environment, a failed rollout survives a restart of
the server, a stale expected_revision changes nothing (the database is read with
sqlite3 itself), and the history is bounded.
"""

from __future__ import annotations

import contextlib
import resource
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from alphaswarm_controller.providers.local.store import HISTORY
from alphaswarm_core.call import making_change
from alphaswarm_core.providers.protocol import (
    ChangeRequest,
    ConfigMapPatch,
    DeploymentState,
    DeploymentStatus,
    RevisionConflict,
    RevisionNotFound,
    RolloutState,
)
from alphaswarm_core.testing import ready, unique_name, wait_for
from alphaswarm_core.testing.contract import rollout_done

from .support import (
    CRASHER,
    alive,
    command_spec,
    environ_of,
    local_env,
    marked_processes,
    opened,
    pids,
)

#: Found without a PATH search, so exec's own error is what the provider sees.
SLEEP = (shutil.which("sleep") or "/bin/sleep", "300")

#: Refuses to run with MODE=bad (exit 4), else sleeps: a config change can break it.
PICKY = ("sh", "-c", 'if [ "$MODE" = bad ]; then echo "bad mode" >&2; exit 4; fi; exec sleep 300')


def pid_in_slot(status: DeploymentStatus, slot: int) -> int:
    (pid,) = [
        int(i.instance_id.rsplit("@", 1)[1])
        for i in status.instances
        if i.instance_id.startswith(f"{status.service_id}-{slot}@")
    ]
    return pid


def failed_with(reason: str) -> Callable[[DeploymentStatus], bool]:
    def check(status: DeploymentStatus) -> bool:
        rollout = status.rollout
        return (
            rollout is not None
            and rollout.state is RolloutState.FAILED
            and (rollout.reason == reason)
        )

    return check


def rows(state_dir: Path, query: str, *args: object) -> list[tuple[object, ...]]:
    """Read the provider's database with sqlite3 itself, read-only."""
    database = state_dir / "local" / "state.sqlite3"
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return list(db.execute(query, args).fetchall())


async def test_a_crash_looping_revision_fails_and_the_old_replicas_keep_serving(
    tmp_path: Path, local_marker: str
) -> None:
    provider = await opened(local_env(tmp_path / "state"))
    namespace = unique_name("ns")
    try:
        good = command_spec("careful", namespace, local_marker, replicas=2)
        await provider.start(good)
        before = await wait_for(provider, "careful", namespace, rollout_done(1))
        survivor = pid_in_slot(before, 1)
        broken = command_spec("careful", namespace, local_marker, CRASHER, replicas=2)
        started = await provider.start(broken)
        assert started.revision == 2
        assert started.rollout is not None and started.rollout.state is RolloutState.IN_PROGRESS

        failed = await wait_for(provider, "careful", namespace, rollout_done(2))
        rollout = failed.rollout
        assert rollout is not None and rollout.state is RolloutState.FAILED
        assert rollout.reason == "CRASH_LOOP"
        assert "replica 0 of revision 2 exited 3 times in a row" in rollout.message
        assert "exited with code 3" in rollout.message
        assert "no further replica replaced" in rollout.message
        assert "replica(s) 0 back on the revision they ran before" in rollout.message
        assert rollout.finished_at is not None
        assert alive(survivor) and pid_in_slot(failed, 1) == survivor, "slot 1 was never touched"
        assert failed.state is DeploymentState.DEGRADED
        assert "rollout of revision 2 failed (CRASH_LOOP)" in failed.message
        progressing = {c.type: c for c in failed.conditions}["Progressing"]
        assert (progressing.status, progressing.reason) == (False, "CRASH_LOOP")

        back = await wait_for(provider, "careful", namespace, lambda s: s.ready_replicas == 2)
        assert back.observed_revision == 1, "every replica runs revision 1 again"
        assert {c.type: c.status for c in back.conditions}["Available"] is True
        assert all("revision 1" in i.message for i in back.instances)
        assert sorted(marked_processes(local_marker)) == pids(back)

        # A new slot joins what works, not the failed revision.
        await provider.scale("careful", 3, namespace=namespace)
        grown = await wait_for(provider, "careful", namespace, lambda s: s.ready_replicas == 3)
        assert grown.revision == 2 and grown.observed_revision == 1
        assert environ_of(pid_in_slot(grown, 2))["ALPHASWARM_REPLICA"] == "2"

        # Going back to the working spec is a new revision that restarts nothing: the
        # replicas already run exactly that.
        running = pids(grown)
        fixed = await provider.start(command_spec("careful", namespace, local_marker, replicas=3))
        assert fixed.revision == 3
        done = await wait_for(provider, "careful", namespace, rollout_done(3))
        assert done.rollout is not None and done.rollout.state is RolloutState.SUCCEEDED
        assert done.observed_revision == 3 and done.state is DeploymentState.RUNNING
        assert pids(done) == running
    finally:
        await provider.close()


async def test_a_superseded_rollout_falls_back_to_what_worked(
    tmp_path: Path, local_marker: str
) -> None:
    """Two broken changes in a row: the slot goes back to the good revision, not to the
    broken one the second change superseded."""
    provider = await opened(local_env(tmp_path / "state"))
    namespace = unique_name("ns")
    try:
        await provider.start(command_spec("twice", namespace, local_marker))
        await wait_for(provider, "twice", namespace, rollout_done(1))
        await provider.start(command_spec("twice", namespace, local_marker, CRASHER))
        again = ("sh", "-c", "exit 5")
        await provider.start(command_spec("twice", namespace, local_marker, again))
        failed = await wait_for(provider, "twice", namespace, rollout_done(3))
        assert failed.rollout is not None and failed.rollout.reason == "CRASH_LOOP"
        back = await wait_for(provider, "twice", namespace, lambda s: s.ready_replicas == 1)
        assert back.observed_revision == 1
        assert marked_processes(local_marker) == pids(back)
    finally:
        await provider.close()


async def test_no_progress_within_the_deadline_fails_the_rollout(
    tmp_path: Path, local_marker: str
) -> None:
    """A replica must live ALPHASWARM_LOCAL_READY_SECONDS to be ready; a deadline shorter
    than that fails the rollout, and the replica goes back to revision 1."""
    provider = await opened(local_env(tmp_path / "state", ALPHASWARM_LOCAL_READY_SECONDS="3"))
    namespace = unique_name("ns")
    try:
        await provider.start(command_spec("slow", namespace, local_marker, env={"V": "1"}))
        first = await wait_for(provider, "slow", namespace, rollout_done(1))
        assert first.rollout is not None and first.rollout.state is RolloutState.SUCCEEDED
        hasty = command_spec("slow", namespace, local_marker, env={"V": "2"})
        await provider.start(replace(hasty, progress_deadline_seconds=1))
        failed = await wait_for(provider, "slow", namespace, rollout_done(2))
        assert failed.rollout is not None
        assert failed.rollout.reason == "PROGRESS_DEADLINE_EXCEEDED", failed.rollout
        assert "no progress for 1 s" in failed.rollout.message
        back = await wait_for(provider, "slow", namespace, lambda s: s.ready_replicas == 1)
        assert back.observed_revision == 1
        assert environ_of(pids(back)[0])["V"] == "1"
    finally:
        await provider.close()


async def test_auto_rollback_restores_the_last_good_config(
    tmp_path: Path, local_marker: str
) -> None:
    provider = await opened(local_env(tmp_path / "state"))
    namespace = unique_name("ns")
    try:
        spec = replace(
            command_spec("picky", namespace, local_marker, PICKY, replicas=2), auto_rollback=True
        )
        await provider.start(spec)
        await wait_for(provider, "picky", namespace, rollout_done(1))
        await provider.apply_config(ConfigMapPatch("picky", namespace, set={"MODE": "good"}))
        good = await wait_for(provider, "picky", namespace, rollout_done(2))
        assert good.rollout is not None and good.rollout.state is RolloutState.SUCCEEDED
        with making_change(ChangeRequest(change_cause="try bad")):
            await provider.apply_config(ConfigMapPatch("picky", namespace, set={"MODE": "bad"}))
        rolled = await wait_for(provider, "picky", namespace, rollout_done(4))
        assert rolled.rollout is not None and rolled.rollout.state is RolloutState.SUCCEEDED
        history = await provider.list_revisions("picky", namespace=namespace)
        newest, failed = history[0], history[1]
        assert (newest.number, newest.rollback_of, newest.automatic) == (4, 2, True)
        assert "the rollout of revision 3 failed (CRASH_LOOP)" in newest.change_cause
        assert (failed.number, failed.change_cause, failed.config["MODE"]) == (3, "try bad", "bad")
        settled = await wait_for(provider, "picky", namespace, ready(2))
        assert all(environ_of(pid)["MODE"] == "good" for pid in pids(settled))
        config = await provider.get_config("picky", namespace=namespace)
        assert (config.data, config.version) == ({"MODE": "good"}, "4")
    finally:
        await provider.close()


async def test_a_failed_rollout_stays_failed_across_a_restart(
    tmp_path: Path, local_marker: str
) -> None:
    env = local_env(tmp_path / "state")
    namespace = unique_name("ns")
    provider = await opened(env)
    try:
        await provider.start(command_spec("firm", namespace, local_marker, PICKY, replicas=2))
        await wait_for(provider, "firm", namespace, rollout_done(1))
        await provider.apply_config(ConfigMapPatch("firm", namespace, set={"MODE": "bad"}))
        await wait_for(provider, "firm", namespace, failed_with("CRASH_LOOP"))
    finally:
        await provider.close()
    provider = await opened(env)
    try:
        status = await wait_for(provider, "firm", namespace, lambda s: s.ready_replicas == 2)
        assert (status.revision, status.observed_revision) == (2, 1)
        assert status.rollout is not None and status.rollout.state is RolloutState.FAILED
        assert all("MODE" not in environ_of(pid) for pid in pids(status)), "revision 1's env"
        assert rows(tmp_path / "state", "SELECT ordinal, revision FROM slots ORDER BY 1") == [
            (0, 1),
            (1, 1),
        ]
    finally:
        await provider.close()


async def test_a_stale_expected_revision_changes_nothing(tmp_path: Path, local_marker: str) -> None:
    state = tmp_path / "state"
    provider = await opened(local_env(state))
    namespace = unique_name("ns")
    try:
        await provider.start(command_spec("cas", namespace, local_marker))
        settled = await wait_for(provider, "cas", namespace, rollout_done(1))
        snapshot = rows(state, "SELECT * FROM deployments")
        history = rows(state, "SELECT * FROM revisions")
        stale = ChangeRequest(expected_revision=5)
        with making_change(stale):
            with pytest.raises(RevisionConflict) as conflict:
                await provider.apply_config(ConfigMapPatch("cas", namespace, set={"K": "v"}))
            assert conflict.value.metadata == {"expected_revision": "5", "current_revision": "1"}
            with pytest.raises(RevisionConflict):
                await provider.rollback("cas", 1, namespace=namespace)
            with pytest.raises(RevisionConflict):
                await provider.stop("cas", namespace=namespace)
            with pytest.raises(RevisionConflict):
                await provider.delete("cas", namespace=namespace)
        assert rows(state, "SELECT * FROM deployments") == snapshot
        assert rows(state, "SELECT * FROM revisions") == history
        assert pids(await provider.status("cas", namespace=namespace)) == pids(settled)
        with making_change(ChangeRequest(expected_revision=1)):
            await provider.stop("cas", namespace=namespace)
            assert await provider.delete("cas", namespace=namespace)
        assert rows(state, "SELECT count(*) FROM revisions") == [(0,)], "history goes too"
    finally:
        await provider.close()


async def test_history_keeps_the_newest_revisions_and_what_still_runs(
    tmp_path: Path, local_marker: str
) -> None:
    state = tmp_path / "state"
    provider = await opened(local_env(state, ALPHASWARM_LOCAL_ROLLOUT_EXITS="1"))
    namespace = unique_name("ns")
    try:
        await provider.start(command_spec("long", namespace, local_marker, PICKY))
        await wait_for(provider, "long", namespace, rollout_done(1))
        # Every change fails, so the replica keeps running revision 1 (the last good one).
        for n in range(2, HISTORY + 3):
            await provider.apply_config(
                ConfigMapPatch("long", namespace, set={"MODE": "bad", "N": str(n)})
            )
            failed = await wait_for(provider, "long", namespace, rollout_done(n))
            assert failed_with("CRASH_LOOP")(failed), failed.rollout
        history = await provider.list_revisions("long", namespace=namespace)
        newest = HISTORY + 2
        assert [r.number for r in history] == [*range(newest, newest - HISTORY, -1), 1]
        assert rows(state, "SELECT count(*) FROM revisions") == [(HISTORY + 1,)]
        with pytest.raises(RevisionNotFound):
            await provider.rollback("long", 2, namespace=namespace)
        await provider.rollback("long", 1, namespace=namespace)
        done = await wait_for(provider, "long", namespace, rollout_done(newest + 1))
        assert done.rollout is not None and done.rollout.state is RolloutState.SUCCEEDED
        assert [r.number for r in await provider.list_revisions("long", namespace=namespace)] == [
            *range(newest + 1, newest + 1 - HISTORY, -1)
        ], "revision 1 runs no more and is not the last good one: it left the history"
    finally:
        await provider.close()


@pytest.mark.parametrize("command", [SLEEP, ("sleep", "300")], ids=["absolute", "path-search"])
async def test_an_environment_too_large_to_exec_is_config_unreadable(
    tmp_path: Path, local_marker: str, command: tuple[str, ...]
) -> None:
    """exec refuses an environment beyond a quarter of the stack limit (E2BIG): the
    replicas cannot receive their config, and retrying cannot help. Through a PATH
    search exec may report another error (an earlier directory the replica user cannot
    search): the provider still names the cause."""
    provider = await opened(local_env(tmp_path / "state"))
    namespace = unique_name("ns")
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    try:
        await provider.start(command_spec("big", namespace, local_marker, command))
        await wait_for(provider, "big", namespace, rollout_done(1))
        resource.setrlimit(resource.RLIMIT_STACK, (1024 * 1024, hard))  # replicas inherit it
        big = {f"K{n}": "x" * 60_000 for n in range(8)}  # ~480 KB, within the config bounds
        await provider.apply_config(ConfigMapPatch("big", namespace, set=big))
        failed = await wait_for(provider, "big", namespace, rollout_done(2))
        assert failed.rollout is not None and failed.rollout.reason == "CONFIG_UNREADABLE"
        assert "E2BIG" in failed.rollout.message
    finally:
        resource.setrlimit(resource.RLIMIT_STACK, (soft, hard))
        await provider.close()
