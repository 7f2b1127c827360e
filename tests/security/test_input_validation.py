"""Every caller-supplied name, key and quantity is checked by full match and bounded.

Property tests generate valid values (accepted) and the same values with a
control character at every position, or too long, or from the wrong charset
(refused), first against the model checks, then through the real server and the
generated client: INVALID_ARGUMENT with a field violation naming the field, and
nothing created. ``re.match`` with ``$`` used to accept ``"web\\n"``, which named
a second deployment that printed like ``web``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm.provider.v1 import provider_service_pb2_grpc as pb_grpc
from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_core.providers.errors import FieldViolation, InvalidSpecError
from alphaswarm_core.providers.models import (
    MAX_CPU_MILLICORES,
    MAX_MEMORY_BYTES,
    ConfigMapPatch,
    DeploymentSpec,
    Resources,
    check_alias,
    config_environment,
    parse_cpu_millicores,
    parse_memory_bytes,
    validate_alias,
)
from alphaswarm_core.providers.registry import (
    BUILTIN_PROVIDERS,
    LazyProvider,
    Registry,
    register_provider_class,
)
from tests.budget import examples
from tests.fakes.memory_provider import MemoryProvider
from tests.security.test_fuzz import ServerThread
from tests.service.rich_status import details

# Characters that end or disguise a line, or hide text: C0 and C1 controls, DEL,
# the Unicode line/paragraph separators, a bidi override and a zero-width no-break space.
CONTROLS = [chr(c) for c in range(0x20)] + ["\x7f", "\x85", "\x9f"]
CONTROLS += ["\u2028", "\u2029", "\u202e", "\ufeff"]
control = st.sampled_from(CONTROLS)

lower_alnum = "abcdefghijklmnopqrstuvwxyz0123456789"
dns_labels = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", fullmatch=True)
env_keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,40}", fullmatch=True)
label_values = st.from_regex(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,40}[A-Za-z0-9])?)?", fullmatch=True)
config_keys = st.from_regex(r"[A-Za-z0-9_.-]{1,60}", fullmatch=True).filter(
    lambda key: not key.startswith("secret.")
)
option_keys = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,40}", fullmatch=True)
aliases = st.from_regex(r"[a-z][a-z0-9_]{0,62}", fullmatch=True)

PROPERTY = settings(
    max_examples=examples(300), deadline=None, suppress_health_check=list(HealthCheck)
)


def insert(value: str, char: str, position: int) -> str:
    position = min(position, len(value))
    return value[:position] + char + value[position:]


def violations_of(check: Callable[[], object]) -> list[FieldViolation]:
    try:
        check()
    except InvalidSpecError as error:
        return list(error.violations)
    return []


def spec(**fields: object) -> DeploymentSpec:
    base: dict[str, object] = {"service_id": "web", "command": ("sleep", "1")}
    return DeploymentSpec(**{**base, **fields})  # type: ignore[arg-type]


def patch(**fields: object) -> ConfigMapPatch:
    base: dict[str, object] = {"service_id": "web", "set": {"A": "1"}}
    return ConfigMapPatch(**{**base, **fields})  # type: ignore[arg-type]


# -- the model checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("char", CONTROLS)
def test_a_control_character_at_any_position_of_a_name_is_refused(char: str) -> None:
    name = "web-1"
    for position in range(len(name) + 1):
        bad = insert(name, char, position)
        for field, made in (
            ("spec.service_id", spec(service_id=bad)),
            ("spec.namespace", spec(namespace=bad)),
        ):
            assert [v.field for v in violations_of(made.validate)] == [field], repr(bad)


@pytest.mark.parametrize(
    ("field", "made"),
    [
        ("spec.service_id", spec(service_id="web\n")),
        ("spec.namespace", spec(namespace="ns\n")),
        ("spec.env['FOO\\n']", spec(env={"FOO\n": "x"})),
        ("spec.labels['app']", spec(labels={"app": "v\n"})),
        ("spec.labels['app\\n']", spec(labels={"app\n": "v"})),
        ("spec.labels['example.com\\n/app']", spec(labels={"example.com\n/app": "v"})),
        ("spec.provider_options['cwd\\n']", spec(provider_options={"cwd\n": "/"})),
        ("spec.image", spec(image="busybox\x1b[2J")),
        ("patch.set['KEY\\n']", patch(set={"KEY\n": "v"})),
        ("patch.remove[0]", patch(set={}, remove=("KEY\n",))),
    ],
)
def test_trailing_newline_is_refused(field: str, made: DeploymentSpec | ConfigMapPatch) -> None:
    assert [v.field for v in violations_of(made.validate)] == [field]


@PROPERTY
@given(
    name=dns_labels,
    namespace=dns_labels,
    env=env_keys,
    label=label_values,
    key=config_keys,
    option=option_keys,
)
def test_valid_values_are_accepted(
    *, name: str, namespace: str, env: str, label: str, key: str, option: str
) -> None:
    spec(
        service_id=name,
        namespace=namespace,
        env={env: "any\nvalue"},
        labels={"app": label},
        provider_options={option: "any value"},
    ).validate()
    patch(service_id=name, namespace=namespace, set={key: "v", f"secret.{env}": "s"}).validate()


@PROPERTY
@given(dns_labels, control, st.integers(0, 64))
def test_names_with_a_control_character_are_refused(name: str, char: str, at: int) -> None:
    bad = insert(name, char, at)
    assert [v.field for v in violations_of(spec(service_id=bad).validate)] == ["spec.service_id"]
    assert [v.field for v in violations_of(patch(namespace=bad).validate)] == ["patch.namespace"]


@PROPERTY
@given(
    env=env_keys,
    label=label_values,
    key=config_keys,
    option=option_keys,
    char=control,
    at=st.integers(0, 64),
)
def test_keys_and_values_with_a_control_character_are_refused(
    *, env: str, label: str, key: str, option: str, char: str, at: int
) -> None:
    for made, prefix in (
        (spec(env={insert(env, char, at): "x"}), "spec.env["),
        (spec(labels={"app": insert(label, char, at)}), "spec.labels["),
        (spec(labels={insert("app", char, at): "v"}), "spec.labels["),
        (spec(provider_options={insert(option, char, at): "v"}), "spec.provider_options["),
        (patch(set={insert(key, char, at): "v"}), "patch.set["),
        (patch(set={f"secret.{insert(env, char, at)}": "v"}), "patch.set["),
    ):
        found = violations_of(made.validate)
        assert len(found) == 1 and found[0].field.startswith(prefix), (made, found)


@PROPERTY
@given(st.text(min_size=1, max_size=80))
def test_names_match_the_dns_label_charset_exactly(text: str) -> None:
    valid = (
        len(text) <= 63
        and all(c in lower_alnum + "-" for c in text)
        and text[0] != "-"
        and text[-1] != "-"
    )
    assert (not violations_of(spec(service_id=text).validate)) == valid


@pytest.mark.parametrize(
    "name", ["a" * 64, "Web", "web_1", "-web", "web-", "wéb", "w\u0660b", "web\n", " web"]
)
def test_over_long_and_wrong_charset_names_are_refused(name: str) -> None:
    assert [v.field for v in violations_of(spec(service_id=name).validate)] == ["spec.service_id"]


@pytest.mark.parametrize("key", ["secret.", "secret.1X", "secret.A-B", "secret.a.b", "secret.\n"])
def test_secret_keys_need_an_environment_variable_name(key: str) -> None:
    found = violations_of(patch(set={key: "x"}).validate)
    assert [v.field for v in found] == [f"patch.set[{key!r}]"]


def test_secret_key_reaches_replicas_under_its_name() -> None:
    data = patch(set={"secret.DB_PASSWORD": "x", "plain.key": "y"}).validate().set
    assert config_environment(data) == {"DB_PASSWORD": "x", "plain.key": "y"}


def test_a_legacy_bad_secret_key_can_still_be_removed() -> None:
    patch(set={}, remove=("secret.",)).validate()


# -- aliases ------------------------------------------------------------------------------------


@PROPERTY
@given(aliases)
def test_valid_aliases_are_accepted(alias: str) -> None:
    assert validate_alias(alias) == alias


@PROPERTY
@given(aliases, control, st.integers(0, 64))
def test_aliases_with_a_control_character_are_refused(alias: str, char: str, at: int) -> None:
    found: list[FieldViolation] = []
    check_alias(found, "provider", insert(alias, char, at))
    assert [v.field for v in found] == ["provider"]


@pytest.mark.parametrize(
    "alias", ["", "a" * 64, "Local", "1aws", "_x", "docker-compose", "k8s.io", "x" * 100_000]
)
def test_over_long_and_wrong_charset_aliases_are_refused(alias: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        validate_alias(alias)
    assert [v.field for v in caught.value.violations] == ["provider"]
    assert len(caught.value.message) < 300


def test_every_builtin_alias_is_valid() -> None:
    for entry in BUILTIN_PROVIDERS:
        assert validate_alias(entry.alias) == entry.alias


@pytest.mark.parametrize("alias", ["docker-compose", "web\n", "Nomad", "a" * 64, ""])
def test_registry_refuses_invalid_aliases(alias: str) -> None:
    registry = Registry(builtins=())
    with pytest.raises(ValueError, match="not valid"):
        registry.register(alias, MemoryProvider)
    with pytest.raises(ValueError, match="not valid"):
        registry.register_lazy(LazyProvider(alias, "module:Class", kind="x"))
    with pytest.raises(ValueError, match="not valid"):

        class Named(MemoryProvider):
            provider_alias = alias

        register_provider_class(alias, registry=registry)(Named)
    assert registry.aliases() == []


# -- quantities ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpu", "millicores"),
    [("500m", 500), ("1.5", 1500), ("0.001", 1), ("2", 2000), ("1000", MAX_CPU_MILLICORES)],
)
def test_cpu_quantities(cpu: str, millicores: int) -> None:
    assert parse_cpu_millicores(cpu) == millicores
    spec(resources=Resources(cpu=cpu)).validate()


@pytest.mark.parametrize(
    "cpu",
    [
        "9" * 309,  # float("9"*309) is inf: used to be INTERNAL (OverflowError)
        "9" * 5000,
        "1000.001",
        "1000001m",
        "1e3",
        "0",
        "0m",
        "0.0001",
        "1.5\n",
        "\u0661",  # an Arabic-Indic digit: int() would take it
        "-1",
        "inf",
        "nan",
    ],
)
def test_unbounded_or_malformed_cpu_is_refused(cpu: str) -> None:
    found = violations_of(spec(resources=Resources(cpu=cpu)).validate)
    assert [v.field for v in found] == ["spec.resources.cpu"]


@pytest.mark.parametrize(
    ("memory", "size"),
    [("256Mi", 256 * 2**20), ("1Gi", 2**30), ("1000", 1000), ("1Pi", MAX_MEMORY_BYTES)],
)
def test_memory_quantities(memory: str, size: int) -> None:
    assert parse_memory_bytes(memory) == size
    spec(resources=Resources(memory=memory)).validate()


@pytest.mark.parametrize(
    "memory",
    [
        "9" * 4301,  # int() refuses more than 4300 digits: used to be INTERNAL
        "9" * 33,
        "1025Ti",
        "2P",
        str(MAX_MEMORY_BYTES + 1),
        "0",
        "0Gi",
        "1Gi\n",
        "1gi",
        "1.5Gi",
        "\u0661Gi",
    ],
)
def test_unbounded_or_malformed_memory_is_refused(memory: str) -> None:
    found = violations_of(spec(resources=Resources(memory=memory)).validate)
    assert [v.field for v in found] == ["spec.resources.memory"]


@PROPERTY
@given(st.text(max_size=40))
def test_quantity_parsing_only_ever_raises_value_error(text: str) -> None:
    for parse, bound in ((parse_cpu_millicores, MAX_CPU_MILLICORES), (parse_memory_bytes, None)):
        try:
            value = parse(text)
        except ValueError:
            continue
        assert value >= 0 and (bound is None or value <= bound)


# -- through the real server --------------------------------------------------------------------


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pb_grpc.ProviderServiceStub]:
    server = ServerThread(tmp_path_factory.mktemp("validation"))
    with grpc.insecure_channel(f"127.0.0.1:{server.running.port}") as channel:
        yield pb_grpc.ProviderServiceStub(channel)
    server.stop()


def refused_fields(call: Callable[[], object]) -> list[str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    found = details(caught.value)  # type: ignore[arg-type]
    assert found.code is grpc.StatusCode.INVALID_ARGUMENT, found.message
    return found.fields


def nothing_listed(stub: pb_grpc.ProviderServiceStub) -> None:
    listed = stub.ListDeployments(pb.ListDeploymentsRequest(), timeout=10)
    assert list(listed.deployments) == []


@pytest.mark.parametrize(
    ("field", "proto_spec"),
    [
        ("spec.service_id", types.DeploymentSpec(service_id="web\n", command=["sleep", "1"])),
        (
            "spec.namespace",
            types.DeploymentSpec(service_id="web", namespace="ns\n", command=["sleep", "1"]),
        ),
        (
            "spec.env['FOO\\n']",
            types.DeploymentSpec(service_id="web", command=["sleep", "1"], env={"FOO\n": "x"}),
        ),
        (
            "spec.labels['app']",
            types.DeploymentSpec(service_id="web", command=["sleep", "1"], labels={"app": "v\n"}),
        ),
        (
            "spec.resources.cpu",
            types.DeploymentSpec(
                service_id="web", command=["sleep", "1"], resources=types.Resources(cpu="9" * 309)
            ),
        ),
        (
            "spec.resources.memory",
            types.DeploymentSpec(
                service_id="web",
                command=["sleep", "1"],
                resources=types.Resources(memory="9" * 4301),
            ),
        ),
    ],
)
def test_attack_inputs_are_invalid_argument_and_create_nothing(
    stub: pb_grpc.ProviderServiceStub, field: str, proto_spec: types.DeploymentSpec
) -> None:
    request = pb.StartDeploymentRequest(spec=proto_spec)
    assert refused_fields(lambda: stub.StartDeployment(request, timeout=10)) == [field]
    nothing_listed(stub)


def test_secret_key_without_a_name_is_invalid_argument(stub: pb_grpc.ProviderServiceStub) -> None:
    request = pb.ApplyConfigRequest(
        patch=types.ConfigMapPatch(service_id="web", set={"secret.": "x"})
    )
    assert refused_fields(lambda: stub.ApplyConfig(request, timeout=10)) == ["patch.set['secret.']"]


@settings(max_examples=examples(150), deadline=None, suppress_health_check=list(HealthCheck))
@given(dns_labels, control, st.integers(0, 64))
def test_refs_with_a_control_character_are_refused_by_every_rpc(
    stub: pb_grpc.ProviderServiceStub, name: str, char: str, at: int
) -> None:
    bad = insert(name, char, at)
    calls: list[tuple[str, Callable[[], object]]] = [
        (
            "service_id",
            lambda: stub.GetDeploymentStatus(
                pb.GetDeploymentStatusRequest(service_id=bad), timeout=10
            ),
        ),
        (
            "namespace",
            lambda: stub.StopDeployment(
                pb.StopDeploymentRequest(service_id="web", namespace=bad), timeout=10
            ),
        ),
        (
            "service_id",
            lambda: stub.ScaleDeployment(
                pb.ScaleDeploymentRequest(service_id=bad, replicas=1), timeout=10
            ),
        ),
        (
            "namespace",
            lambda: stub.ListDeployments(pb.ListDeploymentsRequest(namespace=bad), timeout=10),
        ),
    ]
    for field, call in calls:
        assert refused_fields(call) == [field]
