"""The local provider's trust boundary, attacked with real processes and real files.

Who replicas run as (never root by accident), what they can read (not the state
directory), what they inherit (not the server's environment or cwd), which
commands and directories they may use (the allow-lists), and that no process a
replica starts survives Stop, scale-down, a config roll, close or a crash of
the server, however it tries to escape (setsid, double fork, ``env -i``,
ignoring SIGTERM). The escape tests run with a cgroup per replica (required:
``on``) and with the subreaper fallback (``off``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import pwd
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alphaswarm_controller.providers.local import LocalProvider
from alphaswarm_controller.providers.local.containment import Containment
from alphaswarm_controller.providers.local.identity import uid_taken
from alphaswarm_controller.providers.local.proctable import OWNER_ENV
from alphaswarm_controller.providers.local.settings import DEFAULT_UID_RANGE
from alphaswarm_controller.providers.local.store import spec_to_json
from alphaswarm_core.providers.protocol import (
    ConfigMapPatch,
    DeploymentState,
    InfrastructureProviderUnavailable,
    InvalidSpecError,
)
from alphaswarm_core.testing import ready, unique_name, wait_for
from tests.waiting import until

from .support import (
    MARKER_ENV,
    alive,
    all_sleepers,
    command_spec,
    environ_of,
    escaping_tree,
    local_env,
    marked_processes,
    opened,
    pids,
    proc_status,
    read_log_until,
    replica_cgroups,
    sleep_tokens,
    sleepers,
)

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="the root-server path needs a root test run")
SLEEP = os.path.realpath("/bin/sleep")
MODES = pytest.mark.parametrize("cgroup", ["on", "off"], ids=["cgroup", "subreaper"])


def nobody() -> pwd.struct_passwd:
    return pwd.getpwnam("nobody")


# -- who a replica is ---------------------------------------------------------------------------


@needs_root
async def test_a_root_server_gives_each_namespace_its_own_uid_by_default(
    tmp_path: Path, local_marker: str
) -> None:
    provider = await opened(local_env(tmp_path / "state"))
    try:
        await provider.start(command_spec("a", "team-a", local_marker))
        await provider.start(command_spec("b", "team-b", local_marker))
        (pid_a,) = pids(await wait_for(provider, "a", "team-a", ready(1)))
        (pid_b,) = pids(await wait_for(provider, "b", "team-b", ready(1)))
        uid_a, uid_b = (int(proc_status(pid)["Uid"].split()[0]) for pid in (pid_a, pid_b))
        first, last = DEFAULT_UID_RANGE
        assert first <= uid_a <= last and first <= uid_b <= last
        assert uid_a != uid_b, "replicas of two namespaces never share a uid"
    finally:
        await provider.close()


@needs_root
async def test_root_server_runs_replicas_as_nobody_without_groups(
    tmp_path: Path, local_marker: str
) -> None:
    env = local_env(
        tmp_path / "state",
        CONTROLLER_SECRET="do-not-leak",
        TMPDIR="/root/private-tmp",
        ALPHASWARM_LOCAL_UID_RANGE="off",  # one user for every namespace, asked for
    )
    provider = await opened(env)
    namespace = unique_name("ns")
    try:
        await provider.start(command_spec("who", namespace, local_marker))
        (pid,) = pids(await wait_for(provider, "who", namespace, ready(1)))
        status = proc_status(pid)
        user = nobody()
        assert status["Uid"].split() == [str(user.pw_uid)] * 4, "real, effective, saved, fs"
        assert status["Gid"].split() == [str(user.pw_gid)] * 4
        assert status["Groups"] == "", "supplementary groups dropped (root's are not kept)"
        assert status["NoNewPrivs"] == "1", "set-uid binaries cannot give it root back"
        seen = environ_of(pid)
        assert (seen["HOME"], seen["USER"], seen["LOGNAME"]) == (user.pw_dir, "nobody", "nobody")
        assert "CONTROLLER_SECRET" not in seen and "TMPDIR" not in seen
        allowed = {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "HOME", "USER", "LOGNAME"}
        markers = {
            "ALPHASWARM_LOCAL_STATE_DIR",
            "ALPHASWARM_SERVICE_ID",
            "ALPHASWARM_NAMESPACE",
            "ALPHASWARM_REPLICA",
            "ALPHASWARM_TEST_MARKER",
        }
        assert set(seen) <= allowed | markers, set(seen) - allowed - markers
        assert os.readlink(f"/proc/{pid}/cwd") == "/", "not the server's working directory"
    finally:
        await provider.close()


@needs_root
@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ({"ALPHASWARM_LOCAL_RUN_AS": "root"}, "ALPHASWARM_LOCAL_ALLOW_ROOT"),
        ({"ALPHASWARM_LOCAL_RUN_AS": "0:0"}, "ALPHASWARM_LOCAL_ALLOW_ROOT"),
        ({"ALPHASWARM_LOCAL_RUN_AS": "nobody:root"}, "ALPHASWARM_LOCAL_ALLOW_ROOT"),
        ({"ALPHASWARM_LOCAL_RUN_AS": "no-such-user-xyz"}, "ALPHASWARM_LOCAL_RUN_AS"),
        ({"ALPHASWARM_LOCAL_RUN_AS": "nobody:no-such-group"}, "ALPHASWARM_LOCAL_RUN_AS"),
    ],
    ids=["root", "uid-0", "group-root", "unknown-user", "unknown-group"],
)
async def test_what_cannot_be_arranged_is_failed_precondition(
    tmp_path: Path, local_marker: str, setting: dict[str, str], named: str
) -> None:
    provider = LocalProvider(env=local_env(tmp_path / "state", **setting))
    with pytest.raises(InfrastructureProviderUnavailable) as refused:
        await provider.open()  # the pool keeps no provider that did not open: the server runs...
    assert refused.value.reason == "REPLICA_USER_UNAVAILABLE"
    try:
        with pytest.raises(InfrastructureProviderUnavailable) as caught:
            await provider.start(command_spec("web", unique_name("ns"), local_marker))
        assert caught.value.code == "FAILED_PRECONDITION"
        assert caught.value.reason == "REPLICA_USER_UNAVAILABLE"
        assert named in caught.value.message
        with pytest.raises(InfrastructureProviderUnavailable):
            await provider.list_deployments()  # ...and every call says why
        assert marked_processes(local_marker) == []
    finally:
        await provider.close()


@needs_root
@pytest.mark.parametrize(
    ("setting", "uid", "gid"),
    [
        ({"ALPHASWARM_LOCAL_ALLOW_ROOT": "true"}, 0, 0),
        ({"ALPHASWARM_LOCAL_RUN_AS": "daemon"}, 1, 1),
        ({"ALPHASWARM_LOCAL_RUN_AS": "daemon:nogroup"}, 1, 65534),
        ({"ALPHASWARM_LOCAL_RUN_AS": "4242:4343"}, 4242, 4343),
    ],
    ids=["allow-root", "user", "user-group", "numeric"],
)
async def test_run_as_and_the_root_opt_in(
    tmp_path: Path, local_marker: str, setting: dict[str, str], uid: int, gid: int
) -> None:
    provider = await opened(local_env(tmp_path / "state", **setting))
    namespace = unique_name("ns")
    try:
        await provider.start(command_spec("who", namespace, local_marker))
        (pid,) = pids(await wait_for(provider, "who", namespace, ready(1)))
        status = proc_status(pid)
        assert status["Uid"].split() == [str(uid)] * 4
        assert status["Gid"].split() == [str(gid)] * 4
    finally:
        await provider.close()


def _free_uids(count: int) -> str:
    """A uid range no user or group of this machine uses (for ALPHASWARM_LOCAL_UID_RANGE)."""
    first = 3_100_000 + (os.getpid() % 1000) * 100
    assert not any(uid_taken(uid) for uid in range(first, first + count))
    return f"{first}-{first + count - 1}"


@needs_root
async def test_one_uid_per_namespace_keeps_namespaces_apart(
    tmp_path: Path, local_marker: str
) -> None:
    uid_range = _free_uids(2)
    first = int(uid_range.split("-")[0])
    env = local_env(tmp_path / "state", ALPHASWARM_LOCAL_UID_RANGE=uid_range)
    provider = await opened(env)
    try:
        await provider.start(command_spec("vault", "bank", local_marker, replicas=2))
        await provider.apply_config(
            ConfigMapPatch("vault", "bank", set={"secret.token": "s3cr3t-of-the-bank"})
        )
        vault = pids(await wait_for(provider, "vault", "bank", ready(2)))
        uids = {proc_status(pid)["Uid"].split()[0] for pid in vault}
        assert uids == {str(first)}, "one namespace, one uid"
        target = vault[0]
        probe = (
            f'cat /proc/{target}/environ >/dev/null 2>&1; echo "environ=$?"; '
            f'kill -0 {target} 2>/dev/null; echo "signal=$?"; '
            "grep -l s3cr3t-of-the-bank /proc/[0-9]*/environ 2>/dev/null | wc -l "
            '| sed "s/^/found=/"; echo probe-done; exec sleep 300'
        )
        await provider.start(command_spec("mallory", "evil", local_marker, ("sh", "-c", probe)))
        (spy,) = pids(await wait_for(provider, "mallory", "evil", ready(1)))
        assert proc_status(spy)["Uid"].split()[0] == str(first + 1)
        log = await read_log_until(
            tmp_path / "state" / "local" / "logs" / "evil" / "mallory" / "0.log", "probe-done"
        )
        assert "environ=1" in log and "signal=1" in log and "found=0" in log, log
        with pytest.raises(InfrastructureProviderUnavailable) as caught:  # the range is used up
            await provider.start(command_spec("third", "other", local_marker))
        assert caught.value.reason == "REPLICA_USER_UNAVAILABLE"
        assert "ALPHASWARM_LOCAL_UID_RANGE" in caught.value.message
        assert await provider.list_deployments(namespace="other") == []
    finally:
        await provider.close()
    provider = await opened(env)
    try:  # the uids are the namespaces' for good
        vault = pids(await wait_for(provider, "vault", "bank", ready(2)))
        assert {proc_status(pid)["Uid"].split()[0] for pid in vault} == {str(first)}
    finally:
        await provider.close()


# -- what a replica can read --------------------------------------------------------------------


def _modes(state: Path) -> dict[str, str]:
    found = {".": f"{stat.S_IMODE(state.stat().st_mode):04o}"}
    for path in state.rglob("*"):
        found[str(path.relative_to(state))] = f"{stat.S_IMODE(path.lstat().st_mode):04o}"
    return found


def _private(modes: dict[str, str], state: Path) -> dict[str, str]:
    """The entries whose mode is not 0700 (directory) / 0600 (file)."""
    return {
        name: mode
        for name, mode in modes.items()
        if mode != ("0700" if (state / name).is_dir() else "0600")
    }


async def test_state_dir_is_private_whatever_the_umask(tmp_path: Path, local_marker: str) -> None:
    state = tmp_path / "state"
    env = local_env(state)
    namespace = unique_name("ns")
    old_umask = os.umask(0)  # the worst a service manager could hand the server
    try:
        provider = await opened(env)
        try:
            talker = ("sh", "-c", "echo hello; exec sleep 300")
            await provider.start(command_spec("logged", namespace, local_marker, talker))
            await provider.apply_config(
                ConfigMapPatch("logged", namespace, set={"secret.token": "s3cr3t"})
            )
            await wait_for(provider, "logged", namespace, ready(1))
            log = state / "local" / "logs" / namespace / "logged" / "0.log"
            await read_log_until(log, "hello")  # the server writes it at the first line
            modes = _modes(state)
            for name in (
                "local/state.sqlite3",
                "local/state.sqlite3-wal",
                "local/state.sqlite3-shm",
                "local/controller.lock",
                f"local/logs/{namespace}/logged/0.log",
            ):
                assert modes.get(name) == "0600", (name, modes)
            assert _private(modes, state) == {}, modes
        finally:
            await provider.close()
    finally:
        os.umask(old_umask)

    # What an older version (or a careless restore) leaves: everything world-readable.
    for path in [state, *state.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    provider = await opened(env)
    try:
        assert _private(_modes(state), state) == {}, "repaired at open"
        assert (await provider.get_config("logged", namespace=namespace)).version == "2"
    finally:
        await provider.close()


async def test_state_dir_of_another_user_or_a_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    (state / "local").symlink_to(real)  # a planted link: the server must not follow it
    provider = LocalProvider(env=local_env(state))
    with pytest.raises(InfrastructureProviderUnavailable) as refused:
        await provider.open()
    assert refused.value.reason == "STATE_DIR_INSECURE"
    try:
        with pytest.raises(InfrastructureProviderUnavailable) as caught:
            await provider.health()  # every later call says why
        assert caught.value.reason == "STATE_DIR_INSECURE"
        assert list(real.iterdir()) == [], "nothing was written through the link"
    finally:
        await provider.close()


@needs_root
async def test_replica_cannot_read_the_state_dir(tmp_path: Path, local_marker: str) -> None:
    state = tmp_path / "state"
    root = state / "local"
    provider = await opened(local_env(state))
    try:
        # Another tenant's secret, in the database and its WAL.
        await provider.start(command_spec("vault", "bank", local_marker))
        await provider.apply_config(
            ConfigMapPatch("vault", "bank", set={"secret.token": "s3cr3t-of-the-bank"})
        )
        targets = [root / "state.sqlite3", root / "state.sqlite3-wal", root / "controller.lock"]
        assert all(path.exists() for path in targets)
        probe = "; ".join(
            f'cat "{path}" >/dev/null 2>&1 && echo "READ {path.name}" || echo "DENIED {path.name}"'
            for path in targets
        )
        script = (
            f"{probe}; ls {state} >/dev/null 2>&1 && echo LISTED || echo UNLISTED; "
            f"echo probe-done; exec sleep 300"
        )
        await provider.start(command_spec("mallory", "evil", local_marker, ("sh", "-c", script)))
        log = await read_log_until(root / "logs" / "evil" / "mallory" / "0.log", "probe-done")
        assert "READ" not in log, log
        assert log.count("DENIED") == 3 and "UNLISTED" in log, log
    finally:
        await provider.close()


# -- commands and working directories ----------------------------------------------------------


async def test_allow_list_resolves_and_checks_command_and_cwd(
    tmp_path: Path, local_marker: str, shared_tmp: Path
) -> None:
    sleep = SLEEP
    link = shared_tmp / "innocent"
    link.symlink_to("/bin/sh")  # a name on the list's good side, pointing at a shell
    good_link = shared_tmp / "nap"
    good_link.symlink_to(sleep)
    work = shared_tmp / "work"
    work.mkdir()
    (shared_tmp / "bin").mkdir()
    state = tmp_path / "state"
    env = local_env(
        state,
        ALPHASWARM_LOCAL_ALLOWED_COMMANDS=f"{sleep}:{shared_tmp}/bin/",
        ALPHASWARM_LOCAL_ALLOWED_CWDS=f"{shared_tmp}/",
    )
    provider = await opened(env)
    namespace = unique_name("ns")
    try:
        refused = [
            ("sh", "-c", "sleep 300"),
            ("/bin/sh", "-c", "sleep 300"),
            (f"{shared_tmp}/bin/../innocent", "-c", "sleep 300"),  # ../ out of the prefix
            (str(link), "-c", "sleep 300"),
        ]
        for command in refused:
            with pytest.raises(InvalidSpecError) as caught:
                await provider.start(command_spec("x", namespace, local_marker, command))
            assert [v.field for v in caught.value.violations] == ["spec.command[0]"], command
            assert "ALPHASWARM_LOCAL_ALLOWED_COMMANDS" in caught.value.message
        spec = command_spec("nap", namespace, local_marker, (str(good_link), "300"))
        for cwd, why in [
            ("/", "ALPHASWARM_LOCAL_ALLOWED_CWDS"),
            (str(state / "local"), "server's state"),
            ("relative/dir", "absolute"),
        ]:
            bad = dataclasses.replace(spec, provider_options={"cwd": cwd})
            with pytest.raises(InvalidSpecError) as caught:
                await provider.start(bad)
            assert [v.field for v in caught.value.violations] == ["spec.provider_options['cwd']"]
            assert why in caught.value.message
        assert await provider.list_deployments(namespace=namespace) == [], "nothing was created"
        assert marked_processes(local_marker) == []

        allowed = dataclasses.replace(spec, provider_options={"cwd": str(work)})
        await provider.start(allowed)
        (pid,) = pids(await wait_for(provider, "nap", namespace, ready(1)))
        assert os.readlink(f"/proc/{pid}/exe") == sleep, "the checked file is what runs"
        assert os.readlink(f"/proc/{pid}/cwd") == str(work)
    finally:
        await provider.close()

    # The list tightened while the server was down: the stored deployment is not started.
    strict = {**env, "ALPHASWARM_LOCAL_ALLOWED_COMMANDS": "/bin/true"}
    provider = await opened(strict)
    try:
        status = await provider.status("nap", namespace=namespace)
        assert status.ready_replicas == 0 and "not started" in status.message, status
        assert marked_processes(local_marker) == []
        with pytest.raises(InvalidSpecError):
            await provider.scale("nap", 2, namespace=namespace)
        assert marked_processes(local_marker) == []
    finally:
        await provider.close()


# -- processes that try to escape ----------------------------------------------------------------


@MODES
async def test_stop_ends_every_process_of_an_escaping_tree(
    tmp_path: Path, local_marker: str, cgroup: str
) -> None:
    tokens = sleep_tokens(4)
    env = local_env(
        tmp_path / "state",
        ALPHASWARM_LOCAL_CGROUP=cgroup,
        ALPHASWARM_LOCAL_STOP_GRACE_SECONDS="1",
        ALPHASWARM_LOCAL_SWEEP_SECONDS="0.2",
    )
    provider = await opened(env)
    namespace = unique_name("ns")
    try:
        await provider.start(command_spec("escape", namespace, local_marker, escaping_tree(tokens)))
        await wait_for(provider, "escape", namespace, ready(1))
        # The setsid and env -i children keep their parent (the leader) while it lives;
        # the double-forked one may already be gone in subreaper mode (a stray).
        await until(lambda: all(sleepers(t) for t in (tokens[0], tokens[1], tokens[3])), "the tree")
        stopped = await provider.stop("escape", namespace=namespace)
        assert stopped.state is DeploymentState.STOPPED
        left = {t: p for t, p in all_sleepers(tokens).items() if p}
        assert left == {}, f"survived StopDeployment: {left}"
    finally:
        await provider.close()
    assert replica_cgroups(tmp_path / "state") == [], "close removes its cgroups"


@MODES
async def test_a_leader_that_escapes_leaves_nothing_behind(
    tmp_path: Path, local_marker: str, cgroup: str
) -> None:
    """``env -i setsid sleep``: setsid forks (the leader leads its group) and exits at once."""
    (token,) = sleep_tokens(1)
    env = local_env(
        tmp_path / "state", ALPHASWARM_LOCAL_CGROUP=cgroup, ALPHASWARM_LOCAL_SWEEP_SECONDS="0.2"
    )
    provider = await opened(env)
    namespace = unique_name("ns")
    try:
        command = ("env", "-i", "setsid", "sleep", token)
        await provider.start(command_spec("runaway", namespace, local_marker, command))
        counts: list[int] = []
        status = await provider.status("runaway", namespace=namespace)
        while status.restarts < 4:
            counts.append(len(sleepers(token)))
            await asyncio.sleep(0.05)
            status = await provider.status("runaway", namespace=namespace)
            assert len(counts) < 2000, status
        assert max(counts) <= 1, f"escaped sleepers accumulated: {counts}"
        await provider.stop("runaway", namespace=namespace)
        await until(lambda: not sleepers(token), "no sleeper left", within=5)
    finally:
        await provider.close()


@MODES
async def test_scale_down_and_config_roll_end_whole_trees(
    tmp_path: Path, local_marker: str, cgroup: str
) -> None:
    tag = sleep_tokens(1)[0].split(".")[1]
    script = (
        "trap '' TERM; setsid sleep 7${ALPHASWARM_REPLICA}1." + tag + " & "
        "exec sleep 7${ALPHASWARM_REPLICA}2." + tag
    )
    env = local_env(
        tmp_path / "state",
        ALPHASWARM_LOCAL_CGROUP=cgroup,
        ALPHASWARM_LOCAL_STOP_GRACE_SECONDS="1",
    )
    provider = await opened(env)
    namespace = unique_name("ns")
    child = {n: f"7{n}1.{tag}" for n in (0, 1)}
    try:
        spec = command_spec("pair", namespace, local_marker, ("sh", "-c", script), replicas=2)
        await provider.start(spec)
        await wait_for(provider, "pair", namespace, ready(2))
        await until(lambda: bool(sleepers(child[0]) and sleepers(child[1])), "both trees")
        await provider.scale("pair", 1, namespace=namespace)
        assert sleepers(child[1]) == [], "replica 1's setsid child went with it"
        old = sleepers(child[0])
        assert len(old) == 1, "replica 0 untouched"
        await provider.apply_config(ConfigMapPatch("pair", namespace, set={"K": "v"}))
        await wait_for(provider, "pair", namespace, ready(1))
        await until(lambda: bool(sleepers(child[0])), "the new tree")
        assert old[0] not in sleepers(child[0]), "the old tree's setsid child was ended"
    finally:
        await provider.close()
    assert all_sleepers([child[0], child[1]]) == {child[0]: [], child[1]: []}, "close ends all"


_CONTROLLER = r"""
import asyncio, json, sys
from alphaswarm_controller.providers.local import LocalProvider
from alphaswarm_core.providers.protocol import DeploymentSpec

async def main() -> None:
    env, spec = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    provider = LocalProvider(env=env)
    await provider.open()
    await provider.start(DeploymentSpec(
        service_id=spec["service_id"], namespace=spec["namespace"],
        command=tuple(spec["command"]), env=spec["env"], replicas=1))
    print("started", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


@MODES
async def test_start_up_after_a_crash_kills_every_escaped_process(
    tmp_path: Path, local_marker: str, cgroup: str
) -> None:
    tokens = sleep_tokens(4)
    # Without cgroups, a process that cleared its environment and left the session
    # cannot be told from any other after the server died (documented): keep the marker.
    command = escaping_tree(tokens, clear_env=cgroup == "on")
    env = local_env(tmp_path / "state", ALPHASWARM_LOCAL_CGROUP=cgroup)
    namespace = unique_name("ns")
    spec = {
        "service_id": "phoenix",
        "namespace": namespace,
        "command": list(command),
        "env": {"ALPHASWARM_TEST_MARKER": local_marker},
    }
    controller = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CONTROLLER,
        json.dumps(env),
        json.dumps(spec),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert controller.stdout is not None
        assert await asyncio.wait_for(controller.stdout.readline(), 60) == b"started\n"
        await until(lambda: all(sleepers(t) for t in tokens[:2]), "the escaping tree")
    finally:
        controller.send_signal(signal.SIGKILL)
        await controller.wait()
    await until(lambda: not sleepers(tokens[3]), "the leader died with the controller")
    survivors = {pid for t in tokens[:3] for pid in sleepers(t)}
    assert sleepers(tokens[0]), "the setsid child outlived the crash (the scan has work)"
    provider = await opened(env)
    try:
        left = [pid for pid in survivors if alive(pid)]
        assert left == [], f"open() left processes of the crashed run: {left}"
        await wait_for(provider, "phoenix", namespace, ready(1))
    finally:
        await provider.close()
    assert {t: p for t, p in all_sleepers(tokens).items() if p} == {}
    assert replica_cgroups(tmp_path / "state") == []


async def test_two_providers_in_one_process_never_sweep_each_others_replicas(
    tmp_path: Path, local_marker: str
) -> None:
    """Without cgroups both are subreapers of the same process: their leaders are siblings."""
    env = {"ALPHASWARM_LOCAL_CGROUP": "off", "ALPHASWARM_LOCAL_SWEEP_SECONDS": "0.1"}
    first = await opened(local_env(tmp_path / "one", **env))
    second = await opened(local_env(tmp_path / "two", **env))
    namespace = unique_name("ns")
    try:
        await first.start(command_spec("a", namespace, local_marker))
        await second.start(command_spec("b", namespace, local_marker))
        a = pids(await wait_for(first, "a", namespace, ready(1)))
        b = pids(await wait_for(second, "b", namespace, ready(1)))
        deadline = asyncio.get_running_loop().time() + 1.5  # fifteen sweeps of each
        while asyncio.get_running_loop().time() < deadline:
            assert pids(await first.status("a", namespace=namespace)) == a
            assert pids(await second.status("b", namespace=namespace)) == b
            await asyncio.sleep(0.05)
        for provider, service in ((first, "a"), (second, "b")):
            status = await provider.status(service, namespace=namespace)
            assert status.restarts == 0, status  # the instances' messages say why
    finally:
        await first.close()
        await second.close()


def test_a_sweep_spares_a_leader_being_spawned_with_the_pid_of_an_earlier_one(
    tmp_path: Path, local_marker: str
) -> None:
    """Pids come round again: in a long-lived process (a server, a pytest worker) a new
    replica's leader can get the pid of an earlier replica's leader. It leads a new session,
    not that replica's: a sweep of any provider in the process while the spawn is in flight
    leaves it alone (it was SIGKILLed, and the test above failed now and then)."""
    owner = str(tmp_path / "state")
    first, last = DEFAULT_UID_RANGE
    containment = Containment.create("off", owner, range(first, last + 1))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), OWNER_ENV: owner}
    with containment.spawning():
        leader = subprocess.Popen(
            ["sleep", "300"], start_new_session=True, env={**env, MARKER_ENV: local_marker}
        )
        try:
            containment.register(leader.pid)  # an earlier replica's leader had this pid,
            containment.unregister(leader.pid)  # and it is long gone
            assert containment.sweep() == 0
            assert leader.poll() is None
        finally:
            leader.kill()
            leader.wait()


_OLD_SCHEMA = """
CREATE TABLE deployments (
    namespace TEXT NOT NULL, service_id TEXT NOT NULL, spec TEXT NOT NULL,
    replicas INTEGER NOT NULL, stopped INTEGER NOT NULL DEFAULT 0,
    config TEXT NOT NULL DEFAULT '{}', config_version INTEGER NOT NULL DEFAULT 1,
    updated_at REAL NOT NULL, PRIMARY KEY (namespace, service_id));
CREATE TABLE replicas (
    namespace TEXT NOT NULL, service_id TEXT NOT NULL, ordinal INTEGER NOT NULL,
    pid INTEGER NOT NULL, create_time REAL NOT NULL,
    PRIMARY KEY (namespace, service_id, ordinal));
"""


async def test_state_of_an_older_version_is_upgraded_and_made_private(
    tmp_path: Path, local_marker: str
) -> None:
    """What the previous release left: the first schema, world-readable files."""
    state = tmp_path / "state"
    (state / "local").mkdir(parents=True)
    database = state / "local" / "state.sqlite3"
    namespace = unique_name("ns")
    spec = command_spec("old", namespace, local_marker)
    with sqlite3.connect(database) as db:
        db.executescript(_OLD_SCHEMA)
        db.execute(
            "INSERT INTO deployments VALUES (?, ?, ?, 1, 0, ?, 3, ?)",
            (namespace, "old", spec_to_json(spec), '{"secret.k": "v"}', time.time()),
        )
    db.close()
    for path in [state, *state.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    provider = await opened(local_env(state))
    try:
        await wait_for(provider, "old", namespace, ready(1))
        assert (await provider.get_config("old", namespace=namespace)).version == "3"
        assert _private(_modes(state), state) == {}
    finally:
        await provider.close()


_OPEN_AND_WAIT = r"""
import asyncio, json, sys
from alphaswarm_controller.providers.local import LocalProvider

async def main() -> None:
    provider = LocalProvider(env=json.loads(sys.argv[1]))
    await provider.open()
    print("open", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def _run_and_kill(env: dict[str, str], *, until_stable: bool = False) -> None:
    """One server run that dies by SIGKILL (once open, or once it has counted as stable)."""
    controller = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _OPEN_AND_WAIT, json.dumps(env), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert controller.stdout is not None
        assert await asyncio.wait_for(controller.stdout.readline(), 60) == b"open\n"
        if until_stable:
            database = Path(env["ALPHASWARM_CP_STATE_DIR"]) / "local" / "state.sqlite3"
            await until(lambda: _run_state(database) == "stable", "the run counted as stable")
    finally:
        controller.send_signal(signal.SIGKILL)
        await controller.wait()


def _run_state(database: Path) -> str:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        row = db.execute("SELECT value FROM meta WHERE key = 'run'").fetchone()
    db.close()
    return str(row[0]) if row else ""


async def test_crash_loop_streak_counts_only_abnormal_deaths_in_a_row(
    tmp_path: Path, local_marker: str
) -> None:
    env = local_env(
        tmp_path / "state",
        ALPHASWARM_LOCAL_CRASH_LOOP_LIMIT="2",
        ALPHASWARM_LOCAL_CRASH_LOOP_RESET_SECONDS="0.5",
    )
    namespace = unique_name("ns")
    provider = await opened(env)
    try:
        await provider.start(command_spec("web", namespace, local_marker))
        await provider.start(command_spec("idle", namespace, local_marker))
        await provider.stop("idle", namespace=namespace)
    finally:
        await provider.close()

    async def web() -> str:
        provider = await opened(env)
        try:
            status = await provider.status("web", namespace=namespace)
            idle = await provider.status("idle", namespace=namespace)
            assert idle.message == "stopped", "a stopped deployment is never held"
            return status.message
        finally:
            await provider.close()  # a clean end: the streak starts over

    await _run_and_kill(env)
    assert "held" not in await web(), "one death, then a clean shutdown"
    await _run_and_kill(env)
    await _run_and_kill(env, until_stable=True)  # up long enough: this death counts alone
    assert "held" not in await web()
    await _run_and_kill(env)
    await _run_and_kill(env)
    message = await web()
    assert message.startswith("held: not restarted: the server died abnormally 2 times"), message
    assert marked_processes(local_marker) == []
