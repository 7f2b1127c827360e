"""DeleteDeployment on the local provider, checked against the machine itself: the process
table, the cgroups, the state database read with sqlite3, and the files of the state
directory (secrets included)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from pathlib import Path

import pytest

from alphaswarm_controller.providers.local import LocalProvider
from alphaswarm_core.providers.protocol import (
    ConfigMapPatch,
    DeploymentNotFoundError,
    LogQuery,
)
from alphaswarm_core.testing import collect_logs, ready, unique_name, wait_for
from alphaswarm_core.testing.contract import wait_for_logs
from tests.waiting import until

from .support import (
    all_sleepers,
    command_spec,
    escaping_tree,
    local_env,
    machine_leftovers,
    marked_processes,
    opened,
    pids,
    sleep_tokens,
    sleepers,
)

MODES = pytest.mark.parametrize("cgroup", ["on", "off"], ids=["cgroup", "subreaper"])


@MODES
async def test_delete_leaves_nothing_of_an_escaping_tree_its_secrets_or_its_logs(
    tmp_path: Path, local_marker: str, cgroup: str
) -> None:
    state = tmp_path / "state"
    tokens = sleep_tokens(4)
    env = local_env(
        state,
        ALPHASWARM_LOCAL_CGROUP=cgroup,
        ALPHASWARM_LOCAL_STOP_GRACE_SECONDS="1",
        ALPHASWARM_LOCAL_SWEEP_SECONDS="0.2",
    )
    provider = await opened(env)
    namespace = unique_name("ns")
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    try:
        sh, flag, script = escaping_tree(tokens)
        doomed = command_spec("doomed", namespace, local_marker, (sh, flag, f"echo up; {script}"))
        await provider.start(doomed)
        await provider.apply_config(
            ConfigMapPatch("doomed", namespace, set={"secret.token": secret, "PLAIN": "x"})
        )
        kept = ("sh", "-c", "echo still here; exec sleep 300")
        await provider.start(command_spec("kept", namespace, local_marker, kept))
        await wait_for(provider, "doomed", namespace, ready(1))
        await until(lambda: all(sleepers(t) for t in (tokens[0], tokens[1], tokens[3])), "the tree")
        await wait_for_logs(provider, "doomed", namespace, bool)
        assert len(machine_leftovers(state, "doomed", namespace)) >= 3, "the check sees it"

        assert await provider.delete("doomed", namespace=namespace) is True

        assert machine_leftovers(state, "doomed", namespace) == []
        assert {t: p for t, p in all_sleepers(tokens).items() if p} == {}
        for path in state.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), f"the secret is still in {path}"
        await wait_for(provider, "kept", namespace, ready(1))  # its neighbour is untouched
        assert [e.text for e in await collect_logs(provider, "kept", namespace, LogQuery())] == [
            "still here"
        ]
        assert await provider.delete("kept", namespace=namespace) is True
        assert not (state / "local" / "logs" / namespace).exists(), "the last one takes its dir"
    finally:
        await provider.close()


async def test_changes_waiting_behind_a_delete_resurrect_nothing(
    provider: LocalProvider, namespace: str, local_marker: str, tmp_path: Path
) -> None:
    await provider.start(command_spec("racy", namespace, local_marker, replicas=2))
    await wait_for(provider, "racy", namespace, ready(2))
    results = await asyncio.gather(
        provider.delete("racy", namespace=namespace),
        provider.scale("racy", 3, namespace=namespace),
        provider.apply_config(ConfigMapPatch("racy", namespace, set={"K": "v"})),
        provider.stop("racy", namespace=namespace),
        return_exceptions=True,
    )
    assert results[0] is True
    assert [type(result) for result in results[1:]] == [DeploymentNotFoundError] * 3
    assert machine_leftovers(tmp_path / "state", "racy", namespace) == []
    assert marked_processes(local_marker) == []
    assert await provider.list_deployments(namespace=namespace) == []


async def test_a_start_racing_a_delete_of_its_name_starts_afresh(
    provider: LocalProvider, namespace: str, local_marker: str, tmp_path: Path
) -> None:
    talk = ("sh", "-c", "echo old $$; exec sleep 300")
    await provider.start(command_spec("same", namespace, local_marker, talk, replicas=2))
    await provider.apply_config(ConfigMapPatch("same", namespace, set={"secret.key": "v"}))
    old = pids(await wait_for(provider, "same", namespace, ready(2)))
    fresh = command_spec("same", namespace, local_marker, ("sh", "-c", "echo new; exec sleep 300"))

    deleted, started = await asyncio.gather(
        provider.delete("same", namespace=namespace), provider.start(fresh)
    )

    assert deleted is True and started.desired_replicas == 1
    config = await provider.get_config("same", namespace=namespace)
    assert (config.data, config.version) == ({}, "1"), "the old config went with it"
    status = await wait_for(provider, "same", namespace, ready(1))
    assert sorted(marked_processes(local_marker)) == pids(status)
    assert not set(old) & set(pids(status))
    entries = await wait_for_logs(provider, "same", namespace, bool)
    assert [e.text for e in entries] == ["new"], "the old replicas' lines went with it"

    # The other order: the start converges first, then the delete removes it all.
    started, deleted = await asyncio.gather(
        provider.start(fresh), provider.delete("same", namespace=namespace)
    )
    assert deleted is True
    with pytest.raises(DeploymentNotFoundError):
        await provider.status("same", namespace=namespace)
    assert machine_leftovers(tmp_path / "state", "same", namespace) == []


async def test_logs_of_a_deployment_the_store_no_longer_has_go_at_start_up(
    tmp_path: Path, local_marker: str
) -> None:
    """A delete that the server did not finish (killed after the row went)."""
    state = tmp_path / "state"
    env = local_env(state)
    namespace = unique_name("ns")
    provider = await opened(env)
    try:
        for name in ("gone", "kept"):
            talk = ("sh", "-c", f"echo {name}; exec sleep 300")
            await provider.start(command_spec(name, namespace, local_marker, talk))
            await wait_for_logs(provider, name, namespace, bool)
    finally:
        await provider.close()
    database = state / "local" / "state.sqlite3"
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        db.execute("DELETE FROM deployments WHERE service_id = 'gone'")
    provider = await opened(env)
    try:
        logs = state / "local" / "logs" / namespace
        assert sorted(path.name for path in logs.iterdir()) == ["kept"]
        assert machine_leftovers(state, "gone", namespace) == []
        await wait_for(provider, "kept", namespace, ready(1))
    finally:
        await provider.close()
