"""Every limit, tried just under, at and just over its bound: the model and the real server.

The cases are derived from the constants (``models.MAX_*``, ``convert``'s interval
bounds, ``paging.MAX_PAGE_SIZE``...), so a changed constant changes the test. Each
``Bound`` says how to build an input of size ``n`` (a count, a length in characters or
bytes, a quantity) and which field a refusal must name. Below the lowest valid value
and above the highest, the model reports exactly that field and the server answers
INVALID_ARGUMENT naming it and creates nothing; inside, the model has nothing to say
and the server serves the call.

Byte bounds are filled with two-byte characters where the bound is even, so that
counting characters instead of bytes would be caught.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_controller import convert, paging
from alphaswarm_core.providers import models
from alphaswarm_core.providers.errors import FieldViolation, InvalidSpecError
from alphaswarm_core.providers.models import (
    ConfigMapPatch,
    DeploymentSpec,
    PortSpec,
    Resources,
    check_alias,
    validate_service_ref,
)
from tests.security.test_fuzz import ServerThread
from tests.service.rich_status import details

Request = tuple[str, Any]
"""An RPC name and its request message."""


def shown(key: str, limit: int = 64) -> str:
    """How a field path quotes a map key: repr, shortened past 64 characters."""
    return repr(key if len(key) <= limit else key[: limit - 3] + "...")


def text_of_bytes(n: int) -> str:
    """``n`` bytes of UTF-8, mostly two-byte characters (so a character count is wrong)."""
    return "é" * (n // 2) + "a" * (n % 2)


def filled(total: int, per_value: int, prefix: str) -> dict[str, str]:
    """Entries whose keys and values take exactly ``total`` bytes, no value above
    ``per_value`` bytes (keys ``prefix0``, ``prefix1``..., the last one shortened to fit)."""
    data: dict[str, str] = {}
    left = total
    for index in itertools.count():
        if left <= 0:
            break
        key = f"{prefix}{index}"
        if left <= len(key):
            data[key[:left]] = ""
            break
        size = min(per_value, left - len(key))
        data[key] = text_of_bytes(size)
        left -= len(key) + size
    assert sum(len(k) + len(v.encode()) for k, v in data.items()) == max(total, 0)
    return data


BASE_ID = "web"
"""The service id of the specs and patches below; requests address a fresh one instead."""


def spec(**fields: object) -> DeploymentSpec:
    base: dict[str, object] = {"service_id": BASE_ID, "command": ("sleep", "1")}
    return DeploymentSpec(**{**base, **fields})  # type: ignore[arg-type]


def patch(**fields: object) -> ConfigMapPatch:
    # A key to remove, so that an empty ``set`` is not refused for being an empty patch.
    base: dict[str, object] = {"service_id": BASE_ID, "remove": ("unused",)}
    return ConfigMapPatch(**{**base, **fields})  # type: ignore[arg-type]


def violations(check: Callable[[], object]) -> list[FieldViolation]:
    try:
        check()
    except InvalidSpecError as error:
        return list(error.violations)
    return []


# -- models to wire messages ---------------------------------------------------------------------


def spec_proto(made: DeploymentSpec, sid: str) -> types.DeploymentSpec:
    return types.DeploymentSpec(
        service_id=sid if made.service_id == BASE_ID else made.service_id,
        namespace=made.namespace,
        image=made.image,
        command=list(made.command),
        env=dict(made.env),
        replicas=made.replicas,
        labels=dict(made.labels),
        ports=[
            types.PortSpec(container_port=p.container_port, host_port=p.host_port, protocol="tcp")
            for p in made.ports
        ],
        resources=types.Resources(cpu=made.resources.cpu, memory=made.resources.memory),
        provider_options=dict(made.provider_options),
        progress_deadline=Duration(
            seconds=int(made.progress_deadline_seconds),
            nanos=round(made.progress_deadline_seconds % 1 * NANOS),
        ),
    )


def start(made: DeploymentSpec, service_id: str) -> Request:
    return "StartDeployment", pb.StartDeploymentRequest(spec=spec_proto(made, service_id))


def apply(made: ConfigMapPatch, service_id: str) -> Request:
    message = types.ConfigMapPatch(
        service_id=service_id,
        set=dict(made.set),
        remove=list(made.remove),
        expected_version=made.expected_version,
    )
    return "ApplyConfig", pb.ApplyConfigRequest(patch=message)


def no_config(n: int) -> Mapping[str, str]:
    return {}


@dataclass(frozen=True)
class Bound:
    """One limit: inputs of size ``n`` are valid for ``low <= n <= high``."""

    name: str
    low: int
    high: int
    path: Callable[[int], str]
    """The field a refusal of size ``n`` names."""
    model: Callable[[int], list[FieldViolation]]
    """The model's violations for size ``n``."""
    request: Callable[[int, str], Request]
    """The RPC for size ``n``, addressing the fresh service ``sid`` where it names one."""
    accepted: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.OK})
    """What the server answers a valid input with (a mismatched version is ABORTED...)."""
    signed: bool = False
    """Whether ``low - 1`` is sent even when negative (an int32 field), rather than
    being a size that cannot exist."""
    probe_below: bool = True
    """False where ``low - 1`` means something else on the wire (an empty provider is
    the default one, not a missing one)."""
    existing: Callable[[int], Mapping[str, str]] = no_config
    """Config the service already holds before the request (merged bounds)."""

    def sizes(self) -> list[int]:
        below = [self.low - 1] if self.below_is_probed() else []
        return sorted({*below, self.low, self.low + 1, self.high - 1, self.high, self.high + 1})

    def below_is_probed(self) -> bool:
        return self.probe_below and (self.low > 0 or self.signed)


def fixed(path: str) -> Callable[[int], str]:
    return lambda n: path


def spec_bound(
    name: str,
    low: int,
    high: int,
    path: Callable[[int], str],
    *,
    signed: bool = False,
    probe_below: bool = True,
    **made: Any,
) -> Bound:
    """A limit of ``DeploymentSpec``: ``made`` maps each spec field to a builder of size n."""

    def build(n: int) -> DeploymentSpec:
        return spec(**{key: make(n) for key, make in made.items()})

    return Bound(
        name,
        low,
        high,
        path,
        model=lambda n: build(n).violations(),
        request=lambda n, sid: start(build(n), sid),
        signed=signed,
        probe_below=probe_below,
    )


def patch_bound(
    name: str,
    low: int,
    high: int,
    path: Callable[[int], str],
    *,
    existing: Callable[[int], Mapping[str, str]] = no_config,
    accepted: frozenset[grpc.StatusCode] = frozenset({grpc.StatusCode.OK}),
    probe_below: bool = True,
    **made: Any,
) -> Bound:
    """A limit of ``ConfigMapPatch``, checked alone and merged into ``existing`` config."""

    def build(n: int) -> ConfigMapPatch:
        return patch(**{key: make(n) for key, make in made.items()})

    def model(n: int) -> list[FieldViolation]:
        made = build(n)
        return made.violations() or violations(lambda: made.applied_to(existing(n)))

    return Bound(
        name,
        low,
        high,
        path,
        model=model,
        request=lambda n, sid: apply(build(n), sid),
        accepted=accepted,
        existing=existing,
        probe_below=probe_below,
    )


def interval(n: int) -> Duration:
    return Duration(seconds=n // 10**9, nanos=n % 10**9)


def rpc_violations(convert_call: Callable[[], object]) -> list[FieldViolation]:
    return violations(convert_call)


def alias_violations(alias: str) -> list[FieldViolation]:
    found: list[FieldViolation] = []
    check_alias(found, "provider", alias)
    return found


def many(n: int, key: Callable[[int], str], value: str = "v") -> dict[str, str]:
    return {key(i): value for i in range(n)}


NANOS = 10**9
OPTION_KEY = "o"
CONFIG_KEY = "c"

BOUNDS = [
    spec_bound(
        "replicas",
        0,
        models.MAX_REPLICAS,
        fixed("spec.replicas"),
        signed=True,
        replicas=lambda n: n,
    ),
    Bound(
        "scale_replicas",
        0,
        models.MAX_REPLICAS,
        fixed("replicas"),
        model=lambda n: rpc_violations(lambda: convert.replicas(n)),
        request=lambda n, sid: (
            "ScaleDeployment",
            pb.ScaleDeploymentRequest(service_id=sid, replicas=n),
        ),
        signed=True,
    ),
    spec_bound(
        "progress_deadline_ms",
        round(models.MIN_PROGRESS_DEADLINE_SECONDS * 1000),
        round(models.MAX_PROGRESS_DEADLINE_SECONDS * 1000),
        fixed("spec.progress_deadline"),
        progress_deadline_seconds=lambda n: n / 1000,
    ),
    spec_bound(
        "service_id_length",
        1,
        models.MAX_NAME_LENGTH,
        fixed("spec.service_id"),
        service_id=lambda n: "s" * n,
    ),
    spec_bound(
        "namespace_length",
        1,
        models.MAX_NAME_LENGTH,
        fixed("spec.namespace"),
        probe_below=False,  # an empty namespace is the default one
        namespace=lambda n: "n" * n,
    ),
    Bound(
        "service_ref_length",
        1,
        models.MAX_NAME_LENGTH,
        fixed("service_id"),
        model=lambda n: violations(lambda: validate_service_ref("r" * n, "default")),
        request=lambda n, sid: (
            "GetDeploymentStatus",
            pb.GetDeploymentStatusRequest(service_id="r" * n),
        ),
        accepted=frozenset({grpc.StatusCode.NOT_FOUND}),  # valid, but no such service
    ),
    Bound(
        "alias_length",
        1,
        models.MAX_ALIAS_LENGTH,
        fixed("provider"),
        model=lambda n: alias_violations("p" * n),
        request=lambda n, sid: ("ListDeployments", pb.ListDeploymentsRequest(provider="p" * n)),
        accepted=frozenset({grpc.StatusCode.NOT_FOUND}),  # valid, but not registered
        probe_below=False,  # an empty provider is the server's default one
    ),
    spec_bound(
        "image_length",
        0,
        models.MAX_IMAGE_LENGTH,
        fixed("spec.image"),
        image=lambda n: "i" * n,
    ),
    spec_bound(
        "command_args",
        0,
        models.MAX_COMMAND_ARGS,
        fixed("spec.command"),
        image=lambda n: "busybox",
        command=lambda n: ("sh",) * n,
    ),
    spec_bound(
        "arg_bytes",
        0,
        models.MAX_ARG_BYTES,
        fixed("spec.command[1]"),
        command=lambda n: ("sh", text_of_bytes(n)),
    ),
    spec_bound(
        "env_entries",
        0,
        models.MAX_ENV_ENTRIES,
        fixed("spec.env"),
        env=lambda n: many(n, lambda i: f"E{i}"),
    ),
    spec_bound(
        "env_key_length",
        1,
        models.MAX_ENV_KEY_LENGTH,
        lambda n: f"spec.env[{shown('K' * n)}]",
        env=lambda n: {"K" * n: "v"},
    ),
    spec_bound(
        "env_value_bytes",
        0,
        models.MAX_ENV_VALUE_BYTES,
        fixed("spec.env['K']"),
        env=lambda n: {"K": text_of_bytes(n)},
    ),
    spec_bound(
        "env_total_bytes",
        0,
        models.MAX_ENV_TOTAL_BYTES,
        fixed("spec.env"),
        env=lambda n: filled(n, models.MAX_ENV_VALUE_BYTES, "E"),
    ),
    spec_bound(
        "labels",
        0,
        models.MAX_LABELS,
        fixed("spec.labels"),
        labels=lambda n: many(n, lambda i: f"l{i}"),
    ),
    spec_bound(
        "label_name_length",
        1,
        models.MAX_NAME_LENGTH,
        lambda n: f"spec.labels[{shown('l' * n)}]",
        labels=lambda n: {"l" * n: "v"},
    ),
    spec_bound(
        "label_prefix_length",
        1,
        models.MAX_LABEL_PREFIX_LENGTH,
        lambda n: f"spec.labels[{shown('p' * n + '/app')}]",
        labels=lambda n: {"p" * n + "/app": "v"},
    ),
    spec_bound(
        "label_value_length",
        0,
        models.MAX_LABEL_VALUE_LENGTH,
        fixed("spec.labels['app']"),
        labels=lambda n: {"app": "v" * n},
    ),
    spec_bound(
        "ports",
        0,
        models.MAX_PORTS,
        fixed("spec.ports"),
        ports=lambda n: tuple(PortSpec(1 + i) for i in range(n)),
    ),
    spec_bound(
        "container_port",
        models.MIN_PORT,
        models.MAX_PORT,
        fixed("spec.ports[0].container_port"),
        ports=lambda n: (PortSpec(n),),
    ),
    spec_bound(
        "host_port",
        0,
        models.MAX_PORT,
        fixed("spec.ports[0].host_port"),
        signed=True,
        ports=lambda n: (PortSpec(80, n),),
    ),
    spec_bound(
        "provider_options",
        0,
        models.MAX_OPTIONS,
        fixed("spec.provider_options"),
        provider_options=lambda n: many(n, lambda i: f"o{i}"),
    ),
    spec_bound(
        "option_key_length",
        1,
        models.MAX_OPTION_KEY_LENGTH,
        lambda n: f"spec.provider_options[{shown(OPTION_KEY * n)}]",
        provider_options=lambda n: {OPTION_KEY * n: "v"},
    ),
    spec_bound(
        "option_value_bytes",
        0,
        models.MAX_OPTION_VALUE_BYTES,
        fixed("spec.provider_options['o']"),
        provider_options=lambda n: {"o": text_of_bytes(n)},
    ),
    spec_bound(
        "cpu_millicores",
        1,
        models.MAX_CPU_MILLICORES,
        fixed("spec.resources.cpu"),
        resources=lambda n: Resources(cpu=f"{n}m"),
    ),
    spec_bound(
        "cpu_cores",
        1,
        models.MAX_CPU_MILLICORES,
        fixed("spec.resources.cpu"),
        resources=lambda n: Resources(cpu=f"{n // 1000}.{n % 1000:03d}"),
    ),
    spec_bound(
        "cpu_length",
        1,
        models.MAX_QUANTITY_LENGTH,
        fixed("spec.resources.cpu"),
        resources=lambda n: Resources(cpu="0" * (n - 1) + "1" if n else ""),
        probe_below=False,  # an empty quantity is no limit
    ),
    spec_bound(
        "memory_bytes",
        1,
        models.MAX_MEMORY_BYTES,
        fixed("spec.resources.memory"),
        resources=lambda n: Resources(memory=str(n)),
    ),
    spec_bound(
        "memory_length",
        1,
        models.MAX_QUANTITY_LENGTH,
        fixed("spec.resources.memory"),
        resources=lambda n: Resources(memory="0" * (n - 1) + "1" if n else ""),
        probe_below=False,  # an empty quantity is no limit
    ),
    patch_bound(
        "config_keys",
        0,
        models.MAX_CONFIG_KEYS,
        fixed("patch.set"),
        set=lambda n: many(n, lambda i: f"c{i}"),
    ),
    patch_bound(
        "config_keys_merged",
        1,
        models.MAX_CONFIG_KEYS,
        fixed("patch.set"),
        existing=lambda n: many(n - 1, lambda i: f"old{i}"),
        probe_below=False,  # the patch alone is one key
        set=lambda n: {"new": "v"},
    ),
    patch_bound(
        "config_key_length",
        1,
        models.MAX_CONFIG_KEY_LENGTH,
        lambda n: f"patch.set[{shown(CONFIG_KEY * n)}]",
        set=lambda n: {CONFIG_KEY * n: "v"},
    ),
    patch_bound(
        "config_remove_key_length",
        1,
        models.MAX_CONFIG_KEY_LENGTH,
        fixed("patch.remove[0]"),
        remove=lambda n: (CONFIG_KEY * n,),
    ),
    patch_bound(
        "config_value_bytes",
        0,
        models.MAX_CONFIG_VALUE_BYTES,
        fixed("patch.set['k']"),
        set=lambda n: {"k": text_of_bytes(n)},
    ),
    patch_bound(
        "config_total_bytes",
        0,
        models.MAX_CONFIG_TOTAL_BYTES,
        fixed("patch.set"),
        set=lambda n: filled(n, models.MAX_CONFIG_VALUE_BYTES, "C"),
    ),
    patch_bound(
        "config_total_bytes_merged",
        1,
        models.MAX_CONFIG_TOTAL_BYTES,
        fixed("patch.set"),
        existing=lambda n: filled(n - 1, models.MAX_CONFIG_VALUE_BYTES, "C"),
        probe_below=False,  # the patch alone is one byte
        set=lambda n: {"z": ""},
    ),
    patch_bound(
        "version_length",
        0,
        models.MAX_VERSION_LENGTH,
        fixed("patch.expected_version"),
        expected_version=lambda n: "9" * n,
        # A version the service does not have: the conflict, not a refusal of the input.
        accepted=frozenset({grpc.StatusCode.OK, grpc.StatusCode.ABORTED}),
    ),
    Bound(
        "tail_lines",
        0,
        models.MAX_TAIL_LINES,
        fixed("tail_lines"),
        model=lambda n: rpc_violations(
            lambda: convert.log_query_from_proto(pb.StreamLogsRequest(tail_lines=n))
        ),
        request=lambda n, sid: ("StreamLogs", pb.StreamLogsRequest(service_id=sid, tail_lines=n)),
        signed=True,
    ),
    Bound(
        "log_instance_id_length",
        0,
        convert.MAX_INSTANCE_ID_LENGTH,
        fixed("instance_id"),
        model=lambda n: rpc_violations(
            lambda: convert.log_query_from_proto(pb.StreamLogsRequest(instance_id="i" * n))
        ),
        request=lambda n, sid: (
            "StreamLogs",
            pb.StreamLogsRequest(service_id=sid, instance_id="i" * n),
        ),
        probe_below=False,
    ),
    Bound(
        "interval_nanoseconds",
        round(convert.MIN_INTERVAL_SECONDS * NANOS),
        round(convert.MAX_INTERVAL_SECONDS * NANOS),
        fixed("interval"),
        model=lambda n: rpc_violations(lambda: convert.interval_seconds(interval(n), True)),
        request=lambda n, sid: (
            "StreamMetrics",
            pb.StreamMetricsRequest(service_id=sid, interval=interval(n)),
        ),
    ),
    Bound(
        "page_size",
        0,
        paging.MAX_PAGE_SIZE,
        fixed("page_size"),
        model=lambda n: rpc_violations(lambda: paging.page_size(n)),
        request=lambda n, sid: ("ListDeployments", pb.ListDeploymentsRequest(page_size=n)),
        signed=True,
    ),
]

CASES = [pytest.param(bound, n, id=f"{bound.name}-{n}") for bound in BOUNDS for n in bound.sizes()]


def test_every_bound_is_probed_on_both_sides() -> None:
    for bound in BOUNDS:
        sizes = bound.sizes()
        assert bound.high + 1 in sizes and bound.high in sizes and bound.high - 1 in sizes
        assert bound.low in sizes and (bound.low - 1 in sizes) == bound.below_is_probed()


@pytest.mark.parametrize(("bound", "n"), CASES)
def test_model_accepts_inside_and_names_the_field_outside(bound: Bound, n: int) -> None:
    found = bound.model(n)
    if bound.low <= n <= bound.high:
        assert found == [], (bound.name, n)
    else:
        assert [v.field for v in found] == [bound.path(n)], (bound.name, n)


# -- through the real server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pb_grpc.ProviderServiceStub]:
    server = ServerThread(tmp_path_factory.mktemp("boundaries"))
    with grpc.insecure_channel(f"127.0.0.1:{server.running.port}") as channel:
        yield pb_grpc.ProviderServiceStub(channel)
    server.stop()


_service_ids = itertools.count()


def call(stub: pb_grpc.ProviderServiceStub, name: str, request: Any) -> grpc.StatusCode:
    """The call's status; a stream is read to its end, or to its first message."""
    try:
        answer = getattr(stub, name)(request, timeout=30)
        if name.startswith(("Stream", "Watch")):
            for _ in answer:
                answer.cancel()
                break
    except grpc.RpcError as error:
        code = error.code()
        if code is grpc.StatusCode.CANCELLED:  # our own cancel after the first message
            return grpc.StatusCode.OK
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            return code
        assert code is not grpc.StatusCode.INTERNAL, error
        return code
    return grpc.StatusCode.OK


def listed(stub: pb_grpc.ProviderServiceStub) -> set[tuple[str, str]]:
    answer = stub.ListDeployments(pb.ListDeploymentsRequest(page_size=1000), timeout=30)
    return {(s.namespace, s.service_id) for s in answer.deployments}


@pytest.mark.parametrize(("bound", "n"), CASES)
def test_server_serves_inside_and_refuses_outside_naming_the_field(
    stub: pb_grpc.ProviderServiceStub, bound: Bound, n: int
) -> None:
    sid = f"bound-{next(_service_ids)}"
    if bound.request(n, sid)[0] != "StartDeployment":
        start_request = pb.StartDeploymentRequest(
            spec=types.DeploymentSpec(service_id=sid, command=["sleep", "1"])
        )
        stub.StartDeployment(start_request, timeout=30)
        existing = bound.existing(n)
        if existing:
            stub.ApplyConfig(
                pb.ApplyConfigRequest(patch=types.ConfigMapPatch(service_id=sid, set=existing)),
                timeout=30,
            )
    before = listed(stub)
    name, request = bound.request(n, sid)
    if bound.low <= n <= bound.high:
        assert call(stub, name, request) in bound.accepted, (bound.name, n)
        return
    with pytest.raises(grpc.RpcError) as caught:
        call_raising(stub, name, request)
    found = details(caught.value)  # type: ignore[arg-type]
    assert found.code is grpc.StatusCode.INVALID_ARGUMENT, (bound.name, n, found.message)
    assert found.fields == [bound.path(n)], (bound.name, n)
    assert listed(stub) == before, "a refused call changed nothing"


def call_raising(stub: pb_grpc.ProviderServiceStub, name: str, request: Any) -> None:
    answer = getattr(stub, name)(request, timeout=30)
    if name.startswith(("Stream", "Watch")):
        for _ in answer:
            break


@pytest.mark.parametrize(
    "key", ["/app", "a..b/app", "a.-b/app", "a-.b/app", "-a/app", "a./app", "Example.com/app"]
)
def test_a_label_prefix_is_a_dns_subdomain(key: str) -> None:
    """Kubernetes refuses these qualified names; they used to pass here and fail later."""
    found = spec(labels={key: "v"}).violations()
    assert [v.field for v in found] == [f"spec.labels[{shown(key)}]"]


@pytest.mark.parametrize("key", ["app", "example.com/app", "a.b-c.d/app", "x/y", "1.2/a_b.c-d"])
def test_qualified_label_keys_are_accepted(key: str) -> None:
    assert spec(labels={key: "v"}).violations() == []
