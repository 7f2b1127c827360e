"""The ARM emulator refuses what ARM and ACI refuse: each rule of tests/fakes/arm_rules.py
and arm_store.py, straight over HTTP, so an emulator that turns lenient fails here."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import requests

from tests.fakes import arm_logs
from tests.fakes.arm_emulator import TOKEN_AUDIENCE_PREFIX, ArmEmulator
from tests.fakes.faults import Kind
from tests.waiting import until_sync

from .conftest import IMAGE

API = {"api-version": "2023-05-01"}


def container(name: str = "app", **props: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "image": IMAGE,
        "resources": {"requests": {"cpu": 1, "memoryInGB": 1.5}},
    }
    base.update(props)
    return {"name": name, "properties": base}


def sized(
    cpu: float, memory: float, name: str = "app", limits: dict[str, float] | None = None
) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"cpu": cpu, "memoryInGB": memory}}
    if limits:
        resources["limits"] = limits
    return container(name, resources=resources)


def group(**props: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"osType": "Linux", "containers": [container()]}
    base.update(props)
    return {"location": "westeurope", "properties": base}


class Client:
    def __init__(self, arm: ArmEmulator) -> None:
        self.arm = arm
        self.base = (
            f"{arm.base_url}/subscriptions/{arm.store.subscription_id}/resourceGroups/"
            "alphaswarm-rg/providers/Microsoft.ContainerInstance/containerGroups"
        )
        self.headers = {"Authorization": f"Bearer {TOKEN_AUDIENCE_PREFIX}{arm.base_url}"}

    def send(self, method: str, name: str = "", body: Any = None) -> requests.Response:
        url = f"{self.base}/{name}" if name else self.base
        return requests.request(
            method, url, params=API, json=body, headers=self.headers, timeout=10
        )

    def put(self, name: str, body: Any) -> requests.Response:
        return self.send("PUT", name, body)


@pytest.fixture
def client(arm: ArmEmulator) -> Client:
    return Client(arm)


def rejected(response: requests.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return str(error["message"])


def test_requests_need_an_api_version_and_a_token_for_the_right_audience(
    arm: ArmEmulator, client: Client
) -> None:
    no_version = requests.get(client.base, headers=client.headers, timeout=5)
    rejected(no_version, 400, "MissingApiVersionParameter")
    no_token = requests.get(client.base, params=API, timeout=5)
    rejected(no_token, 401, "AuthenticationFailed")
    other_cloud = {"Authorization": f"Bearer {TOKEN_AUDIENCE_PREFIX}https://management.azure.com"}
    wrong = requests.get(client.base, params=API, headers=other_cloud, timeout=5)
    rejected(wrong, 401, "InvalidAuthenticationTokenAudience")
    rejected(client.send("GET", "absent"), 404, "ResourceNotFound")


@pytest.mark.parametrize(
    ("name", "body", "code"),
    [
        ("Upper", group(), "InvalidContainerGroupName"),
        ("a--b", group(), "InvalidContainerGroupName"),
        ("-a", group(), "InvalidContainerGroupName"),
        ("a" * 64, group(), "InvalidContainerGroupName"),
        ("ok", {**group(), "location": ""}, "LocationRequired"),
        ("ok", group(osType=None), "InvalidOsType"),
        ("ok", group(restartPolicy="Sometimes"), "InvalidRestartPolicy"),
        ("ok", group(containers=[]), "ContainerGroupMissingContainers"),
        ("ok", group(containers=[container(f"c{i}") for i in range(61)]),
         "ContainerGroupContainersExceedLimit"),
        ("ok", group(containers=[container("App")]), "InvalidContainerName"),
        ("ok", group(containers=[container(), container()]), "DuplicateContainerName"),
        ("ok", group(containers=[container(image="")]), "InvalidContainerImage"),
        ("ok", group(containers=[container(resources={"requests": {"cpu": 1}})]),
         "ResourceRequestsNotSpecified"),
        ("ok", group(containers=[sized(1, 0.25)]), "InvalidMemoryRequirement"),
        ("ok", group(containers=[sized(0, 1)]), "InvalidCpuRequirement"),
        ("ok", group(containers=[sized(5, 1)]), "ContainerResourceRequestsExceedLimit"),
        ("ok", group(containers=[sized(1, 16.1)]), "ContainerResourceRequestsExceedLimit"),
        ("ok", group(containers=[sized(3, 1, "a"), sized(1.5, 1, "b")]),
         "ContainerGroupResourceRequestsExceedLimit"),
        ("ok", group(containers=[sized(2, 1, limits={"cpu": 1})]),
         "ResourceLimitsLessThanRequests"),
        ("ok", group(containers=[container(environmentVariables=[{"name": "a.b", "value": "x"}])]),
         "InvalidEnvironmentVariableName"),
        ("ok", group(containers=[container(environmentVariables=[{"name": "1A", "value": "x"}])]),
         "InvalidEnvironmentVariableName"),
        ("ok", group(containers=[container(environmentVariables=[{"name": "A"}])]),
         "InvalidEnvironmentVariable"),
        ("ok", group(containers=[container(
            environmentVariables=[{"name": "A", "value": "x", "secureValue": "y"}])]),
         "InvalidEnvironmentVariable"),
        ("ok", group(containers=[container(ports=[{"port": 70000}])]), "InvalidContainerPort"),
        ("ok", group(ipAddress={"type": "Public", "ports": [{"port": p} for p in range(1, 7)]}),
         "IpAddressPortsExceedLimit"),
        ("ok", group(ipAddress={"type": "Elsewhere", "ports": []}), "InvalidIpAddress"),
        ("ok", {**group(), "tags": {f"t{i}": "v" for i in range(51)}}, "InvalidTagCount"),
        ("ok", {**group(), "tags": {"a/b": "v"}}, "InvalidTagNameCharacters"),
        ("ok", {**group(), "tags": {"k" * 513: "v"}}, "InvalidTagNameLength"),
        ("ok", {**group(), "tags": {"k": "v" * 257}}, "InvalidTagValueLength"),
    ],
)  # fmt: skip
def test_put_refuses_what_aci_refuses(client: Client, name: str, body: Any, code: str) -> None:
    rejected(client.put(name, body), 400, code)
    rejected(client.send("GET", name), 404, "ResourceNotFound")


def test_limits_themselves_are_accepted(client: Client) -> None:
    edge = group(
        containers=[
            sized(2.5, 10.3, "a"),
            sized(1.5, 5.7, "b"),
        ],
        ipAddress={"type": "Public", "ports": [{"port": p} for p in range(1, 6)]},
    )
    edge["tags"] = {f"t{i}": "v" * 256 for i in range(50)}
    assert client.put("a" * 63, edge).status_code == 201


def test_secure_values_are_never_returned(client: Client) -> None:
    secret = container(environmentVariables=[{"name": "PASSWORD", "secureValue": "hunter2"}])
    assert client.put("vault", group(containers=[secret])).status_code == 201
    shown = client.send("GET", "vault")
    assert "hunter2" not in shown.text
    variables = shown.json()["properties"]["containers"][0]["properties"]["environmentVariables"]
    assert variables == [{"name": "PASSWORD"}]
    # Sending back what was read is refused: neither value nor secureValue.
    again = copy.deepcopy(shown.json())
    assert again["properties"].pop("provisioningState")
    again["properties"].pop("instanceView")
    for each in again["properties"]["containers"]:
        each["properties"].pop("instanceView")
    rejected(client.put("vault", again), 400, "InvalidEnvironmentVariable")


def test_provisioning_takes_time_and_a_changing_group_refuses_operations() -> None:
    # Both delays far longer than the test: on a loaded machine the default 0.2 s delete
    # could end before the next request and the group be gone instead of Deleting.
    with ArmEmulator(provision_delay=30.0, delete_delay=30.0) as arm:
        client = Client(arm)
        assert client.put("young", group()).status_code == 201
        shown = client.send("GET", "young").json()
        assert shown["properties"]["provisioningState"] == "Pending"
        assert shown["properties"]["instanceView"]["state"] == "Pending"
        rejected(client.send("POST", "young/stop"), 409, "Conflict")
        rejected(client.send("POST", "young/start"), 409, "Conflict")
        rejected(client.send("PATCH", "young", {"tags": {"a": "b"}}), 409, "Conflict")
        rejected(client.put("young", group()), 409, "Conflict")
        assert client.send("DELETE", "young").status_code == 202
        rejected(client.put("young", group()), 409, "Conflict")  # being deleted


def test_default_provisioning_is_not_instant(arm: ArmEmulator) -> None:
    store = arm.store
    assert min(store.provision_delay, store.run_delay, store.start_delay, store.delete_delay) > 0


def test_create_rate_and_group_quota_are_enforced(arm: ArmEmulator, client: Client) -> None:
    arm.store.creates.limit = 2
    assert client.put("one", group()).status_code == 201
    assert client.put("two", group()).status_code == 201
    throttled = client.put("three", group())
    rejected(throttled, 429, "TooManyRequests")
    assert int(throttled.headers["Retry-After"]) >= 1
    arm.store.creates.limit = 100
    arm.store.max_groups = 2
    rejected(client.put("three", group()), 409, "ContainerGroupQuotaReached")


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        (Kind.THROTTLED, 429, "TooManyRequests"),
        (Kind.UNAVAILABLE, 503, "ServiceUnavailable"),
        (Kind.CONFLICT, 409, "Conflict"),
        (Kind.GONE, 404, "ResourceNotFound"),
        (Kind.DENIED, 403, "AuthorizationFailed"),
    ],
)
def test_shared_faults_take_arms_wire_form(
    arm: ArmEmulator, client: Client, kind: Kind, status: int, code: str
) -> None:
    arm.faults.inject("arm:ContainerGroups_ListByResourceGroup", kind, retry_after=2)
    answer = client.send("GET")
    rejected(answer, status, code)
    assert answer.headers["Retry-After"] == "2"
    assert client.send("GET").status_code == 200
    assert arm.faults.count("arm:ContainerGroups_ListByResourceGroup") == 2


# -- Containers - List Logs (arm_logs) ----------------------------------------------------------

STAMPED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z line (\d+) of (.*)")


def logs(client: Client, group: str, container: str = "app", **query: str) -> requests.Response:
    return requests.get(
        f"{client.base}/{group}/containers/{container}/logs",
        params={**API, **query},
        headers=client.headers,
        timeout=10,
    )


def running(client: Client, name: str, lines: int, **props: Any) -> None:
    """PUT a group and wait (bounded) until its container has written ``lines`` lines."""
    assert client.put(name, group(**props)).status_code == 201
    until_sync(
        lambda: logs(client, name),
        f"{lines} lines of {name}",
        holds=lambda answer: (
            answer.status_code == 200 and answer.json()["content"].count("\n") >= lines
        ),
    )


def test_logs_are_the_running_containers_lines_with_tail_and_timestamps(client: Client) -> None:
    running(client, "talky", 4, containers=[container(command=["echo", "hi"])])
    whole = logs(client, "talky", timestamps="true")
    assert whole.status_code == 200 and set(whole.json()) == {"content"}
    text = whole.json()["content"]
    assert text.endswith("\n")
    matches = [STAMPED.fullmatch(line) for line in text.splitlines()]
    assert all(matches), text
    numbers = [int(m[1]) for m in matches if m]
    assert numbers == list(range(len(numbers))) and {m[2] for m in matches if m} == {"echo hi"}
    tail = logs(client, "talky", tail="2").json()["content"].splitlines()
    assert len(tail) == 2 and int(tail[1].split()[1]) == int(tail[0].split()[1]) + 1
    assert int(tail[0].split()[1]) >= numbers[-1] - 1, "the newest lines"
    assert not STAMPED.match(tail[0]), "no stamps unless asked"


def test_logs_of_a_container_not_running_or_missing_are_refused(client: Client) -> None:
    with ArmEmulator(provision_delay=30.0) as arm:
        slow = Client(arm)
        assert slow.put("young", group()).status_code == 201
        message = rejected(logs(slow, "young"), 404, "ContainerLogNotAvailable")
        assert "is not available yet" in message
    running(client, "there", 1)
    rejected(logs(client, "there", "nobody"), 404, "ContainerNotFound")
    rejected(logs(client, "absent"), 404, "ResourceNotFound")
    for bad_tail in ("x", "0", "-3"):
        rejected(logs(client, "there", tail=bad_tail), 400, "InvalidParameter")
    rejected(logs(client, "there", timestamps="yes"), 400, "InvalidParameter")
    assert client.send("POST", "there/stop").status_code == 204
    rejected(logs(client, "there"), 404, "ContainerLogNotAvailable")


def test_a_restarted_container_keeps_only_its_new_log(client: Client) -> None:
    running(client, "again", 5)
    assert client.send("POST", "again/stop").status_code == 204
    assert client.send("POST", "again/start").status_code == 202
    answer = until_sync(
        lambda: logs(client, "again"),
        "lines of the group put again",
        holds=lambda answer: answer.status_code == 200 and bool(answer.json()["content"]),
    )
    assert answer.json()["content"].startswith("line 0 of ")


def test_logs_stop_at_four_megabytes_keeping_the_newest() -> None:
    props = {"properties": {"image": "x" * 200}}
    now = 1_700_000_000.0
    started = now - 100_000 * arm_logs.LINE_INTERVAL  # 100k lines of ~220 bytes
    text = arm_logs.content(props, started, now, tail=None, timestamps=False)
    assert len(text.encode()) <= arm_logs.MAX_CONTENT_BYTES
    assert len(text.encode()) > arm_logs.MAX_CONTENT_BYTES - 300
    assert text.splitlines()[-1].startswith("line 99999 of ")
    assert not text.startswith("line 0 "), "the oldest lines are the ones left out"


def test_faults_reach_the_logs_operation(client: Client) -> None:
    running(client, "faulty", 1)
    client.arm.faults.inject("arm:Containers_ListLogs", Kind.THROTTLED, retry_after=1)
    answer = logs(client, "faulty")
    rejected(answer, 429, "TooManyRequests")
    assert answer.headers["Retry-After"] == "1"
    assert logs(client, "faulty").status_code == 200
