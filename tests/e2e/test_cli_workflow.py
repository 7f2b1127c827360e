"""The CLI's workflow around the calls (issue 22), driven as a user drives it against the
real server on `local`: contexts, output formats and tables, flags between positionals,
several names, reading a spec back and changing one part, an unknown outcome, metrics
and watch on a terminal, reconnecting, and shell completion in real shells."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.processes import cmdline_of, environ_of, marked
from tests.e2e.server_process import ServerProcess, start_server
from tests.e2e.terminal import cli_in_terminal, plain
from tests.e2e.test_cli import MARKER, _self_signed, cli_argv, failed, ok, run
from tests.waiting import until_sync

VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    running = start_server(tmp_path / "state", {"ALPHASWARM_CONFIG": str(tmp_path / "none.yaml")})
    try:
        yield running
    finally:
        assert running.terminate() == 0, running.log


def _start(server: ServerProcess, name: str, tag: str, *extra: str) -> None:
    ok(server, "start", name, "--env", f"{MARKER}={tag}", *extra, "--", "sleep", "300")


# -- contexts ----------------------------------------------------------------------------


def test_contexts_hold_target_tls_token_source_and_namespace(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    token = uuid.uuid4().hex * 2
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        f"tokens:\n  - name: e2e\n    sha256: {hashlib.sha256(token.encode()).hexdigest()}"
        "\n    role: operator\n",
        encoding="utf-8",
    )
    secured = start_server(
        tmp_path / "state",
        {
            "ALPHASWARM_CP_TLS_CERT": str(cert),
            "ALPHASWARM_CP_TLS_KEY": str(key),
            "ALPHASWARM_CP_TOKENS_FILE": str(tokens),
        },
    )
    token_file = tmp_path / "prod.token"
    token_file.write_text(token + "\n", encoding="utf-8")
    config = tmp_path / "xdg" / "alphaswarm" / "config.yaml"
    env = {k: v for k, v in secured.env.items() if not k.startswith("ALPHASWARM_")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")

    def cli(*args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "alphaswarm_client.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**env, **(extra or {})},
            check=False,
        )

    try:
        # The token itself is refused unless asked for; a file or a command is the way.
        refused = cli("context", "set", "prod", "--target", secured.address, "--token", token)
        assert refused.returncode == 2 and "--store-token" in refused.stderr
        assert not config.exists()
        made = cli(
            "context", "set", "prod", "--target", secured.address, "--ca-cert", str(cert),
            "-n", "shop", "--token-file", str(token_file),
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        assert token not in config.read_text()
        saved = yaml.safe_load(config.read_text())
        assert saved["current_context"] == "prod"
        assert saved["contexts"]["prod"]["namespace"] == "shop"

        # No flag at all: target, TLS, token and namespace come from the context.
        started = cli("start", "api", "--", "sleep", "300")
        assert started.returncode == 0, started.stderr
        assert "shop" in started.stdout and "api" in started.stdout
        # Flags and the environment override the context, one field at a time.
        assert "no deployments" in cli("list", "-n", "other").stdout
        assert "no deployments" in cli("list", extra={"ALPHASWARM_NAMESPACE": "other"}).stdout
        elsewhere = cli("--target", "127.0.0.1:1", "--timeout", "3", "list")
        assert elsewhere.returncode == 1 and "UNAVAILABLE" in elsewhere.stderr

        # A token command (argv, no shell); --context picks a context for one call.
        by_command = cli(
            "context", "set", "cmd", "--target", secured.address, "--ca-cert", str(cert),
            "--token-command", f"cat {token_file}",
        )  # fmt: skip
        assert by_command.returncode == 0, by_command.stderr
        listed = cli("--context", "cmd", "-n", "shop", "list", "-o", "name")
        assert listed.stdout == "shop/api\n", listed.stderr
        table = cli("context", "list").stdout
        assert re.search(r"^\* prod\s+\S+\s+shop\s+-\s+tls\s+token-file$", table, re.M), table
        assert re.search(r"^  cmd\s+.*token-command$", table, re.M), table
        assert cli("context", "use", "cmd").returncode == 0
        assert cli("context", "current").stdout == "cmd\n"
        unknown = cli("--context", "nope", "list")
        assert unknown.returncode == 2 and "no context 'nope'" in unknown.stderr
        # Stored only when asked, never shown back.
        stored = cli("context", "set", "inline", "--token", token, "--store-token")
        assert stored.returncode == 0
        assert token not in cli("context", "list", "-o", "json").stdout
        assert cli("-n", "shop", "--context", "prod", "stop", "api").returncode == 0
    finally:
        assert secured.terminate() == 0, secured.log


# -- output -------------------------------------------------------------------------------


def test_output_formats_and_tables_that_fit(server: ServerProcess) -> None:
    tag = uuid.uuid4().hex
    _start(server, "web", tag, "--replicas", "2", "--label", "team=e2e")
    as_json = ok(server, "status", "web", "-o", "json").json()
    as_yaml = yaml.safe_load(ok(server, "status", "web", "-o", "yaml").out)
    assert as_yaml["status"]["serviceId"] == as_json["status"]["serviceId"] == "web"
    assert as_json["status"]["spec"]["command"] == ["sleep", "300"]
    assert ok(server, "status", "web", "-o", "name").out == "default/web\n"
    assert ok(server, "list", "-o", "name").out == "default/web\n"
    wide = ok(server, "list", "-o", "wide").out.splitlines()
    assert wide[0].split() == [
        "NAMESPACE", "SERVICE", "PROVIDER", "STATE", "READY", "RESTARTS", "AGE",
        "IMAGE", "CHANGED", "MESSAGE",
    ]  # fmt: skip
    assert re.fullmatch(r"\d+s", wide[1].split()[6]), wide  # AGE: since the service was created
    until_sync(lambda: "2/2 ready" in ok(server, "status", "web").out, "2 ready replicas")
    described = ok(server, "describe", "web").out
    assert re.search(r"^command:\s+sleep 300$", described, re.M), described
    assert re.search(rf"^env:\s+{MARKER}={tag}$", described, re.M), described
    # One row per replica with its AGE, from the replica's start time.
    rows = [line.split() for line in described.splitlines() if line.startswith("web-")]
    assert len(rows) == 2 and all(re.fullmatch(r"\d+s", row[4]) for row in rows), described

    # On an 80-column terminal the providers table fits; at 200 each provider is one row.
    for columns in (80, 200):
        with cli_in_terminal(server, "providers", columns=columns) as term:
            assert term.wait() == 0
            lines = term.text.splitlines()
        assert max(len(line) for line in lines) <= columns, "\n".join(lines)
        if columns == 200:
            assert len(lines) == 1 + 6 + 1  # header, six providers, the default's note
    ok(server, "stop", "web")


def test_flags_between_positionals_and_several_names(server: ServerProcess) -> None:
    tag = uuid.uuid4().hex
    _start(server, "web", tag)
    _start(server, "roll", tag)
    version = ok(server, "config", "get", "roll", "-o", "json").json()["config"]["version"]
    applied = ok(server, "config", "set", "roll", "--expected-version", version, "X=1", "Y=2")
    assert re.search(r"^X\s+1$", applied.out, re.M) and re.search(r"^Y\s+2$", applied.out, re.M)
    until_sync(lambda: len(marked(MARKER, tag)) == 2, "2 replicas")
    stopped = ok(server, "stop", "web", "roll").out.splitlines()
    assert [line.split()[1:4] for line in stopped[1:]] == [
        ["web", "local", "STOPPED"],
        ["roll", "local", "STOPPED"],
    ]
    until_sync(lambda: not marked(MARKER, tag), "no replica left")
    # A missing one among several: the others are done, the failure is named, exit 1.
    mixed = run(server, "stop", "ghost", "web")
    assert mixed.code == 1 and mixed.err.startswith("error: ghost: NOT_FOUND")
    assert "web" in mixed.out


def test_set_changes_one_part_and_keeps_the_rest(server: ServerProcess) -> None:
    tag = uuid.uuid4().hex
    _start(server, "web", tag, "--env", "A=1", "--replicas", "2")
    until_sync(lambda: len(marked(MARKER, tag)) == 2, "2 replicas")
    ok(server, "set", "env", "web", "B=2", "--remove", "A")
    until_sync(
        lambda: (
            [(environ_of(p).get("A"), environ_of(p).get("B")) for p in marked(MARKER, tag)]
            == [(None, "2")] * 2
        ),
        "replicas with B=2 and without A",
    )
    spec = ok(server, "status", "web", "-o", "json").json()["status"]["spec"]
    assert spec["env"] == {MARKER: tag, "B": "2"}
    assert spec["command"] == ["sleep", "300"] and spec["replicas"] == 2
    ok(server, "set", "command", "web", "--", "sleep", "301")
    until_sync(
        lambda: [cmdline_of(p) for p in marked(MARKER, tag)] == [["sleep", "301"]] * 2,
        "replicas running sleep 301",
    )
    ok(server, "set", "replicas", "web", "3")
    until_sync(lambda: len(marked(MARKER, tag)) == 3, "3 replicas")
    # What local cannot honour is refused, never silently ignored.
    bogus = failed(server, 1, "set", "option", "web", "bogus=1")
    assert "INVALID_ARGUMENT" in bogus and "provider_options['bogus']" in bogus
    port = failed(server, 1, "start", "other", "--port", "8080:80", "--", "sleep", "1")
    assert "spec.ports" in port
    memory = failed(server, 1, "start", "other", "--memory", "64Mi", "--", "sleep", "1")
    assert "spec.resources.memory" in memory
    assert "other" not in ok(server, "list").out
    ok(server, "stop", "web")
    until_sync(lambda: not marked(MARKER, tag), "no replica left")


def test_a_change_past_its_deadline_is_reported_as_unknown(server: ServerProcess) -> None:
    tag = uuid.uuid4().hex
    # Replicas that ignore SIGTERM: a stop waits out the grace (10 s) before SIGKILL. (A
    # change of what runs returns once recorded and rolls in the background: no use here.)
    ok(
        server, "start", "big", "--replicas", "2", "--env", f"{MARKER}={tag}",
        "--", "sh", "-c", "trap '' TERM; while true; do sleep 1; done",
    )  # fmt: skip
    until_sync(lambda: "2/2" in ok(server, "list").out, "2 ready replicas", within=60)
    late = run(server, "--timeout", "1", "stop", "big")
    assert late.code == 3, late.err
    assert late.err.startswith("error: DEADLINE_EXCEEDED: outcome unknown")
    assert "alphaswarm status big" in late.err
    # ...and it was applied: the server finishes what it accepted.
    until_sync(lambda: "STOPPED" in ok(server, "status", "big").out, "the service stopped")
    until_sync(lambda: not marked(MARKER, tag), "no replica left", within=60)
    # A read past its deadline is a plain failure (nothing to be unsure about). A peer that
    # accepts the connection and never answers makes the deadline certain to pass: a tiny
    # --timeout against the real server is not (a late deadline timer on a loaded machine
    # lets the answer in first).
    with socket.create_server(("127.0.0.1", 0)) as silent:
        host, port = silent.getsockname()[:2]
        read = run(server, "--target", f"{host}:{port}", "--timeout", "0.5", "list")
    assert read.code == 1, read.err
    assert read.err.startswith("error: DEADLINE_EXCEEDED"), read.err
    assert "outcome unknown" not in read.err


# -- live views -----------------------------------------------------------------------------


def test_metrics_follow_is_a_summary_redrawn_in_place(server: ServerProcess) -> None:
    tag = uuid.uuid4().hex
    _start(server, "web", tag, "--replicas", "3")
    until_sync(lambda: len(marked(MARKER, tag)) == 3, "3 replicas")
    follow = ("metrics", "web", "--follow", "--interval", "0.3")
    with cli_in_terminal(server, *follow, columns=100, lines=30) as term:
        term.expect(r"(\d\d:\d\d:\d\d\s+3\s.*\n.*){3}")  # three samples in the table
        term.type("\x03")
        assert term.wait() == 130
        raw = term.raw
    assert re.search(r"\x1b\[\d*A", raw)  # redrawn in place
    assert "replica_" not in raw and "RSS_BYTES" not in raw  # the summary, no per-replica rows
    assert plain(raw).count("metrics of default/web") < plain(raw).count("ok")

    with cli_in_terminal(server, *follow, "-o", "wide", columns=100, lines=30) as term:
        term.expect(r"REPLICA\s+RSS_BYTES(.*\n){3}")  # one row per replica
        term.type("\x03")
        assert term.wait() == 130

    # TERM=dumb: no cursor movement, one line per sample; NO_COLOR: no colour.
    with cli_in_terminal(server, *follow, "--count", "3", env={"TERM": "dumb"}) as term:
        assert term.wait() == 0
        raw = term.raw
    assert "\x1b" not in raw
    assert [line.split()[1] for line in plain(raw).splitlines()[1:]] == ["3"] * 3
    with cli_in_terminal(server, *follow, "--count", "2", env={"NO_COLOR": "1"}) as term:
        assert term.wait() == 0
        assert not re.search(r"\x1b\[[0-9;]*m", term.raw.replace("\x1b[0m", ""))
    ok(server, "stop", "web")


def test_watch_reconnects_when_the_server_restarts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = start_server(state)
    port = first.address.rsplit(":", 1)[1]
    tag = uuid.uuid4().hex
    _start(first, "web", tag)
    watch = subprocess.Popen(
        cli_argv(first, "watch", "web", "-o", "json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=first.env,
    )
    second: ServerProcess | None = None
    try:
        assert watch.stdout is not None and watch.stderr is not None
        assert json.loads(watch.stdout.readline())["status"]["serviceId"] == "web"
        assert first.terminate() == 0, first.log
        # The stream ends with UNAVAILABLE (SERVER_SHUTTING_DOWN, RetryInfo): it waits.
        note = watch.stderr.readline()
        assert "reconnecting in" in note and "UNAVAILABLE" in note, note
        second = start_server(state, {"ALPHASWARM_CP_LISTEN": f"127.0.0.1:{port}"})
        resumed = json.loads(watch.stdout.readline())
        assert resumed["status"]["serviceId"] == "web"
        assert watch.poll() is None
        watch.send_signal(signal.SIGINT)
        assert watch.wait(20) == 130
    finally:
        watch.kill()
        watch.wait(10)
        if second is not None:
            ok(second, "stop", "web")
            assert second.terminate() == 0, second.log
        first.kill()
    until_sync(lambda: not marked(MARKER, tag), "no replica left")


# -- completion -----------------------------------------------------------------------------


def _shell_env(server: ServerProcess) -> dict[str, str]:
    return {**server.env, "PATH": f"{VENV_BIN}{os.pathsep}{server.env.get('PATH', '')}",
            "ALPHASWARM_TARGET": server.address}  # fmt: skip


def _require(shell: str) -> str:
    found = shutil.which(shell)
    assert found, f"{shell} is not installed: apt-get install -y {shell} (scripts/test.sh does)"
    return found


def test_completion_in_bash_zsh_and_fish(server: ServerProcess, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    _start(server, "webshop", tag)
    env = _shell_env(server)
    for shell in ("bash", "zsh", "fish"):
        script = ok(server, "completion", shell).out
        (tmp_path / f"alphaswarm.{shell}").write_text(script, encoding="utf-8")

    bash = _require("bash")

    def complete_in_bash(line: str) -> list[str]:
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

    assert {"start", "status", "stop"} <= set(complete_in_bash("alphaswarm st"))
    assert complete_in_bash("alphaswarm logs --tai") == ["--tail"]
    # Service names come from the server (one ListDeployments call).
    assert complete_in_bash("alphaswarm status web") == ["webshop"]
    assert complete_in_bash("alphaswarm completion f") == ["fish"]

    fish = _require("fish")
    done = subprocess.run(
        [fish, "--no-config", "-c",
         f"source {tmp_path / 'alphaswarm.fish'}; complete -C 'alphaswarm logs web'"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [line.split("\t")[0] for line in done.stdout.splitlines()] == ["webshop"]

    zsh = _require("zsh")
    checked = subprocess.run(
        [zsh, "-n", str(tmp_path / "alphaswarm.zsh")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert (
        checked.stdout == "" and "#compdef alphaswarm" in (tmp_path / "alphaswarm.zsh").read_text()
    )
    # What the zsh function asks the program (argcomplete's protocol, zsh flavour).
    answered = subprocess.run(
        [str(VENV_BIN / "alphaswarm")],
        env={**env, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_SHELL": "zsh",
             "COMP_LINE": "alphaswarm sta", "COMP_POINT": "14", "_ARGCOMPLETE_IFS": "\n",
             "_ARGCOMPLETE_STDOUT_FILENAME": str(tmp_path / "zsh.out")},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert answered.returncode == 0, answered.stderr
    offered = (tmp_path / "zsh.out").read_text().splitlines()
    assert {line.split(":", 1)[0] for line in offered} >= {"start", "status"}
    ok(server, "stop", "webshop")
    until_sync(lambda: not marked(MARKER, tag), "no replica left")
