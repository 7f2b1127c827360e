"""DeploymentSpec -> the Kubernetes objects that run it (pure functions, no I/O)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping

from alphaswarm_core.providers.errors import FieldViolation, InvalidSpecError
from alphaswarm_core.providers.models import ConfigMapPatch, DeploymentSpec

from .revisions import (
    AUTO_ROLLBACK_KEY,
    CONFIG_HASH_KEY,
    CONFIG_VERSION_KEY,
    REVISION_HISTORY_LIMIT,
    SNAPSHOT_KEY,
    SPEC_KEY,
    spec_annotation,
)
from .transport import JsonObj

MANAGED_BY_KEY = "app.kubernetes.io/managed-by"
MANAGED_BY = "alphaswarm"
SERVICE_KEY = "alphaswarm.dev/service"
STATE_KEY = "alphaswarm.dev/state"
RESERVED_PREFIXES = ("alphaswarm.dev/", "app.kubernetes.io/managed-by", "pod-template-hash")
MANAGED_SELECTOR = f"{MANAGED_BY_KEY}={MANAGED_BY}"
CONTAINER_NAME = "main"

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
#: provider_options this provider understands, and what each sets.
OPTIONS = {
    "service_type": "Service type when the spec has ports: " + ", ".join(SERVICE_TYPES),
    "image_pull_policy": "container imagePullPolicy: " + ", ".join(PULL_POLICIES),
    "service_account": "the pod's serviceAccountName",
}


# The API's name rules (k8s.io/apimachinery/pkg/util/validation/validation.go), checked
# before any call so that what the server would refuse is INVALID_ARGUMENT naming the field.
#: IsDNS1123Subdomain: ServiceAccount names (serviceAccountName).
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")
DNS1123_SUBDOMAIN_MAX = 253
#: IsDNS1035Label: Service names (ValidateServiceName) on servers without the
#: RelaxedServiceNameValidation feature (1.35 and older, most clusters in use).
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
#: IsConfigMapKey: ConfigMap data keys.
_CONFIG_MAP_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
CONFIG_MAP_KEY_MAX = 253


def is_dns1123_subdomain(value: str) -> bool:
    return len(value) <= DNS1123_SUBDOMAIN_MAX and bool(_DNS1123_SUBDOMAIN.match(value))


def is_config_map_key(key: str) -> bool:
    """A valid ConfigMap key: ``[-._a-zA-Z0-9]+``, at most 253, not ``.``/``..`` or ``..*``."""
    return (
        len(key) <= CONFIG_MAP_KEY_MAX
        and bool(_CONFIG_MAP_KEY.match(key))
        and key != "."
        and not key.startswith("..")
    )


def check_config_patch(patch: ConfigMapPatch) -> None:
    """Config keys this backend stores as ConfigMap keys (beyond the model's own check)."""
    violations = [
        FieldViolation(
            f"patch.set[{key[:64]!r}]",
            "a ConfigMap key: [-._a-zA-Z0-9], at most 253, not '.' and not starting with '..'",
        )
        for key in patch.set
        if not is_config_map_key(key)
    ]
    if violations:
        raise InvalidSpecError(violations)


def configmap_name(service_id: str) -> str:
    return f"{service_id}-config"


def service_selector(service_id: str) -> str:
    return f"{SERVICE_KEY}={service_id}"


def own_labels(service_id: str) -> dict[str, str]:
    return {MANAGED_BY_KEY: MANAGED_BY, SERVICE_KEY: service_id}


def user_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The caller's labels, without the ones this provider sets itself."""
    return {k: v for k, v in labels.items() if not k.startswith(RESERVED_PREFIXES)}


def config_hash(data: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(data), sort_keys=True).encode()).hexdigest()[:16]


def check_spec(spec: DeploymentSpec) -> None:
    """What this backend needs beyond the model's own validation."""
    violations: list[FieldViolation] = []
    if not spec.image:
        violations.append(
            FieldViolation("spec.image", "the kubernetes provider runs containers: set an image")
        )
    for key in spec.labels:
        if key.startswith(RESERVED_PREFIXES):
            violations.append(
                FieldViolation(f"spec.labels[{key!r}]", "this label key is reserved by alphaswarm")
            )
    for key, value in spec.provider_options.items():
        if key not in OPTIONS:
            violations.append(
                FieldViolation(
                    f"spec.provider_options[{key!r}]",
                    f"unknown option; the kubernetes provider accepts {', '.join(sorted(OPTIONS))}",
                )
            )
        elif key == "service_type" and value not in SERVICE_TYPES:
            violations.append(
                FieldViolation(f"spec.provider_options[{key!r}]", f"one of {SERVICE_TYPES}")
            )
        elif key == "image_pull_policy" and value not in PULL_POLICIES:
            violations.append(
                FieldViolation(f"spec.provider_options[{key!r}]", f"one of {PULL_POLICIES}")
            )
        elif key == "service_account" and not is_dns1123_subdomain(value):
            violations.append(
                FieldViolation(
                    f"spec.provider_options[{key!r}]",
                    "a ServiceAccount name: lowercase DNS subdomain ([a-z0-9-.], at most 253, "
                    "alphanumeric at both ends)",
                )
            )
    if spec.ports and not _DNS1035_LABEL.match(spec.service_id):
        violations.append(
            FieldViolation(
                "spec.service_id",
                "with ports the service gets a Kubernetes Service of that name, which must "
                "start with a letter (DNS-1035 label)",
            )
        )
    seen: set[tuple[int, str]] = set()
    for index, port in enumerate(spec.ports):
        port_key = (port.host_port or port.container_port, port.protocol)
        if port_key in seen:
            violations.append(
                FieldViolation(f"spec.ports[{index}]", "duplicate service port and protocol")
            )
        seen.add(port_key)
    if violations:
        raise InvalidSpecError(violations)


def deployment_manifest(
    spec: DeploymentSpec, config_data_hash: str, change: Mapping[str, str]
) -> JsonObj:
    """The Deployment this provider applies (its whole field set, for server-side apply).

    ``change`` are the annotations of the revision it makes (revisions.py); the spec
    rides in the pod template, so each ReplicaSet carries the spec of its revision.
    """
    labels = {**user_labels(spec.labels), **own_labels(spec.service_id)}
    container: JsonObj = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "env": [{"name": k, "value": v} for k, v in sorted(spec.env.items())],
        "envFrom": [{"configMapRef": {"name": configmap_name(spec.service_id)}}],
    }
    if spec.command:
        container["command"] = list(spec.command)
    if spec.ports:
        container["ports"] = [
            {"containerPort": p.container_port, "protocol": p.protocol.upper()} for p in spec.ports
        ]
    limits = {
        k: v for k, v in (("cpu", spec.resources.cpu), ("memory", spec.resources.memory)) if v
    }
    if limits:
        container["resources"] = {"limits": limits}
    policy = spec.provider_options.get("image_pull_policy")
    if policy:
        container["imagePullPolicy"] = policy
    pod_spec: JsonObj = {"containers": [container]}
    account = spec.provider_options.get("service_account")
    if account:
        pod_spec["serviceAccountName"] = account
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": spec.service_id,
            "namespace": spec.namespace,
            "labels": labels,
            "annotations": {
                STATE_KEY: "started",
                AUTO_ROLLBACK_KEY: "true" if spec.auto_rollback else "false",
                **change,
            },
        },
        "spec": {
            "replicas": spec.replicas,
            # Kubernetes counts whole seconds; the model's bound keeps it positive.
            "progressDeadlineSeconds": max(1, math.ceil(spec.progress_deadline_seconds)),
            "revisionHistoryLimit": REVISION_HISTORY_LIMIT,
            "selector": {"matchLabels": {SERVICE_KEY: spec.service_id}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        CONFIG_HASH_KEY: config_data_hash,
                        SPEC_KEY: spec_annotation(spec),
                    },
                },
                "spec": pod_spec,
            },
        },
    }


def service_manifest(spec: DeploymentSpec) -> JsonObj:
    """The Service in front of the pods; ``host_port`` is the Service port when set."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": spec.service_id,
            "namespace": spec.namespace,
            "labels": {**user_labels(spec.labels), **own_labels(spec.service_id)},
        },
        "spec": {
            "type": spec.provider_options.get("service_type", "ClusterIP"),
            "selector": {SERVICE_KEY: spec.service_id},
            "ports": [
                {
                    "name": f"{p.protocol}-{p.host_port or p.container_port}",
                    "port": p.host_port or p.container_port,
                    "targetPort": p.container_port,
                    "protocol": p.protocol.upper(),
                }
                for p in spec.ports
            ],
        },
    }


def configmap_manifest(service_id: str, namespace: str) -> JsonObj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": configmap_name(service_id),
            "namespace": namespace,
            "labels": own_labels(service_id),
        },
        "data": {},
    }


def snapshot_name(service_id: str, data_hash: str) -> str:
    return f"{service_id}-config-{data_hash}"


def snapshot_selector(service_id: str) -> str:
    return f"{service_selector(service_id)},{SNAPSHOT_KEY}=true"


def snapshot_manifest(
    service_id: str, namespace: str, data: Mapping[str, str], data_hash: str, version: str
) -> JsonObj:
    """The config one revision runs with, kept for history and rollback: immutable (the
    API server refuses any change of its data), named by the hash its pod template holds."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": snapshot_name(service_id, data_hash),
            "namespace": namespace,
            "labels": {**own_labels(service_id), SNAPSHOT_KEY: "true"},
            "annotations": {CONFIG_VERSION_KEY: version},
        },
        "immutable": True,
        "data": dict(data),
    }
