"""The real server against replicas that attack it, and its shutdown budget.

A replica started through the API tries what an operator token limited to one
namespace could make it do: kill, signal or ptrace the server, read its
environment and state, and kill it again after every restart. The server runs
as root (replicas under the namespace's own uid) and as a throwaway unprivileged user (replicas
share that user: they can kill the server, which then holds them).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_controller.providers.local.settings import DEFAULT_UID_RANGE
from tests.e2e.processes import marked
from tests.e2e.server_process import ServerProcess, start_server
from tests.providers.local.support import (
    escaping_tree,
    log_text,
    proc_status,
    replica_cgroups,
    sleep_tokens,
    sleepers,
)
from tests.waiting import until_sync

MARKER = "ALPHASWARM_E2E_MARKER"
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (replica users, a throwaway user)")

#: What a hostile replica tries; each line prints ``name=<exit status>``.
ATTACK = """
kill -9 $PPID 2>/dev/null; echo "kill9=$?"
kill -TERM $PPID 2>/dev/null; echo "term=$?"
cat /proc/$PPID/environ >/dev/null 2>&1; echo "environ=$?"
cat /proc/$PPID/mem >/dev/null 2>&1; echo "mem=$?"
python3 -c '
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
PTRACE_SEIZE = 0x4206  # attaches without stopping the server, in case it works
failed = libc.ptrace(PTRACE_SEIZE, int(sys.argv[1]), 0, 0)
print("ptrace=%d" % (ctypes.get_errno() if failed else 0))
' $PPID
echo "uid=$(id -u)"
"""


@contextlib.contextmanager
def stub(server: ServerProcess) -> Iterator[pb_grpc.ProviderServiceStub]:
    with grpc.insecure_channel(server.address) as channel:
        yield pb_grpc.ProviderServiceStub(channel)


def start(server: ServerProcess, service_id: str, namespace: str, command: list[str]) -> None:
    with stub(server) as api:
        api.StartDeployment(
            pb.StartDeploymentRequest(
                spec=types.DeploymentSpec(
                    service_id=service_id,
                    namespace=namespace,
                    command=command,
                    replicas=1,
                    env={MARKER: service_id},
                )
            ),
            timeout=30,
        )


def status(server: ServerProcess, service_id: str, namespace: str) -> types.DeploymentStatus:
    with stub(server) as api:
        request = pb.GetDeploymentStatusRequest(service_id=service_id, namespace=namespace)
        return api.GetDeploymentStatus(request, timeout=30).status


def read_results(log: Path, done: str = "attack-done") -> dict[str, str]:
    until_sync(lambda: done in log_text(log), f"{done} in {log}")
    pairs = (line.split("=", 1) for line in log_text(log).splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


@needs_root
def test_replica_of_a_root_server_cannot_touch_it(tmp_path: Path) -> None:
    state = tmp_path / "state"
    server = start_server(state)
    try:
        script = (
            ATTACK
            + f'cat "{state}/local/state.sqlite3" >/dev/null 2>&1; echo "db=$?"\n'
            + f'cat "{state}/local/state.sqlite3-wal" >/dev/null 2>&1; echo "wal=$?"\n'
            + f'ls "{state}" >/dev/null 2>&1; echo "ls=$?"\n'
            + "echo attack-done; exec sleep 300"
        )
        start(server, "mallory", "evil", ["sh", "-c", script])
        results = read_results(state / "local" / "logs" / "evil" / "mallory" / "0.log")
        first, last = DEFAULT_UID_RANGE  # the namespace's own uid
        assert first <= int(results.pop("uid")) <= last
        assert results.pop("ptrace") == "1", "EPERM"
        assert all(code != "0" for code in results.values()), results
        assert set(results) == {"kill9", "term", "environ", "mem", "db", "wal", "ls"}
        assert server.process.poll() is None, "the server is alive"
        until_sync(
            lambda: status(server, "mallory", "evil").state == types.DEPLOYMENT_STATE_RUNNING,
            "the attacker's replica running, the server serving",
        )
    finally:
        assert server.terminate() == 0, server.log


@pytest.fixture
def throwaway_user() -> Iterator[pwd.struct_passwd]:
    """A system user made for one test and removed after it (with anything it left running)."""
    name = f"asw-{uuid.uuid4().hex[:10]}"
    subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            name,
        ],
        check=True,
    )
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["pkill", "-KILL", "-u", name], check=False)
        subprocess.run(["userdel", name], check=True)


@pytest.fixture
def user_state(throwaway_user: pwd.struct_passwd) -> Iterator[Path]:
    """A state directory the throwaway user owns (pytest's tmp_path is root's, 0700)."""
    base = Path(tempfile.mkdtemp(prefix="alphaswarm-e2e-"))
    try:
        os.chown(base, throwaway_user.pw_uid, throwaway_user.pw_gid)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _dies(server: ServerProcess) -> int:
    return server.wait(timeout=60)


@needs_root
def test_replica_of_an_unprivileged_server_cannot_trace_it(
    throwaway_user: pwd.struct_passwd, user_state: Path
) -> None:
    user = (throwaway_user.pw_uid, throwaway_user.pw_gid)
    server = start_server(user_state, user=user)
    try:
        assert proc_status(server.process.pid)["Uid"].split()[0] == str(user[0])
        probe = ATTACK.replace("kill -9 $PPID", "true").replace("kill -TERM $PPID", "true")
        start(server, "probe", "demo", ["sh", "-c", probe + "echo attack-done; exec sleep 300"])
        results = read_results(user_state / "local" / "logs" / "demo" / "probe" / "0.log")
        assert results["uid"] == str(user[0]), "replicas run as the server's own user"
        assert results["environ"] != "0" and results["mem"] != "0", results
        assert results["ptrace"] == "1", "EPERM: the server is not dumpable"
        modes = {
            path.name: stat.S_IMODE(path.stat().st_mode)
            for path in [user_state, *user_state.rglob("*")]
        }
        assert {mode for name, mode in modes.items() if name.endswith(".log")} == {0o600}
        assert modes["state.sqlite3"] == modes["state.sqlite3-wal"] == 0o600, modes
        assert modes[user_state.name] == modes["local"] == 0o700, modes
    finally:
        assert server.terminate() == 0, server.log
    until_sync(lambda: not marked(MARKER, "probe"), "no replica left")


@needs_root
def test_a_deployment_that_keeps_killing_the_server_is_held(
    throwaway_user: pwd.struct_passwd, user_state: Path
) -> None:
    """A replica of the server's own user can kill it; it must not do so at every restart."""
    user = (throwaway_user.pw_uid, throwaway_user.pw_gid)
    env = {"ALPHASWARM_LOCAL_CRASH_LOOP_LIMIT": "3"}
    server = start_server(user_state, env, user=user)
    try:
        killer = ["sh", "-c", "kill -9 $PPID; exec sleep 300"]
        with contextlib.suppress(grpc.RpcError):  # the server may die before it answers
            start(server, "killer", "demo", killer)
        assert _dies(server) == -signal.SIGKILL
        for _ in range(2):  # the 2nd and 3rd abnormal ends: respawned from state, killed again
            try:
                server = start_server(user_state, env, user=user)
            except RuntimeError as exc:  # killed before it listened
                assert "exited before listening" in str(exc)
                continue
            assert _dies(server) == -signal.SIGKILL, server.log
        server = start_server(user_state, env, user=user)
        held = status(server, "killer", "demo")
        assert held.state == types.DEPLOYMENT_STATE_STOPPED, held
        assert "died abnormally 3 times in a row" in held.message, held.message
        assert not marked(MARKER, "killer"), "the killer was not started again"
        assert server.process.poll() is None
        start(server, "killer", "demo", ["sleep", "300"])  # a fixed spec resumes it
        until_sync(
            lambda: status(server, "killer", "demo").state == types.DEPLOYMENT_STATE_RUNNING,
            "the resumed deployment running",
        )
    finally:
        if server.process.poll() is None:
            assert server.terminate() == 0, server.log
    until_sync(lambda: not marked(MARKER, "killer"), "no replica left")


def test_shutdown_grace_bounds_everything_replica_stops_included(tmp_path: Path) -> None:
    tokens = sleep_tokens(4)
    grace = 4.0
    server = start_server(
        tmp_path / "state",
        {
            "ALPHASWARM_CP_SHUTDOWN_GRACE_SECONDS": str(grace),
            "ALPHASWARM_LOCAL_STOP_GRACE_SECONDS": "60",  # far beyond the budget
        },
    )
    try:
        start(server, "stubborn", "demo", list(escaping_tree(tokens)))
        until_sync(lambda: all(sleepers(t) for t in (tokens[0], tokens[1], tokens[3])), "tree")
        began = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
        took = time.monotonic() - began
    finally:
        server.kill()
    assert code == 0, server.log
    # The budget is the whole shutdown (the stop grace alone is 60 s); the slack is wide,
    # so that a loaded two-core machine cannot flap it.
    assert took < grace + 15, f"took {took:.1f}s with a {grace:.0f}s grace"
    assert {t: p for t in tokens if (p := sleepers(t))} == {}, "every process was killed"
    assert replica_cgroups(tmp_path / "state") == [], "and its cgroups removed"


def test_a_second_signal_stops_at_once(tmp_path: Path) -> None:
    tokens = sleep_tokens(4)
    server = start_server(
        tmp_path / "state",
        {
            "ALPHASWARM_CP_SHUTDOWN_GRACE_SECONDS": "120",
            "ALPHASWARM_LOCAL_STOP_GRACE_SECONDS": "120",
        },
    )
    try:
        start(server, "stubborn", "demo", list(escaping_tree(tokens)))
        until_sync(lambda: all(sleepers(t) for t in (tokens[0], tokens[1], tokens[3])), "tree")
        server.process.send_signal(signal.SIGTERM)
        until_sync(lambda: "shutting down" in server.log, "the first signal handled")
        server.process.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)  # not the 120 s either grace would allow
    finally:
        server.kill()
    assert code == 1, server.log
    assert "second signal" in server.log
    until_sync(lambda: not any(sleepers(t) for t in tokens), "every process killed")
    assert replica_cgroups(tmp_path / "state") == [], "and its cgroups removed"
