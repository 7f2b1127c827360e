"""Thousands of generated requests to every RPC of the service descriptor, on a running server.

Three properties, each over every method ``ProviderService`` declares (read from the
descriptor, so an RPC added later is fuzzed without a change here):

- garbage (random bytes, random field values) gets a deliberate answer: never
  INTERNAL, never a crash, and every INVALID_ARGUMENT names a field;
- a request whose every caller-supplied value is valid is served: not INVALID_ARGUMENT
  (NOT_FOUND for a service that does not exist, a first stream message...);
- the same request with one value spoiled (a control character at any position, one
  character too many, a character from the wrong set) is INVALID_ARGUMENT naming
  exactly that field.

Where a value may go (``SLOTS``) is listed once per request field; a test checks that
every string field of every request has a slot, so a new field is not left unfuzzed.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, message_factory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alphaswarm.provider.v1 import provider_service_pb2 as pb
from alphaswarm_controller import convert
from alphaswarm_controller.server import RunningServer, start_server
from alphaswarm_core.providers import models
from tests.budget import examples
from tests.service.conftest import make_registry
from tests.service.conftest import settings as server_settings
from tests.service.rich_status import details

SERVICE = pb.DESCRIPTOR.services_by_name["ProviderService"]
METHODS = {method.name: method for method in SERVICE.methods}
# Codes a well-behaved server may answer random input with (never INTERNAL/UNKNOWN).
DELIBERATE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
GARBAGE = settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
PER_METHOD = settings(
    max_examples=examples(100), deadline=None, suppress_health_check=list(HealthCheck)
)


def request_class(method: descriptor.MethodDescriptor) -> Any:
    return message_factory.GetMessageClass(method.input_type)


# -- the server -----------------------------------------------------------------------------------


class ServerThread:
    """The server runs on its own loop so that hypothesis can drive it synchronously."""

    def __init__(self, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.running: RunningServer = asyncio.run_coroutine_threadsafe(
            start_server(
                server_settings(tmp, call_timeout_seconds=2.0), env={}, registry=make_registry()
            ),
            self.loop,
        ).result(30)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.running.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    server = ServerThread(tmp_path_factory.mktemp("fuzz"))
    with grpc.insecure_channel(f"127.0.0.1:{server.running.port}") as opened:
        yield opened
    server.stop()


def call(channel: Any, method: descriptor.MethodDescriptor, raw: bytes) -> tuple[Any, Any]:
    """Raw bytes in (no serializer), so that garbage reaches the server as sent; a stream
    is read to its first message. The status code, and the error if any."""
    path = f"/{SERVICE.full_name}/{method.name}"
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path)(raw, timeout=5)
            for _ in stream:
                stream.cancel()
                break
        else:
            channel.unary_unary(path)(raw, timeout=5)
    except grpc.RpcError as error:
        if error.code() is grpc.StatusCode.CANCELLED:  # our own cancel after a first message
            return grpc.StatusCode.OK, None
        return error.code(), error
    return grpc.StatusCode.OK, None


# -- garbage --------------------------------------------------------------------------------------

text = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["", "web", "default", "a" * 64, "Ünïcødé", "-x-", "x" * 5000, "\x00"]),
)
numbers = st.one_of(
    st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, 1, 500, 501, -1, 2**31 - 1])
)


@st.composite
def random_message(draw: st.DrawFn, cls: Any, depth: int = 0) -> Any:
    """Any value in every field, following the descriptor (maps, lists, nested messages)."""
    message = cls()
    for field in cls.DESCRIPTOR.fields:
        if draw(st.integers(0, 3)) == 0:
            continue
        if field.type == field.TYPE_MESSAGE:
            entry = field.message_type
            if entry.GetOptions().map_entry:
                keys = draw(st.lists(text, max_size=4))
                target = getattr(message, field.name)
                for key in keys:
                    target[key] = draw(text)
            elif depth < 2 and field.message_type.full_name.startswith("alphaswarm"):
                sub = message_factory.GetMessageClass(field.message_type)
                items = draw(st.integers(1, 2)) if _repeated(field) else 1
                for _ in range(items):
                    made = draw(random_message(sub, depth + 1))
                    if _repeated(field):
                        getattr(message, field.name).append(made)
                    else:
                        getattr(message, field.name).CopyFrom(made)
            elif field.message_type.full_name == "google.protobuf.Duration":
                getattr(message, field.name).seconds = draw(st.integers(-10, 10_000))
                getattr(message, field.name).nanos = draw(st.integers(0, 999_999_999))
            elif field.message_type.full_name == "google.protobuf.Timestamp":
                getattr(message, field.name).seconds = draw(st.integers(-(2**40), 2**40))
            continue
        leaf = LEAVES.get(field.type)
        if leaf is None:
            continue
        if _repeated(field):
            getattr(message, field.name).extend(draw(st.lists(leaf, max_size=4)))
        else:
            setattr(message, field.name, draw(leaf))
    return message


def _repeated(field: descriptor.FieldDescriptor) -> bool:
    return bool(field.is_repeated)


LEAVES: dict[int, st.SearchStrategy[Any]] = {
    descriptor.FieldDescriptor.TYPE_STRING: text,
    descriptor.FieldDescriptor.TYPE_INT32: numbers,
    descriptor.FieldDescriptor.TYPE_INT64: numbers,
    descriptor.FieldDescriptor.TYPE_BOOL: st.booleans(),
}


@st.composite
def garbage(draw: st.DrawFn) -> tuple[descriptor.MethodDescriptor, bytes]:
    """A method and request bytes: a well-typed random message, or plain garbage."""
    method = METHODS[draw(st.sampled_from(sorted(METHODS)))]
    if draw(st.integers(0, 9)) == 0:
        return method, draw(st.binary(max_size=200))
    message = draw(random_message(request_class(method)))
    if hasattr(message, "provider"):
        message.provider = draw(st.sampled_from(["", "memory", "configless", "ghost", "x"]))
    return method, message.SerializeToString()


@GARBAGE
@given(garbage())
def test_random_requests_get_deliberate_answers(
    channel: grpc.Channel, case: tuple[descriptor.MethodDescriptor, bytes]
) -> None:
    method, raw = case
    code, error = call(channel, method, raw)
    assert code in DELIBERATE, f"{method.name}: {code} {error}"
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        found = details(error)
        assert found.bad_request is not None and found.fields, f"{method.name}: {found.message}"


# -- valid and spoiled values ---------------------------------------------------------------------

SAFE = st.characters(codec="utf-8")
"""Anything protobuf can carry (not lone surrogates)."""
NOT_NUL = st.characters(codec="utf-8", exclude_characters="\x00")
PRINTABLE = st.characters(codec="utf-8", exclude_categories=["Cc", "Cf", "Zl", "Zp", "Zs"])
CONTROLS = [chr(c) for c in range(0x20)] + ["\x7f", "\x85", "\x9f"]
CONTROLS += ["\u2028", "\u2029", "\u202e", "\ufeff", "\u200b"]

dns_labels = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
aliases = st.one_of(
    st.sampled_from(["memory", "configless"]),
    st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
)
env_keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True)
label_names = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?", fullmatch=True)
label_keys = st.one_of(
    label_names, st.builds(lambda p, n: f"{p}/{n}", st.sampled_from(["x.io", "a-b.c"]), label_names)
)
label_values = st.from_regex(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?)?", fullmatch=True)
option_keys = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,20}", fullmatch=True)
config_keys = st.one_of(
    st.from_regex(r"[A-Za-z0-9_.-]{1,20}", fullmatch=True).filter(
        lambda key: not key.startswith(models.SECRET_PREFIX)
    ),
    env_keys.map(lambda name: models.SECRET_PREFIX + name),
)
instance_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,20}", fullmatch=True)
free_text = st.text(NOT_NUL, max_size=20)
"""Values that may hold anything but NUL (environment, options, config, arguments)."""
images = st.text(PRINTABLE, min_size=1, max_size=30)
cpus = st.integers(1, models.MAX_CPU_MILLICORES).map(lambda n: f"{n}m")
memories = st.integers(1, models.MAX_MEMORY_BYTES).map(str)


Draw = Callable[[st.SearchStrategy[Any]], Any]


@dataclass(frozen=True)
class Spoil:
    """How a valid value is made invalid: ``make(valid, draw) -> invalid``."""

    name: str
    make: Callable[[str, Draw], str]


def insert_from(chars: list[str] | str) -> Callable[[str, Draw], str]:
    """One of ``chars`` at any position, including both ends."""

    def make(value: str, draw: Draw) -> str:
        at = draw(st.integers(0, len(value)))
        char: str = draw(st.sampled_from(list(chars)))
        return value[:at] + char + value[at:]

    return make


def chars_over(limit: int) -> Callable[[str, Draw], str]:
    """One character over ``limit`` (or more, when the value already was that long)."""
    return lambda value, draw: value + "a" * max(1, limit + 1 - len(value))


def bytes_over(limit: int) -> Callable[[str, Draw], str]:
    """Over ``limit`` bytes of UTF-8 with two-byte characters: not fewer characters."""
    return lambda value, draw: value + "é" * max(1, (limit + 2 - len(value.encode())) // 2)


CONTROL = Spoil("control character", insert_from(CONTROLS))
NUL = Spoil("NUL", insert_from("\x00"))
# Characters that are wrong at any position of the value (not "-" in a name, which
# is right inside it).
NAME_FOREIGN = Spoil("wrong charset", insert_from("A_. é\u0660/:"))
ALIAS_FOREIGN = Spoil("wrong charset", insert_from("A-. é\u0660/:"))
ENV_FOREIGN = Spoil("wrong charset", insert_from("-. é\u0660/:=$"))
LABEL_FOREIGN = Spoil("wrong charset", insert_from(" é\u0660:=$@"))
OPTION_FOREIGN = Spoil("wrong charset", insert_from(" é\u0660:=$@\\"))
CONFIG_FOREIGN = Spoil("wrong charset", insert_from(" é\u0660:=$@/"))
IMAGE_FOREIGN = Spoil("whitespace", insert_from(" \t\u00a0\u3000"))
QUANTITY_FOREIGN = Spoil("wrong charset", insert_from(" xé\u0660-+e"))


def too_long(limit: int) -> Spoil:
    return Spoil("too long", chars_over(limit))


def too_big(limit: int) -> Spoil:
    return Spoil("too many bytes", bytes_over(limit))


def padded(limit: int) -> Spoil:
    """Over ``limit`` characters appended, so that the last part of the value (a label
    key's name after its prefix) is too long on its own."""
    return Spoil("too long", lambda value, draw: value + "a" * (limit + 1))


QUANTITY_TOO_LONG = Spoil(
    "too long",  # leading zeros: the same quantity, over the length bound
    lambda value, draw: "0" * max(1, models.MAX_QUANTITY_LENGTH + 1 - len(value)) + value,
)
NAME_SPOILS = (CONTROL, NAME_FOREIGN, too_long(models.MAX_NAME_LENGTH))


@dataclass(frozen=True)
class Slot:
    """Where a caller-supplied value goes in a request, how the server names it, what is
    valid there and how to spoil it."""

    path: str
    """The request field: ``namespace``, ``spec.env`` (a map key), ``spec.env[]``
    (a map value), ``spec.command`` (a list item)..."""
    valid: st.SearchStrategy[str]
    spoils: tuple[Spoil, ...]

    @property
    def parts(self) -> list[str]:
        return self.path.removesuffix("[]").split(".")

    def applies_to(self, message: Any) -> bool:
        *outer, last = self.parts
        kind = message.DESCRIPTOR
        for part in outer:
            field = kind.fields_by_name.get(part)
            if field is None or field.message_type is None:
                return False
            kind = field.message_type
        return last in kind.fields_by_name

    def put(self, message: Any, value: str) -> str:
        """Set ``value`` here in ``message``; the field path a refusal names."""
        *outer, last = self.parts
        for part in outer:
            message = getattr(message, part)
        field = message.DESCRIPTOR.fields_by_name[last]
        prefix = ".".join(self.parts)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target = getattr(message, last)
            if self.path.endswith("[]"):  # a value, under a key of its own
                key = _fresh_key(target, field)
                target[key] = value
                return f"{prefix}[{_shown(key)}]"
            target[value] = "v"
            return f"{prefix}[{_shown(value)}]"
        if _repeated(field):
            items = getattr(message, last)
            items.append(value)
            return f"{prefix}[{len(items) - 1}]"
        setattr(message, last, value)
        return prefix


def _shown(key: str, limit: int = 64) -> str:
    return repr(key if len(key) <= limit else key[: limit - 3] + "...")


FRESH_KEYS = {
    "env": "FRESH_KEY",
    "labels": "fresh",
    "provider_options": "FRESH_KEY",
    "set": "fresh.key",
}
"""A valid key for a spoiled value, in each map (the valid values never use it)."""


def _fresh_key(target: Any, field: descriptor.FieldDescriptor) -> str:
    base = FRESH_KEYS[field.name]
    return next(
        f"{base}{n or ''}" for n in range(len(target) + 1) if f"{base}{n or ''}" not in target
    )


SLOTS = (
    Slot("provider", aliases, (CONTROL, ALIAS_FOREIGN, too_long(models.MAX_ALIAS_LENGTH))),
    Slot("namespace", dns_labels, NAME_SPOILS),
    Slot("service_id", dns_labels, NAME_SPOILS),
    Slot(
        "instance_id",
        instance_ids,
        (
            CONTROL,
            Spoil("wrong charset", insert_from(" é\\")),
            too_long(convert.MAX_INSTANCE_ID_LENGTH),
        ),
    ),
    Slot("spec.service_id", dns_labels, NAME_SPOILS),
    Slot("spec.namespace", dns_labels, NAME_SPOILS),
    Slot("spec.image", images, (CONTROL, IMAGE_FOREIGN, too_long(models.MAX_IMAGE_LENGTH))),
    Slot("spec.command[]", free_text, (NUL, too_big(models.MAX_ARG_BYTES))),
    Slot("spec.env", env_keys, (CONTROL, ENV_FOREIGN, too_long(models.MAX_ENV_KEY_LENGTH))),
    Slot("spec.env[]", free_text, (NUL, too_big(models.MAX_ENV_VALUE_BYTES))),
    Slot("spec.labels", label_keys, (CONTROL, LABEL_FOREIGN, padded(models.MAX_LABEL_NAME_LENGTH))),
    Slot(
        "spec.labels[]",
        label_values,
        (CONTROL, LABEL_FOREIGN, too_long(models.MAX_LABEL_VALUE_LENGTH)),
    ),
    Slot(
        "spec.provider_options",
        option_keys,
        (CONTROL, OPTION_FOREIGN, too_long(models.MAX_OPTION_KEY_LENGTH)),
    ),
    Slot("spec.provider_options[]", free_text, (NUL, too_big(models.MAX_OPTION_VALUE_BYTES))),
    Slot(
        "spec.resources.cpu",
        cpus,
        (CONTROL, QUANTITY_FOREIGN, QUANTITY_TOO_LONG),
    ),
    Slot(
        "spec.resources.memory",
        memories,
        (CONTROL, QUANTITY_FOREIGN, QUANTITY_TOO_LONG),
    ),
    Slot("spec.ports.protocol", st.sampled_from(["tcp", "udp"]), (CONTROL, NAME_FOREIGN)),
    Slot("patch.service_id", dns_labels, NAME_SPOILS),
    Slot("patch.namespace", dns_labels, NAME_SPOILS),
    Slot(
        "patch.set", config_keys, (CONTROL, CONFIG_FOREIGN, too_long(models.MAX_CONFIG_KEY_LENGTH))
    ),
    Slot("patch.set[]", free_text, (NUL, too_big(models.MAX_CONFIG_VALUE_BYTES))),
    Slot(
        "patch.remove",
        config_keys.filter(lambda key: key != "fresh.key"),
        (CONTROL, CONFIG_FOREIGN, too_long(models.MAX_CONFIG_KEY_LENGTH)),
    ),
    Slot(
        "patch.expected_version",
        st.text(SAFE, max_size=20),
        (too_long(models.MAX_VERSION_LENGTH),),  # a bound in characters
    ),
    Slot(
        "change_cause",
        st.text(PRINTABLE, max_size=30).filter(str.isprintable),  # assigned characters only
        (CONTROL, too_long(models.MAX_CHANGE_CAUSE_LENGTH)),  # recorded and shown in history
    ),
)
FREE_STRINGS = {"page_token"}
"""String fields with no caller-chosen valid value: a page token comes from the server
(a made-up one is refused: tests/service)."""


def slots_of(message: Any) -> list[Slot]:
    return [slot for slot in SLOTS if slot.applies_to(message)]


@st.composite
def valid_request(draw: st.DrawFn, method: descriptor.MethodDescriptor) -> Any:
    """A request to ``method`` with a valid value in every slot and every number in range."""
    message = request_class(method)()
    names = message.DESCRIPTOR.fields_by_name
    if "spec" in names:
        message.spec.command.append("sleep")
        if draw(st.booleans()):
            message.spec.ports.add(
                container_port=draw(st.integers(1, 65535)), host_port=draw(st.integers(0, 65535))
            )
        message.spec.replicas = draw(st.integers(0, 3))
    if "patch" in names:
        message.patch.set["first"] = "v"
    for slot in slots_of(message):
        if slot.path == "spec.ports.protocol":
            for port in message.spec.ports:
                port.protocol = draw(slot.valid)
            continue
        if slot.path.endswith(("[]", "set", "remove", "env", "labels", "options")):
            for _ in range(draw(st.integers(0, 2))):
                _put_distinct(slot, message, draw(slot.valid))
        elif draw(st.integers(0, 4)) or slot.path.endswith("service_id"):
            slot.put(message, draw(slot.valid))
    for number, low, high in (
        ("replicas", 0, models.MAX_REPLICAS),
        ("page_size", 0, 1000),
        ("tail_lines", 0, models.MAX_TAIL_LINES),
    ):
        if number in names:
            setattr(message, number, draw(st.integers(low, high)))
    if "interval" in names and draw(st.booleans()):
        nanos = draw(
            st.integers(
                round(convert.MIN_INTERVAL_SECONDS * 1e9), round(convert.MAX_INTERVAL_SECONDS * 1e9)
            )
        )
        message.interval.seconds, message.interval.nanos = divmod(nanos, 10**9)
    if "follow" in names:
        message.follow = False  # a follow on an idle replica would wait for a line
    return message


def _put_distinct(slot: Slot, message: Any, value: str) -> None:
    """Map keys and removed keys that do not collide with the fixed entries."""
    if value == "first" or value.startswith(tuple(FRESH_KEYS.values())):
        return
    if slot.path == "patch.remove" and value in message.patch.set:
        return
    if slot.path == "patch.set" and value in message.patch.remove:
        return
    slot.put(message, value)


def methods_with_slots() -> list[str]:
    return [name for name, method in METHODS.items() if slots_of(request_class(method)())]


def test_every_string_field_of_every_request_has_a_slot() -> None:
    slotted = {slot.path.removesuffix("[]") for slot in SLOTS}

    def strings(message_type: descriptor.Descriptor, prefix: str) -> Iterator[str]:
        for field in message_type.fields:
            path = f"{prefix}{field.name}"
            is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
            if field.type == field.TYPE_STRING or is_map:
                yield path
            elif field.message_type is not None and field.message_type.full_name.startswith(
                "alphaswarm"
            ):
                yield from strings(field.message_type, f"{path}.")

    for method in METHODS.values():
        missing = set(strings(method.input_type, "")) - slotted - FREE_STRINGS
        assert not missing, f"{method.name}: no fuzz slot for {sorted(missing)}"
    assert len(methods_with_slots()) == len(METHODS) - 1  # all but ListProviders (no fields)


@pytest.mark.parametrize("name", sorted(METHODS))
@PER_METHOD
@given(data=st.data())
def test_valid_requests_are_served(channel: grpc.Channel, name: str, data: st.DataObject) -> None:
    method = METHODS[name]
    message = data.draw(valid_request(method))
    code, error = call(channel, method, message.SerializeToString())
    assert code is not grpc.StatusCode.INVALID_ARGUMENT, (name, message, details(error).fields)
    assert code in DELIBERATE, f"{name}: {code} {error}"


@pytest.mark.parametrize("name", methods_with_slots())
@PER_METHOD
@given(data=st.data())
def test_one_spoiled_value_is_refused_naming_its_field(
    channel: grpc.Channel, name: str, data: st.DataObject
) -> None:
    method = METHODS[name]
    message = data.draw(valid_request(method))
    slot = data.draw(st.sampled_from(slots_of(message)))
    spoil = data.draw(st.sampled_from(slot.spoils))
    if slot.path == "spec.ports.protocol":
        port = message.spec.ports.add(container_port=80)
        port.protocol = spoil.make(data.draw(slot.valid), data.draw)
        field = f"spec.ports[{len(message.spec.ports) - 1}].protocol"
    else:
        field = slot.put(message, spoil.make(data.draw(slot.valid), data.draw))
    code, error = call(channel, method, message.SerializeToString())
    assert code is grpc.StatusCode.INVALID_ARGUMENT, (name, spoil.name, field, code)
    assert details(error).fields == [field], (name, spoil.name)
