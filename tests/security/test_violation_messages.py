"""Each violation's exact field and description: what a caller reads to fix a request.

The other validation tests check which field is named; these pin the words too
(bounds quoted from the constants), for every kind of violation a spec or a patch
can have, in the order a caller sees them.
"""

from __future__ import annotations

import pytest

from alphaswarm_core.providers.errors import InvalidSpecError
from alphaswarm_core.providers.models import (
    ConfigMapPatch,
    DeploymentSpec,
    PortSpec,
    Resources,
)

DNS = (
    "must be a DNS-1123 label: at most 63 lowercase letters, digits or '-', "
    "starting and ending with a letter or digit"
)


def spec(**fields: object) -> DeploymentSpec:
    base: dict[str, object] = {"service_id": "web", "command": ("x",)}
    return DeploymentSpec(**{**base, **fields})  # type: ignore[arg-type]


SPECS = [
    (
        DeploymentSpec(service_id=""),
        [
            ("spec.service_id", "is required"),
            ("spec.image", "either an image or a command is required"),
        ],
    ),
    (
        DeploymentSpec(service_id="Web", namespace="-x", image="a b", command=("",)),
        [
            ("spec.service_id", DNS),
            ("spec.namespace", DNS),
            ("spec.image", "at most 512 chars, no whitespace or control characters"),
            ("spec.command[0]", "the program must not be empty"),
        ],
    ),
    (spec(command=("x",) * 257), [("spec.command", "at most 256 arguments")]),
    (spec(command=("x", "\0")), [("spec.command[1]", "no NUL bytes, at most 8192 bytes")]),
    (spec(env={str(i): "v" for i in range(257)}), [("spec.env", "at most 256 entries")]),
    (
        spec(env={"1A": "v", "B": "\0"}),
        [
            ("spec.env['1A']", "not a valid environment variable name"),
            ("spec.env['B']", "no NUL bytes, at most 32768 bytes"),
        ],
    ),
    (
        spec(env={"A": "v" * 40000, "B": "v" * 32768 * 8}),
        [
            ("spec.env['A']", "no NUL bytes, at most 32768 bytes"),
            ("spec.env['B']", "no NUL bytes, at most 32768 bytes"),
            ("spec.env", "at most 262144 bytes in all"),
        ],
    ),
    (spec(labels={f"l{i}": "v" for i in range(65)}), [("spec.labels", "at most 64 labels")]),
    (
        spec(labels={"-a": "v", "a": "-v"}),
        [
            ("spec.labels['-a']", "not a valid label key ([prefix/]name)"),
            (
                "spec.labels['a']",
                "label values are at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends",
            ),
        ],
    ),
    (
        spec(ports=(PortSpec(0, -1, "sctp"),)),
        [
            ("spec.ports[0].container_port", "must be between 1 and 65535"),
            ("spec.ports[0].host_port", "must be between 0 and 65535"),
            ("spec.ports[0].protocol", "must be tcp or udp"),
        ],
    ),
    (spec(ports=tuple(PortSpec(80) for _ in range(65))), [("spec.ports", "at most 64 ports")]),
    (
        spec(resources=Resources(cpu="0", memory="0")),
        [
            (
                "spec.resources.cpu",
                "a positive CPU quantity such as '500m' or '1.5' (at most 3 decimals), "
                "at most 1000 cores",
            ),
            (
                "spec.resources.memory",
                "a positive memory quantity such as '256Mi' or '1Gi' "
                "(units K, M, G, T, P, Ki, Mi, Gi, Ti, Pi), at most 1Pi",
            ),
        ],
    ),
    (
        spec(provider_options={f"o{i}": "v" for i in range(65)}),
        [("spec.provider_options", "at most 64 options")],
    ),
    (
        spec(provider_options={".a": "v", "b": "\0"}),
        [
            (
                "spec.provider_options['.a']",
                "option keys are 1-128 of [A-Za-z0-9_./-], not starting with '.', '/' or '-'",
            ),
            ("spec.provider_options['b']", "no NUL bytes, at most 4096 bytes"),
        ],
    ),
    (
        DeploymentSpec(service_id="web", replicas=501),
        [
            ("spec.replicas", "must be between 0 and 500"),
            ("spec.image", "either an image or a command is required"),
        ],
    ),
]

PATCHES = [
    (ConfigMapPatch(service_id="web"), [("patch.set", "set or remove at least one key")]),
    (
        ConfigMapPatch(
            service_id="web",
            set={"a b": "v", "secret.1": "x", "k": "\0"},
            remove=("k", "bad key"),
            expected_version="v" * 129,
        ),
        [
            ("patch.set['a b']", "config keys are 1-253 of [A-Za-z0-9_.-]"),
            (
                "patch.set['secret.1']",
                "'secret.NAME' needs NAME to be an environment variable name "
                "([A-Za-z_][A-Za-z0-9_]*): replicas receive the value as NAME",
            ),
            ("patch.set['k']", "no NUL bytes, at most 65536 bytes"),
            ("patch.remove[1]", "not a valid config key"),
            ("patch.remove", "1 key(s) both set and removed"),
            ("patch.expected_version", "too long"),
        ],
    ),
    (
        ConfigMapPatch(service_id="web", set={f"k{i}": "v" for i in range(513)}),
        [("patch.set", "at most 512 keys")],
    ),
    (
        ConfigMapPatch(service_id="web", set={"a": "v" * 70000}),
        [("patch.set['a']", "no NUL bytes, at most 65536 bytes")],
    ),
]


@pytest.mark.parametrize(("made", "expected"), [*SPECS, *PATCHES])
def test_violations_are_named_and_described(
    made: DeploymentSpec | ConfigMapPatch, expected: list[tuple[str, str]]
) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        made.validate()
    assert [(v.field, v.description) for v in caught.value.violations] == expected
    assert [(v.field, v.description) for v in made.violations()] == expected


def test_a_merged_config_over_the_total_is_named() -> None:
    patch = ConfigMapPatch(service_id="web", set={"a": "v" * 1000})
    with pytest.raises(InvalidSpecError) as caught:
        patch.applied_to({f"k{i}": "v" * 60000 for i in range(9)})
    assert [(v.field, v.description) for v in caught.value.violations] == [
        ("patch.set", "at most 524288 bytes in all")
    ]
    assert patch.applied_to({"b": "1", "a": "old"}) == {"b": "1", "a": "v" * 1000}
    removing = ConfigMapPatch(service_id="web", remove=("b",))
    assert removing.applied_to({"b": "1", "c": "2"}) == {"c": "2"}
