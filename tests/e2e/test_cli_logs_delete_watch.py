"""``alphaswarm logs``, ``delete`` and ``watch`` (namespace) against the real server.

Logs and delete run on docker_compose against the engine at DOCKER_HOST (``eval
"$(bash scripts/ci/start-dockerd.sh)"``; without one the test fails, never skips),
whose replicas write ``line <n>`` to stdout every 0.2 s and one line to stderr at
start. What matters on a terminal (colours, the prompt, Ctrl-C, redraws) runs in a
pseudo-terminal; the rest through pipes, as scripts use it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from alphaswarm_core.testing import unique_name
from tests.e2e.processes import marked
from tests.e2e.server_process import ServerProcess, start_server
from tests.e2e.terminal import cli_in_terminal
from tests.e2e.test_cli import MARKER, Result, failed, ok, run
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
LINE = re.compile(r"^(?P<instance>\S+) +(?P<mark>[|!]) (?P<text>.*)$")


@pytest.fixture
def talker(compose_server: ServerProcess, engine: docker.APIClient) -> Iterator[tuple[str, str]]:
    """A 2-replica service writing lines; (namespace, service). Removed from the engine after."""
    image = ensure_busybox_image(engine)
    namespace = unique_name("cli")
    try:
        ok(
            compose_server,
            "-n", namespace, "start", "talker", "--image", image, "--replicas", "2",
            "--", "/bin/sh", "-c", LOG_SCRIPT,
        )  # fmt: skip
        until_sync(
            lambda: ok(compose_server, "-n", namespace, "list").out,
            "talker with 2 ready replicas",
            holds=lambda listed: "2/2" in listed,
            within=SETTLE,
            every=0.3,
        )
        yield namespace, "talker"
    finally:
        remove_project(engine, namespace)


def _parsed(out: str) -> list[re.Match[str]]:
    lines = [LINE.fullmatch(line) for line in out.splitlines()]
    assert all(lines), out
    return [m for m in lines if m is not None]


def test_logs_piped_json_and_terminal(
    compose_server: ServerProcess, talker: tuple[str, str]
) -> None:
    namespace, service = talker

    # Piped: 'instance | line', plain, the last N of each replica, then the command ends.
    def two_lines_each(piped: Result) -> bool:
        assert piped.code == 0, piped.err
        lines = _parsed(piped.out)
        return all(m["text"].startswith("line ") for m in lines) and len(lines) == 4

    piped = until_sync(
        lambda: run(compose_server, "-n", namespace, "logs", service, "--tail", "2"),
        "the last 2 lines of each replica",
        holds=two_lines_each,
        within=SETTLE,
        every=0.5,
    )
    lines = _parsed(piped.out)
    assert "\x1b" not in piped.out
    instances = {m["instance"] for m in lines}
    assert len(instances) == 2
    assert all(m["mark"] == "|" for m in lines)

    # -o json: one proto3-JSON message per line, the shape grpcurl prints.
    as_json = ok(compose_server, "-n", namespace, "logs", service, "--tail", "1", "-o", "json")
    messages = [json.loads(line) for line in as_json.out.splitlines()]
    assert len(messages) == 2
    assert {m["entry"]["instanceId"] for m in messages} == instances
    assert all(m["entry"]["stream"] == "LOG_STREAM_STDOUT" for m in messages)

    # Everything retained includes each replica's stderr line, marked '!'; --instance filters.
    one = sorted(instances)[0]
    everything = _parsed(
        ok(compose_server, "-n", namespace, "logs", service, "--instance", one).out
    )
    assert {m["instance"] for m in everything} == {one}
    assert any(m["mark"] == "!" and m["text"].startswith("started") for m in everything)
    # --since in the future: nothing; --timestamps: an RFC 3339 time first.
    assert (
        ok(compose_server, "-n", namespace, "logs", service, "--since", "2999-01-01T00:00:00Z").out
        == ""
    )
    stamped = ok(compose_server, "-n", namespace, "logs", service, "--tail", "1", "-t").out
    assert all(
        re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z \S+ +\| line ", line)
        for line in stamped.splitlines()
    ), stamped
    bad = failed(compose_server, 2, "-n", namespace, "logs", service, "--since", "yesterday")
    assert "--since" in bad

    # A terminal: a stable colour per replica, following until Ctrl-C, which exits 130.
    with cli_in_terminal(
        compose_server, "-n", namespace, "logs", service, "-f", "--tail", "1"
    ) as term:
        term.expect(r"\| line \d+\n(.*\n)*.*\| line \d+")
        before = len(term.text.splitlines())
        term.expect(r"(.*\| line \d+\n){" + str(before + 4) + "}")  # new lines arrive
        term.type("\x03")
        assert term.wait() == 130
        raw = term.raw
    colours = {
        instance: re.findall(r"(\x1b\[\d+m)" + re.escape(instance), raw) for instance in instances
    }
    for instance, found in colours.items():
        assert found and len(set(found)) == 1, (instance, found)  # one colour per replica
    assert "Traceback" not in raw

    with cli_in_terminal(
        compose_server, "-n", namespace, "logs", service, "--tail", "1", env={"NO_COLOR": "1"}
    ) as term:
        assert term.wait() == 0
        assert "\x1b[3" not in term.raw and "\x1b[9" not in term.raw


def test_delete_asks_on_a_terminal_and_refuses_without_yes_off_one(
    compose_server: ServerProcess, talker: tuple[str, str], engine: docker.APIClient
) -> None:
    namespace, service = talker
    refused = failed(compose_server, 2, "-n", namespace, "delete", service)
    assert "--yes" in refused
    assert service in ok(compose_server, "-n", namespace, "list").out

    with cli_in_terminal(compose_server, "-n", namespace, "delete", service) as term:
        term.expect(r"Delete .*talker.*\? \[y/N\]")
        term.type("n\n")
        assert term.wait() == 2
    assert service in ok(compose_server, "-n", namespace, "list").out

    with cli_in_terminal(compose_server, "-n", namespace, "delete", service) as term:
        term.expect(r"\[y/N\]")
        term.type("y\n")
        assert term.wait() == 0
        term.expect(rf"{namespace}/{service} deleted")
    assert engine_leftovers(engine, service, namespace) == []
    assert project_objects(engine, namespace) == NOTHING
    assert "DEPLOYMENT_NOT_FOUND" in failed(compose_server, 1, "-n", namespace, "status", service)
    again = failed(compose_server, 1, "-n", namespace, "delete", service, "--yes")
    assert "DEPLOYMENT_NOT_FOUND" in again
    allowed = ok(compose_server, "-n", namespace, "delete", service, "--yes", "--allow-missing")
    assert allowed.out == f"{namespace}/{service} not found (allowed)\n"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    running = start_server(tmp_path / "state")
    try:
        yield running
    finally:
        assert running.terminate() == 0, running.log


def test_watch_a_namespace_piped_and_as_a_live_table(server: ServerProcess) -> None:
    tag = uuid.uuid4().hex
    ok(server, "-n", "team", "start", "api", "--env", f"{MARKER}={tag}", "--", "sleep", "300")

    # Piped: one line per event after a header; the snapshot marker is not a row.
    piped = ok(server, "-n", "team", "watch", "--count", "2").out.splitlines()
    assert piped[0].split()[:4] == ["TIME", "EVENT", "NAMESPACE", "SERVICE"]
    assert piped[1].split()[1:4] == ["ADDED", "team", "api"]
    events = [
        json.loads(line)
        for line in ok(server, "watch", "-A", "-o", "json", "--count", "2").out.splitlines()
    ]
    assert [e["event"] for e in events] == [
        "DEPLOYMENT_EVENT_ADDED",
        "DEPLOYMENT_EVENT_INITIAL_SNAPSHOT_DONE",
    ]

    # A terminal: a table redrawn in place as services come and change, until Ctrl-C.
    with cli_in_terminal(server, "-n", "team", "watch", columns=120) as term:
        term.expect(r"api\s+local\s+\w+")
        ok(
            server,
            "-n",
            "team",
            "start",
            "worker",
            "--env",
            f"{MARKER}={tag}",
            "--",
            "sleep",
            "300",
        )
        term.expect(r"worker\s+local\s+RUNNING\s+1/1")
        ok(server, "-n", "team", "scale", "worker", "3")
        term.expect(r"worker\s+local\s+RUNNING\s+3/3")
        term.type("\x03")
        assert term.wait() == 130
        raw = term.raw
    assert re.search(r"\x1b\[\d*A", raw)  # the cursor moves up: redrawn in place, not scrolled
    until_sync(lambda: len(marked(MARKER, tag)) == 4, "4 replicas")
    ok(server, "-n", "team", "stop", "api", "worker")  # several names where the verb allows
    until_sync(lambda: not marked(MARKER, tag), "no replica left")


def test_docker_compose_reads_its_spec_back_for_status_and_set(
    compose_server: ServerProcess, talker: tuple[str, str], engine: docker.APIClient
) -> None:
    namespace, service = talker
    status = ok(compose_server, "-n", namespace, "status", service, "-o", "json").json()["status"]
    assert status["spec"]["command"] == ["/bin/sh", "-c", LOG_SCRIPT]
    assert status["spec"]["replicas"] == 2 and status["spec"]["image"]
    assert all(i["startedAt"] for i in status["instances"])  # the AGE of each replica
    described = ok(compose_server, "-n", namespace, "describe", service).out
    rows = [line.split() for line in described.splitlines() if line[:12].strip() in {
        i["instanceId"] for i in status["instances"]}]  # fmt: skip
    assert len(rows) == 2 and all(re.fullmatch(r"\d+s|\d+m\d*s?", row[4]) for row in rows), rows

    ok(compose_server, "-n", namespace, "set", "env", service, "EXTRA=1")

    def configs() -> list[dict[str, Any]]:
        containers = engine.containers(
            filters={"label": [f"com.docker.compose.project={namespace}"]}
        )
        return [engine.inspect_container(c["Id"])["Config"] for c in containers]

    replaced = until_sync(
        configs,
        "2 containers with EXTRA=1",
        holds=lambda found: len(found) == 2 and all("EXTRA=1" in c["Env"] for c in found),
        within=SETTLE,
        every=0.5,
    )
    # the rest of the spec stayed
    assert [c["Cmd"] for c in replaced] == [["/bin/sh", "-c", LOG_SCRIPT]] * 2
