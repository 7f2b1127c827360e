"""Pods that never get ready on the kwok node: what a kubelet reports for a bad image.

kwok runs no containers, so nothing ever fails to pull or crashes by itself. Its
``Stage`` resources (sigs.k8s.io/kwok, pkg/apis/v1alpha1/stage_types.go) set a
pod's status when it matches a selector; two more stages make the node behave as
a kubelet does for two images:

* ``UNPULLABLE_IMAGE`` (a registry under ``.invalid``, a name that can never resolve:
  RFC 6761): the pod stays Pending, its container waiting in ``ImagePullBackOff``
  with the kubelet's message.
* ``CRASHING_IMAGE``: the pod runs, its container waiting in ``CrashLoopBackOff``
  after exiting 1, never Ready.

kwok picks among the stages a pod matches at random by ``weight``; a stage of
weight 0 (the default pod-ready stage) is never picked beside one of positive
weight (``Lifecycle.Match``, pkg/utils/lifecycle/lifecycle.go), so these win over
pod-ready for as long as they match. They keep matching (the pod stays as they
left it): their status uses only the pod's own creation time, never ``Now``, so
applying one again changes nothing and sends no watch event.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

UNPULLABLE_IMAGE = "registry.invalid/alphaswarm/unpullable:1"
CRASHING_IMAGE = "registry.example/team/crashes:1"

_UNPULLABLE_STATUS = """
conditions:
- lastTransitionTime: {{ .metadata.creationTimestamp | Quote }}
  status: "True"
  type: PodScheduled
- lastTransitionTime: {{ .metadata.creationTimestamp | Quote }}
  status: "False"
  reason: ContainersNotReady
  type: Ready
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: false
  restartCount: 0
  started: false
  state:
    waiting:
      reason: ImagePullBackOff
      message: {{ printf "Back-off pulling image %q" .image | Quote }}
{{ end }}
phase: Pending
"""

_CRASHING_STATUS = """
conditions:
- lastTransitionTime: {{ .metadata.creationTimestamp | Quote }}
  status: "True"
  type: PodScheduled
- lastTransitionTime: {{ .metadata.creationTimestamp | Quote }}
  status: "False"
  reason: ContainersNotReady
  type: Ready
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: false
  restartCount: 3
  started: false
  lastState:
    terminated:
      exitCode: 1
      reason: Error
      startedAt: {{ $.metadata.creationTimestamp | Quote }}
      finishedAt: {{ $.metadata.creationTimestamp | Quote }}
  state:
    waiting:
      reason: CrashLoopBackOff
      message: "back-off 40s restarting failed container"
{{ end }}
phase: Running
"""


def _stage(name: str, image: str, status: str) -> dict[str, Any]:
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1",
        "kind": "Stage",
        "metadata": {"name": name},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {
                "matchExpressions": [
                    {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                    {"key": ".spec.containers.[].image", "operator": "In", "values": [image]},
                ]
            },
            "weight": 1,
            "next": {"statusTemplate": status},
        },
    }


def failing_pods_config(path: Path) -> Path:
    """A kwok configuration file with both stages (JSON documents are YAML)."""
    stages = [
        _stage("alphaswarm-image-pull-backoff", UNPULLABLE_IMAGE, _UNPULLABLE_STATUS),
        _stage("alphaswarm-crash-loop-backoff", CRASHING_IMAGE, _CRASHING_STATUS),
    ]
    path.write_text("\n---\n".join(json.dumps(stage) for stage in stages))
    return path
