"""The small pieces the server and the providers share, each pinned by its exact result.

The service tests reach most of these through a running server, where a wrong
message or a dropped field often goes unnoticed (a mutation score showed which):
the models' helpers that only providers call, the translation of log lines, the
tokens file's descriptions of what it found, the registry's book-keeping.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from alphaswarm.provider.v1 import types_pb2 as types
from alphaswarm_controller import convert
from alphaswarm_controller.security.auth import CallerPermissionDenied, ScopeAuthorization
from alphaswarm_controller.security.tokens import (
    TokensFileError,
    TokenStore,
    hash_token,
    new_token,
)
from alphaswarm_core.call import CallContext, Caller
from alphaswarm_core.providers.errors import (
    InfrastructureProviderUnavailable,
    InvalidSpecError,
    ProviderNotFoundError,
)
from alphaswarm_core.providers.models import (
    MAX_LOG_LINE_BYTES,
    MAX_TAIL_LINES,
    SECRET_MASK,
    DeploymentEvent,
    EventKind,
    LogEntry,
    LogQuery,
    LogStreamKind,
    ProviderKind,
    Resources,
    config_environment,
    is_secret_key,
    masked_config,
    parse_cpu_millicores,
    parse_memory_bytes,
    validate_service_ref,
)
from alphaswarm_core.providers.protocol import InfrastructureProvider
from alphaswarm_core.providers.registry import (
    LazyProvider,
    ProviderDescription,
    Registry,
    _module_present,
    register_provider_class,
)
from tests.fakes.memory_provider import MemoryProvider

NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)

# -- models ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "text", "truncated"),
    [
        ("plain", "plain", False),
        ("line\n", "line", False),
        ("crlf\r\n", "crlf", False),
        ("two\n\n", "two", False),
        (b"bytes\n", "bytes", False),
        (b"bad \xff byte", "bad \ufffd byte", False),
        ("a" * MAX_LOG_LINE_BYTES, "a" * MAX_LOG_LINE_BYTES, False),
        ("a" * MAX_LOG_LINE_BYTES + "\n", "a" * MAX_LOG_LINE_BYTES, False),
        ("a" * (MAX_LOG_LINE_BYTES + 1), "a" * MAX_LOG_LINE_BYTES, True),
        # Cut inside a two-byte character: the half left is replaced, not kept as is.
        (
            "a" + "é" * MAX_LOG_LINE_BYTES,
            "a" + "é" * (MAX_LOG_LINE_BYTES // 2 - 1) + "\ufffd",
            True,
        ),
    ],
)
def test_a_log_entry_is_one_bounded_line(raw: str | bytes, text: str, truncated: bool) -> None:
    entry = LogEntry.bounded("web-1", NOW, raw, LogStreamKind.STDERR)
    assert entry == LogEntry("web-1", NOW, text, LogStreamKind.STDERR, truncated)


def test_a_log_entry_stream_defaults_to_unspecified() -> None:
    assert LogEntry.bounded("i", NOW, "x").stream is LogStreamKind.UNSPECIFIED


def test_log_query_tail_and_filters() -> None:
    assert LogQuery().tail == MAX_TAIL_LINES
    assert LogQuery(tail_lines=5).tail == 5
    entry = LogEntry("web-1", NOW, "x")
    assert LogQuery().wants(entry)
    assert LogQuery(instance_id="web-1").wants(entry)
    assert not LogQuery(instance_id="web-2").wants(entry)
    assert LogQuery(since=NOW).wants(entry)
    assert not LogQuery(since=NOW + timedelta(microseconds=1)).wants(entry)
    assert not LogQuery(instance_id="web-1", since=NOW + timedelta(seconds=1)).wants(entry)


def test_resources_in_numbers() -> None:
    assert Resources().cpu_millicores() is None
    assert Resources().memory_bytes() is None
    assert Resources(cpu="250m", memory="1Ki").cpu_millicores() == 250
    assert Resources(cpu="1.5", memory="1Ki").memory_bytes() == 1024
    with pytest.raises(ValueError, match="not a CPU quantity"):
        Resources(cpu="lots").cpu_millicores()


def test_secret_keys_are_masked_for_callers_and_renamed_for_replicas() -> None:
    data = {"secret.DB": "pw", "secretive": "x", "plain": "y"}
    assert [is_secret_key(k) for k in data] == [True, False, False]
    assert masked_config(data) == {"secret.DB": SECRET_MASK, "secretive": "x", "plain": "y"}
    assert config_environment(data) == {"DB": "pw", "secretive": "x", "plain": "y"}


# -- convert --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "wire"),
    [
        (LogStreamKind.STDOUT, types.LOG_STREAM_STDOUT),
        (LogStreamKind.STDERR, types.LOG_STREAM_STDERR),
        (LogStreamKind.UNSPECIFIED, types.LOG_STREAM_UNSPECIFIED),
    ],
)
def test_log_entries_on_the_wire(stream: LogStreamKind, wire: int) -> None:
    made = convert.log_entry_to_proto(LogEntry("web-1", NOW, "hello", stream, True))
    assert made.instance_id == "web-1"
    assert made.text == "hello"
    assert made.truncated is True
    assert made.stream == wire
    assert made.time.ToDatetime(tzinfo=UTC) == NOW
    assert not convert.log_entry_to_proto(LogEntry("i", NOW, "")).truncated


def test_the_snapshot_marker_carries_no_status() -> None:
    done = convert.event_to_proto(DeploymentEvent(EventKind.SNAPSHOT_DONE))
    assert done.event == types.DEPLOYMENT_EVENT_INITIAL_SNAPSHOT_DONE
    assert not done.HasField("status")


# -- tokens ---------------------------------------------------------------------------------------


def test_new_tokens_are_long_random_and_url_safe() -> None:
    made = {new_token() for _ in range(20)}
    assert len(made) == 20
    for token in made:
        assert token.startswith("asw_") and len(token) == 4 + 43  # 32 bytes, base64url
        assert set(token[4:]) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )


def _failing_yaml(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    from alphaswarm_controller.security import strict_yaml

    def load(text: str) -> Any:
        raise error

    monkeypatch.setattr(strict_yaml, "load", load)


@pytest.mark.parametrize(
    ("error", "problem"),
    [
        (yaml.MarkedYAMLError(problem="found a tab"), "not valid YAML: found a tab"),
        (
            yaml.MarkedYAMLError(context="while parsing a list"),
            "not valid YAML: while parsing a list",
        ),
        (yaml.MarkedYAMLError(), "not valid YAML: "),
        (yaml.YAMLError("reader:\n  bad   stream"), "not valid YAML: reader: bad stream"),
        (yaml.YAMLError("x" * 300), f"not valid YAML: {'x' * 197}..."),
        (yaml.YAMLError("y" * 200), f"not valid YAML: {'y' * 200}"),
        (RecursionError(), "cannot be loaded: RecursionError"),
    ],
)
def test_a_yaml_error_without_a_place_is_one_line_of_at_most_200(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception, problem: str
) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text("tokens: []\n")
    _failing_yaml(monkeypatch, error)
    with pytest.raises(TokensFileError) as caught:
        TokenStore.load(path)
    assert str(caught.value) == f"tokens file {path}: {problem}"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("null", "nothing (an empty value)"),
        ("true", "the boolean True"),
        ("'" + "r" * 40 + "'", "the string '" + "r" * 40 + "'"),
        ("'" + "r" * 41 + "'", "the string '" + "r" * 37 + "...'"),
        ("1.5", "the number 1.5"),
        ("12", "the number 12"),
        ("1" + "0" * 79, "the number 1" + "0" * 79),  # 80 digits: shown
        ("1" + "0" * 80, "a number of about 81 digits"),
        ("[1, 2]", "a list of 2"),
        ("{a: 1}", "a mapping"),
        ("2020-01-01", "a date"),
    ],
)
def test_a_wrong_value_is_described_in_a_few_words(tmp_path: Path, value: str, shown: str) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(f"tokens:\n  - name: ci\n    sha256: {'a' * 64}\n    role: {value}\n")
    with pytest.raises(TokensFileError) as caught:
        TokenStore.load(path)
    assert str(caught.value) == (
        f"tokens file {path}: tokens[0] (name 'ci'): field 'role': "
        f"must be one of viewer, operator, admin, not {shown}"
    )


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        (
            "namespaces",
            "[team-a, Team_B]",
            "field 'namespaces[1]': the string 'Team_B' is not a namespace name "
            "(at most 63 of [a-z0-9-], a DNS-1123 label)",
        ),
        (
            "namespaces",
            "['" + "n" * 64 + "']",
            "field 'namespaces[0]': the string '" + "n" * 37 + "...' is not a namespace name "
            "(at most 63 of [a-z0-9-], a DNS-1123 label)",
        ),
        (
            "providers",
            "[memory, docker-compose]",
            "field 'providers[1]': the string 'docker-compose' is not a provider alias "
            "(1-63 lowercase letters, digits or '_', starting with a letter)",
        ),
        (
            "providers",
            "[memory, 3]",
            "field 'providers[1]': must be a string, not the number 3",
        ),
        (
            "namespaces",
            "{}",
            "field 'namespaces': must be a non-empty list such as [a, b] "
            "(leave 'namespaces' out to allow every one), not a mapping",
        ),
    ],
)
def test_a_bad_restriction_is_named_exactly(
    tmp_path: Path, field: str, value: str, problem: str
) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(
        f"tokens:\n  - name: ci\n    sha256: {'a' * 64}\n    role: viewer\n    {field}: {value}\n"
    )
    with pytest.raises(TokensFileError) as caught:
        TokenStore.load(path)
    assert str(caught.value) == f"tokens file {path}: tokens[0] (name 'ci'): {problem}"


def test_valid_restrictions_are_kept_as_sets(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(
        f"tokens:\n  - name: ci\n    sha256: {'a' * 64}\n    role: Operator\n"
        "    namespaces: [team-a, team-b, team-a]\n    providers: [memory]\n"
    )
    store = TokenStore.load(path)
    assert store.authenticate("nothing hashes to a's") is None
    (entry,) = store._entries
    assert entry.principal.namespaces == frozenset({"team-a", "team-b"})
    assert entry.principal.providers == frozenset({"memory"})
    assert entry.principal.role == 2
    assert entry.digest == bytes.fromhex("a" * 64)


# -- registry -------------------------------------------------------------------------------------


def test_registry_book_keeping() -> None:
    lazy = LazyProvider("lazy_one", "json:JSONDecoder", kind="x", sdk_modules=("json",))
    missing = LazyProvider("gone", "nowhere:Nothing", kind="x", sdk_modules=("no_such_sdk_xyz",))
    registry = Registry(builtins=[lazy, missing])
    registry.register("memory", MemoryProvider)
    assert "memory" in registry and "lazy_one" in registry and "gone" in registry
    assert "other" not in registry and 3 not in registry
    assert registry.is_loaded("memory") and not registry.is_loaded("lazy_one")
    assert registry.lazy_entry("lazy_one") is lazy and registry.lazy_entry("memory") is None
    assert registry.installed("memory")
    assert registry.installed("lazy_one")
    assert not registry.installed("gone")
    assert not registry.installed("other")
    assert registry.origin("memory") == "registered"
    assert registry.origin("lazy_one") == "builtin"
    again = LazyProvider("lazy_one", "json:JSONEncoder", kind="y")
    for taken in (again, LazyProvider("memory", "json:JSONDecoder", kind="x")):
        with pytest.raises(ValueError) as caught:
            registry.register_lazy(taken)
        assert str(caught.value) == f"provider alias {taken.alias!r} is already registered"
    registry.register_lazy(
        LazyProvider("memory", "json:JSONDecoder", "x", origin="d"), replace=True
    )
    assert not registry.is_loaded("memory") and registry.origin("memory") == "d"
    registry.register_lazy(again, replace=True)
    assert registry.lazy_entry("lazy_one") is again


def test_the_decorator_checks_the_class_alias() -> None:
    registry = Registry(builtins=())

    class Named(MemoryProvider):
        provider_alias = "named"

    with pytest.raises(ValueError) as caught:
        register_provider_class("other", registry=registry)(Named)
    assert str(caught.value) == "Named.provider_alias is 'named', registered as 'other'"
    assert register_provider_class("named", registry=registry)(Named) is Named
    assert registry.get("named") is Named


def test_a_service_reference_names_each_bad_half() -> None:
    for service_id, namespace, fields in (
        ("web", "default", []),
        ("Web", "default", ["service_id"]),
        ("web", "Default", ["namespace"]),
        ("", "", ["service_id", "namespace"]),
    ):
        try:
            validate_service_ref(service_id, namespace)
        except InvalidSpecError as error:
            assert [v.field for v in error.violations] == fields
        else:
            assert fields == []


@pytest.mark.parametrize(
    ("raw", "text"),
    [("keep  \n", "keep  "), ("endsX\n", "endsX"), ("tab\t\r\n", "tab\t")],
)
def test_only_the_line_ending_is_stripped(raw: str, text: str) -> None:
    assert LogEntry.bounded("i", NOW, raw).text == text


def test_quantity_errors_quote_the_value() -> None:
    for parse, text, message in (
        (parse_cpu_millicores, "lots", "not a CPU quantity: 'lots'"),
        (parse_cpu_millicores, "1001", "CPU quantity above 1000 cores: '1001'"),
        (parse_memory_bytes, "1Qi", "not a memory quantity: '1Qi'"),
        (parse_memory_bytes, "2Pi", "memory quantity above 1Pi: '2Pi'"),
        (parse_memory_bytes, "9" * 40, "not a memory quantity: '" + "9" * 40 + "'"),
        (parse_cpu_millicores, "1" * 70, "not a CPU quantity: '" + "1" * 61 + "...'"),
    ):
        with pytest.raises(ValueError) as caught:
            parse(text)
        assert str(caught.value) == message


def test_a_scope_refusal_lists_every_allowed_namespace() -> None:
    call = CallContext("GetDeploymentStatus", "r", "p", alias="memory", namespace="c")
    call.caller = Caller("ci", 2, frozenset({"b", "a"}))
    with pytest.raises(CallerPermissionDenied) as caught:
        ScopeAuthorization().check(call)
    assert caught.value.message == "'ci' may not access namespace 'c'; allowed: a, b"


class Bare(InfrastructureProvider):
    """A provider class that names no alias of its own."""


def select_memory(env: Mapping[str, str]) -> type[InfrastructureProvider]:
    return MemoryProvider


def select_nothing(env: Mapping[str, str]) -> Any:
    return env.get("CHOICE", 3)


def test_a_class_without_an_alias_takes_the_registered_one() -> None:
    registry = Registry(builtins=())
    assert register_provider_class("bare", registry=registry)(Bare) is Bare  # type: ignore[type-abstract]
    assert registry.get("bare") is Bare


def unavailable(registry: Registry, alias: str) -> InfrastructureProviderUnavailable:
    with pytest.raises(InfrastructureProviderUnavailable) as caught:
        registry.get(alias, {})
    return caught.value


def test_loading_a_lazy_provider_says_what_is_wrong() -> None:
    here = "tests.security.test_units"
    registry = Registry(
        builtins=[
            LazyProvider(
                "ghost", "ghost_mod:Ghost", "ghost", extra="ghost", sdk_modules=("no_sdk_x",)
            ),
            LazyProvider("third", "no_module_xyz:Cls", "third", origin="dist"),
            LazyProvider("noclass", "json:NoSuchThing", "x"),
            LazyProvider("notprovider", "json:JSONDecoder", "x"),
            LazyProvider("selected", f"{here}:select_memory", "x"),
            LazyProvider("selector_bad", f"{here}:select_nothing", "x"),
            LazyProvider("plain", "tests.fakes.memory_provider:MemoryProvider", "memory"),
        ]
    )
    ghost = unavailable(registry, "ghost")
    assert ghost.reason == "SDK_MISSING"
    assert ghost.message == (
        "provider 'ghost' needs the 'no_sdk_x' package: pip install 'alphaswarm-controller[ghost]'"
    )
    assert ghost.metadata == {
        "install": "pip install 'alphaswarm-controller[ghost]'",
        "missing_module": "no_sdk_x",
    }
    third = unavailable(registry, "third")
    assert third.reason == "SDK_MISSING"
    assert third.message == "provider 'third' cannot be loaded ('no_module_xyz' missing)"
    assert third.metadata == {
        "install": "install the package that provides no_module_xyz:Cls",
        "missing_module": "no_module_xyz",
    }
    for alias, target in (("noclass", "json:NoSuchThing"), ("notprovider", "json:JSONDecoder")):
        invalid = unavailable(registry, alias)
        assert invalid.reason == "PROVIDER_INVALID"
        assert invalid.message == (
            f"{target} is neither an InfrastructureProvider subclass nor a backend selector"
        )
    assert registry.get("selected", {}) is MemoryProvider
    assert registry.is_loaded("selected") and registry.lazy_entry("selected") is None
    assert registry.get("plain") is MemoryProvider
    bad = unavailable(registry, "selector_bad")
    assert bad.reason == "PROVIDER_INVALID"
    assert bad.message == "the backend selector of 'selector_bad' returned 3, not a provider class"
    assert not registry.is_loaded("ghost") and registry.lazy_entry("ghost") is not None


def test_describe_says_what_list_providers_shows() -> None:
    registry = Registry(
        builtins=[
            LazyProvider(
                "ghost", "ghost_mod:Ghost", "ghostly", extra="ghost", sdk_modules=("no_sdk_x",)
            ),
            LazyProvider("broken", "json:JSONDecoder", "brokenkind"),
        ]
    )
    registry.register("memory", MemoryProvider)
    memory = registry.describe("memory", {}, default="memory")
    assert memory == ProviderDescription(
        "memory", "memory", True, "registered", MemoryProvider.capabilities(), is_default=True
    )
    ghost = registry.describe("ghost", {}, default="memory")
    assert ghost == ProviderDescription(
        "ghost",
        "ghostly",
        installed=False,
        origin="builtin",
        install_hint="pip install 'alphaswarm-controller[ghost]'",
    )
    broken = registry.describe("broken", {})
    assert (broken.kind, broken.installed, broken.capabilities) == ("brokenkind", True, ())
    assert broken.install_hint == (
        "json:JSONDecoder is neither an InfrastructureProvider subclass nor a backend selector"
    )
    assert registry.describe("ghost", {}, default="ghost").is_default, "installed or not"


def test_describe_asks_the_selector_with_the_given_environment() -> None:
    registry = Registry(builtins=[LazyProvider("picky", "json:JSONDecoder", ProviderKind.LOCAL)])

    def pick(env: Mapping[str, str]) -> Any:
        return MemoryProvider if env.get("MODE") == "memory" else 3

    registry.register("picky", pick, replace=True)
    chosen = registry.describe("picky", {"MODE": "memory"}, default="")
    assert (chosen.kind, chosen.installed, chosen.origin) == ("memory", True, "builtin")
    refused = registry.describe("picky", {"MODE": "other"}, default="picky")
    assert (refused.kind, refused.installed, refused.is_default) == ("picky", True, True), (
        "a registered selector has no lazy entry: its alias stands for the kind"
    )
    assert (
        refused.install_hint == "the backend selector of 'picky' returned 3, not a provider class"
    )
    lazy = Registry(
        builtins=[
            LazyProvider(
                "ghost", "g:G", ProviderKind.DOCKER_COMPOSE, extra="g", sdk_modules=("no_sdk_y",)
            )
        ]
    )
    assert lazy.describe("ghost", {}).kind == "docker_compose"
    with pytest.raises(ProviderNotFoundError) as unknown:
        registry.origin("nomad")
    assert (unknown.value.alias, unknown.value.known) == ("nomad", ("picky",))


A64, B64 = "a" * 64, "b" * 64


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            f"tokens:\n  - {{name: one, sha256: {A64}, role: viewer}}\n"
            f"  - {{name: two, sha256: {A64}, role: viewer}}\n",
            "tokens[1] (name 'two'): field 'sha256': the same token hash as tokens[0] "
            "(name 'one'); each token must appear once",
        ),
        (
            f"tokens:\n  - {{name: one, sha256: {A64}, role: viewer}}\n"
            f"  - {{name: one, sha256: {B64}, role: viewer}}\n",
            "tokens[1] (name 'one'): field 'name': the same name as tokens[0] (name 'one'); "
            "names must be unique (audit lines identify callers by them)",
        ),
        (
            f"tokens:\n  - {{name: one, sha256: {A64}, role: viewer, scope: x}}\n",
            "tokens[0] (name 'one'): field 'scope': unknown field; "
            "an entry has name, sha256, role, namespaces, providers",
        ),
        (
            f"tokens:\n  - {{name: one, sha256: {A64}}}\n",
            "tokens[0] (name 'one'): field 'role': is required",
        ),
        (
            f"tokens:\n  - {{name: '-x', sha256: {A64}, role: viewer}}\n",
            "tokens[0]: field 'name': must be 1-64 of [A-Za-z0-9_.@:-], starting with a letter "
            "or digit, not the string '-x'",
        ),
        (
            f"tokens:\n  - {{name: '{'n' * 65}', sha256: {A64}, role: viewer}}\n",
            "tokens[0]: field 'name': must be 1-64 of [A-Za-z0-9_.@:-], starting with a letter "
            f"or digit, not the string '{'n' * 37}...'",
        ),
        (
            "tokens:\n  - {name: one, sha256: abc, role: viewer}\n",
            "tokens[0] (name 'one'): field 'sha256': must be 64 hex digits "
            "(the output of `alphaswarm-server hash-token`), not the string 'abc'",
        ),
        (
            f"tokens:\n  - {{name: one, sha256: {A64}, role: viewer}}\nextra: 1\nmore: 2\n",
            "unknown top-level key(s) 'extra', 'more'; only 'tokens' is allowed",
        ),
        (
            f"tokens:\n  - {{name: one, name: two, sha256: {A64}, role: viewer}}\n",
            "line 2, column 17: not valid YAML: key 'name' appears twice in one mapping",
        ),
        ("tokens: 3\n", "'tokens' must be a non-empty list of entries, not the number 3"),
        ("tokens:\n  - ci\n", "tokens[0]: an entry must be a mapping, not the string 'ci'"),
        (
            "tokens: [\n  - {name: ci\n",
            "line 2, column 3: not valid YAML: expected the node content, but found '-'",
        ),
    ],
)
def test_a_tokens_file_mistake_is_one_exact_line(tmp_path: Path, body: str, problem: str) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(body)
    with pytest.raises(TokensFileError) as caught:
        TokenStore.load(path)
    assert str(caught.value) == f"tokens file {path}: {problem}"


def test_authentication_finds_the_entry_whatever_its_place(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(
        "tokens:\n"
        f"  - {{name: one, sha256: {hash_token('t1')}, role: viewer}}\n"
        f"  - {{name: two, sha256: {hash_token('t2')}, role: admin}}\n"
    )
    store = TokenStore.load(path)
    first, second = store.authenticate("t1"), store.authenticate("t2")
    assert first is not None and (first.name, first.role) == ("one", 1)
    assert second is not None and (second.name, second.role) == ("two", 3)
    assert store.authenticate("t3") is None


def test_a_module_is_found_without_importing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pkg_q" / "sub").mkdir(parents=True)
    (tmp_path / "pkg_q" / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (tmp_path / "pkg_q" / "leaf.py").write_text("")
    (tmp_path / "single_q.py").write_text("raise RuntimeError('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name, present in (
        ("pkg_q", True),
        ("pkg_q.sub", True),  # a directory
        ("pkg_q.leaf", True),  # a file
        ("pkg_q.nope", False),
        ("single_q", True),
        ("nope_q", False),
        ("nope_q.leaf", False),
        ("json", True),  # imported already
    ):
        assert _module_present(name) is present, name
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [""])  # "" is the working directory
    assert _module_present("single_q") and _module_present("pkg_q.leaf")
    assert not _module_present("nope_q")


def test_a_token_name_may_be_64_characters(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(f"tokens:\n  - {{name: '{'n' * 64}', sha256: {A64}, role: viewer}}\n")
    (entry,) = TokenStore.load(path)._entries
    assert entry.principal.name == "n" * 64
