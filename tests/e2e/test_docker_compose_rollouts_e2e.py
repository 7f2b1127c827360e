"""Revisions, plans and rollouts through grpcurl against the real server on docker_compose.

The server runs with ``ALPHASWARM_CP_PROVIDER=docker_compose`` against the engine at
DOCKER_HOST (``eval "$(bash scripts/ci/start-dockerd.sh)"``; without one the test
fails, never skips). ``validate_only`` is checked on the engine itself: every
container, volume and network of the project, with its labels, is the same after
the plans as before them.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import docker

from alphaswarm_core.testing import unique_name
from tests.e2e.server_process import ServerProcess
from tests.e2e.test_grpcurl import SERVICE, call, grpcurl, grpcurl_binary
from tests.fakes.docker_images import ensure_busybox_image
from tests.providers.docker_compose.support import remove_project

#: grpcurl's exit code for a call that ended with gRPC status ABORTED (64 + 10).
ABORTED_EXIT = 74
#: Far above what a rollout of these busybox replicas takes, far below "never".
BOUND = 120


def engine_state(api: docker.APIClient, namespace: str) -> dict[str, Any]:
    """Everything the engine holds of project ``namespace``: containers (id, name,
    state, labels), volumes (name, labels) and networks (id, name)."""
    containers = api.containers(
        all=True, filters={"label": f"com.docker.compose.project={namespace}"}
    )
    volumes = [
        v
        for v in api.volumes().get("Volumes") or []
        if (v.get("Labels") or {}).get("dev.alphaswarm.project") == namespace
    ]
    return {
        "containers": sorted(
            (c["Id"], c["Names"][0], c["State"], json.dumps(c["Labels"], sort_keys=True))
            for c in containers
        ),
        "volumes": sorted((v["Name"], json.dumps(v["Labels"], sort_keys=True)) for v in volumes),
        "networks": sorted(
            (n["Id"], n["Name"]) for n in api.networks() if n["Name"] == f"{namespace}_default"
        ),
    }


def follow_rollout(server: ServerProcess, ref: dict[str, str]) -> dict[str, Any]:
    """WatchDeployment with until_rollout_done: the stream ends by itself when the
    rollout does; its last status."""
    command = [
        grpcurl_binary(),
        "-plaintext",
        "-d",
        json.dumps({**ref, "until_rollout_done": True}),
        server.address,
        f"{SERVICE}/WatchDeployment",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=BOUND, check=False)
    assert done.returncode == 0, done.stderr
    decoder = json.JSONDecoder()
    text = done.stdout.strip()
    statuses: list[dict[str, Any]] = []
    while text:
        message, end = decoder.raw_decode(text)
        statuses.append(message["status"])
        text = text[end:].lstrip()
    return statuses[-1]


def container_env(api: docker.APIClient, namespace: str, service: str) -> list[dict[str, str]]:
    labels = [f"com.docker.compose.project={namespace}", f"com.docker.compose.service={service}"]
    found = sorted(api.containers(filters={"label": labels}), key=lambda c: c["Names"][0])
    return [
        dict(item.split("=", 1) for item in api.inspect_container(c["Id"])["Config"]["Env"])
        for c in found
    ]


def changes(plan: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        c["path"]: (c.get("oldValue", ""), c.get("newValue", "")) for c in plan.get("changes", [])
    }


def spec_of(image: str, ref: dict[str, str], mode: str, **more: Any) -> dict[str, Any]:
    return {**ref, "image": image, "replicas": 2, "env": {"MODE": mode}, **more}


def test_validate_only_changes_nothing_on_the_engine(
    compose_server: ServerProcess, engine: docker.APIClient
) -> None:
    image = ensure_busybox_image(engine)
    namespace = unique_name("e2e")
    ref = {"service_id": "web", "namespace": namespace}
    try:
        first = call(
            compose_server,
            "StartDeployment",
            {"spec": spec_of(image, ref, "a"), "change_cause": "first"},
        )
        assert first["status"]["revision"] == "1"
        assert first["plan"]["action"] == "PLAN_ACTION_CREATE"
        settled = follow_rollout(compose_server, ref)
        assert settled["rollout"]["state"] == "ROLLOUT_STATE_SUCCEEDED"
        assert settled["observedRevision"] == "1"
        before = engine_state(engine, namespace)
        assert len(before["containers"]) == 2 and before["volumes"]

        # Plans: each computed against revision 1, none changing anything on the engine.
        planned = call(
            compose_server,
            "StartDeployment",
            {"spec": spec_of(image, ref, "b"), "validate_only": True},
        )
        assert planned["plan"]["action"] == "PLAN_ACTION_REPLACE"
        assert planned["plan"]["revision"] == "1"
        assert changes(planned["plan"]) == {"spec.env['MODE']": ("a", "b")}
        configured = call(
            compose_server,
            "ApplyConfig",
            {"patch": {**ref, "set": {"LEVEL": "2"}}, "validate_only": True},
        )
        assert configured["plan"]["action"] == "PLAN_ACTION_ROLLING_RESTART"
        scaled = call(
            compose_server, "ScaleDeployment", {**ref, "replicas": 5, "validate_only": True}
        )
        assert scaled["plan"]["action"] == "PLAN_ACTION_IN_PLACE"
        assert changes(scaled["plan"]) == {"spec.replicas": ("2", "5")}
        assert engine_state(engine, namespace) == before, "validate_only changed the engine"

        # A change made against the plan's revision; a second one against it is stale.
        applied = call(
            compose_server,
            "StartDeployment",
            {"spec": spec_of(image, ref, "b"), "expected_revision": "1"},
        )
        assert applied["status"]["revision"] == "2"
        assert applied["status"]["rollout"]["state"] == "ROLLOUT_STATE_SUCCEEDED"
        changed = engine_state(engine, namespace)
        stale = grpcurl(
            compose_server,
            f"{SERVICE}/StartDeployment",
            data={"spec": spec_of(image, ref, "c"), "expected_revision": "1"},
            check=False,
        )
        assert stale.returncode == ABORTED_EXIT and "REVISION_CONFLICT" in stale.stderr
        assert engine_state(engine, namespace) == changed, "a stale change changed the engine"
        assert [e["MODE"] for e in container_env(engine, namespace, "web")] == ["b", "b"]
    finally:
        remove_project(engine, namespace)


def test_rollback_and_a_crash_loop_through_grpcurl(
    compose_server: ServerProcess, engine: docker.APIClient
) -> None:
    image = ensure_busybox_image(engine)
    namespace = unique_name("e2e")
    ref = {"service_id": "web", "namespace": namespace}
    try:
        call(
            compose_server,
            "StartDeployment",
            {"spec": spec_of(image, ref, "a"), "change_cause": "first"},
        )
        call(
            compose_server,
            "StartDeployment",
            {"spec": spec_of(image, ref, "b"), "change_cause": "mode b"},
        )
        assert [e["MODE"] for e in container_env(engine, namespace, "web")] == ["b", "b"]
        history = call(compose_server, "ListRevisions", ref)["revisions"]
        assert [(r["number"], r.get("changeCause")) for r in history] == [
            ("2", "mode b"),
            ("1", "first"),
        ]

        # A rollback's plan changes nothing; the rollback runs revision 1's environment.
        before = engine_state(engine, namespace)
        back_plan = call(
            compose_server,
            "RollbackDeployment",
            {**ref, "to_revision": "1", "validate_only": True},
        )
        assert back_plan["plan"]["action"] == "PLAN_ACTION_REPLACE"
        assert changes(back_plan["plan"]) == {"spec.env['MODE']": ("b", "a")}
        assert engine_state(engine, namespace) == before
        rolled = call(compose_server, "RollbackDeployment", {**ref, "change_cause": "undo"})
        assert rolled["status"]["revision"] == "3"
        assert rolled["status"]["observedRevision"] == "3"
        assert [e["MODE"] for e in container_env(engine, namespace, "web")] == ["a", "a"]
        newest = call(compose_server, "ListRevisions", {**ref, "page_size": 1})["revisions"][0]
        assert (newest["number"], newest["rollbackOf"]) == ("3", "1")

        # A crashing command: the call answers with the failed rollout and its reason,
        # and revision 3's replicas keep running.
        crash = spec_of(image, ref, "a", command=["/bin/sh", "-c", "exit 3"])
        failed = call(compose_server, "StartDeployment", {"spec": crash})["status"]
        assert failed["rollout"]["state"] == "ROLLOUT_STATE_FAILED"
        assert failed["rollout"]["reason"] == "CRASH_LOOP"
        assert (failed["revision"], failed["observedRevision"]) == ("4", "3")
        assert failed["readyReplicas"] == 2
        assert [e["MODE"] for e in container_env(engine, namespace, "web")] == ["a", "a"]
    finally:
        remove_project(engine, namespace)
