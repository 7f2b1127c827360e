"""The fake controllers of the Kubernetes API emulator.

A single background thread plays the Deployment controller and the kubelet:
it creates pods for each Deployment's current pod template, makes them ready
after ``ready_delay``, replaces pods of an older template (a rollout), removes
surplus pods, garbage-collects pods of deleted Deployments, and writes the
Deployment's status and conditions the way the real controller does.

Images whose name contains ``crashloop`` never become ready (the container is
in CrashLoopBackOff and its restart count grows); images containing
``imagepullfail`` are stuck in ImagePullBackOff. After ``progress_deadline``
seconds without progress the Progressing condition turns False with reason
ProgressDeadlineExceeded, as ``spec.progressDeadlineSeconds`` does for real.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from typing import Any

from .kube_store import JsonObj, Store, now_iso


def template_hash(template: JsonObj) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def _failure(image: str) -> tuple[str, str] | None:
    if "crashloop" in image:
        return "CrashLoopBackOff", "back-off restarting failed container"
    if "imagepullfail" in image:
        return "ImagePullBackOff", f'Back-off pulling image "{image}"'
    return None


class FakeController:
    def __init__(
        self,
        store: Store,
        *,
        tick: float = 0.05,
        ready_delay: float = 0.1,
        progress_deadline: float = 2.0,
    ) -> None:
        self.store = store
        self.tick = tick
        self.ready_delay = ready_delay
        self.progress_deadline = progress_deadline
        self.paused = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kube-fake-controller", daemon=True)
        #: deployment uid -> monotonic time of its last progress.
        self._progress: dict[str, float] = {}
        self._born: dict[tuple[str, str], float] = {}
        self._restarted: dict[tuple[str, str], float] = {}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            if not self.paused:
                self.reconcile_all()

    # -- reconciliation -----------------------------------------------------------------------

    def reconcile_all(self) -> None:
        store = self.store
        with store.lock:
            deployments = list(store.objects["deployments"].values())
            by_owner: dict[str, list[JsonObj]] = {}
            for pod in store.objects["pods"].values():
                owners = pod["metadata"].get("ownerReferences") or [{}]
                by_owner.setdefault(owners[0].get("uid", ""), []).append(pod)
            live = set()
            for deployment in deployments:
                uid = deployment["metadata"]["uid"]
                live.add(uid)
                self._reconcile(deployment, by_owner.get(uid, []))
            for uid, pods in by_owner.items():
                if uid not in live:
                    for pod in pods:
                        meta = pod["metadata"]
                        store.delete("pods", meta["namespace"], meta["name"])

    def _reconcile(self, deployment: JsonObj, pods: list[JsonObj]) -> None:
        store = self.store
        meta, spec = deployment["metadata"], deployment["spec"]
        namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
        desired = int(spec.get("replicas", 1))
        template = spec["template"]
        current_hash = template_hash(template)
        now = time.monotonic()
        current = [
            p for p in pods if p["metadata"]["labels"].get("pod-template-hash") == current_hash
        ]
        old = [p for p in pods if p not in current]
        progressed = False

        for pod in current[desired:]:
            store.delete("pods", namespace, pod["metadata"]["name"])
            progressed = True
        current = current[:desired]
        for _ in range(desired - len(current)):
            current.append(self._create_pod(deployment, template, current_hash))
            progressed = True
        for pod in current:
            progressed |= self._kubelet(pod, now)
        pods_now = store.objects["pods"]
        current = [pods_now.get((namespace, p["metadata"]["name"]), p) for p in current]
        ready = [p for p in current if _is_ready(p)]
        if old and len(ready) == desired:
            for pod in old:
                store.delete("pods", namespace, pod["metadata"]["name"])
            old = []
            progressed = True
        if progressed or uid not in self._progress:
            self._progress[uid] = now
        if len(ready) == desired and not old:
            self._progress[uid] = now

        total_ready = len(ready) + sum(1 for p in old if _is_ready(p))
        status: dict[str, Any] = {
            "observedGeneration": meta["generation"],
            "replicas": len(current) + len(old),
            "updatedReplicas": len(current),
        }
        if total_ready:
            status["readyReplicas"] = total_ready
            status["availableReplicas"] = total_ready
        unavailable = max(0, desired - total_ready)
        if unavailable:
            status["unavailableReplicas"] = unavailable
        status["conditions"] = self._conditions(
            deployment, desired, total_ready, now - self._progress[uid]
        )
        if status != _comparable(deployment.get("status") or {}):
            stamp = now_iso()
            for condition in status["conditions"]:
                condition["lastUpdateTime"] = stamp
                condition["lastTransitionTime"] = stamp

            def write(obj: JsonObj) -> JsonObj:
                obj["status"] = status
                return obj

            store.update("deployments", namespace, name, write, status_only=True)

    def _conditions(
        self, deployment: JsonObj, desired: int, ready: int, stalled_for: float
    ) -> list[JsonObj]:
        name = deployment["metadata"]["name"]
        available = ready >= desired
        conditions = [
            {
                "type": "Available",
                "status": "True" if available else "False",
                "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "message": "Deployment has minimum availability."
                if available
                else "Deployment does not have minimum availability.",
            }
        ]
        if ready >= desired:
            progressing = {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable",
                "message": f'ReplicaSet "{name}" has successfully progressed.',
            }
        elif stalled_for > self.progress_deadline:
            progressing = {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": f'ReplicaSet "{name}" has timed out progressing.',
            }
        else:
            progressing = {
                "type": "Progressing",
                "status": "True",
                "reason": "ReplicaSetUpdated",
                "message": f'ReplicaSet "{name}" is progressing.',
            }
        conditions.append(progressing)
        return conditions

    def _create_pod(self, deployment: JsonObj, template: JsonObj, pod_hash: str) -> JsonObj:
        meta = deployment["metadata"]
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        labels["pod-template-hash"] = pod_hash
        containers = template["spec"]["containers"]
        pod = {
            "metadata": {
                "name": f"{meta['name']}-{pod_hash}-{secrets.token_hex(3)[:5]}",
                "labels": labels,
                "annotations": dict((template.get("metadata") or {}).get("annotations") or {}),
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": template["spec"],
            "status": {
                "phase": "Pending",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {
                        "name": c["name"],
                        "image": c["image"],
                        "ready": False,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": "ContainerCreating"}},
                    }
                    for c in containers
                ],
            },
        }
        created = self.store.create("pods", meta["namespace"], pod)
        self._born[(meta["namespace"], created["metadata"]["name"])] = time.monotonic()
        return created

    def _kubelet(self, pod: JsonObj, now: float) -> bool:
        """Move one pod along its life; True when it changed."""
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        stored = self.store.objects["pods"].get(key)
        born = self._born.get(key, now)
        if stored is None or now - born < self.ready_delay:
            return False
        images = [c["image"] for c in stored["spec"]["containers"]]
        failure = next((f for f in map(_failure, images) if f), None)
        if failure is None:
            if _is_ready(stored):
                return False
            phase, ready = "Running", True
            states = [{"running": {"startedAt": now_iso()}} for _ in images]
            restarts = [0 for _ in images]
        else:
            reason, message = failure
            last = stored["status"]["containerStatuses"]
            same = last[0]["state"].get("waiting", {}).get("reason") == reason
            if same and (reason != "CrashLoopBackOff" or now - self._restarted.get(key, 0) < 1):
                return False
            self._restarted[key] = now
            phase, ready = "Running" if reason == "CrashLoopBackOff" else "Pending", False
            states = [{"waiting": {"reason": reason, "message": message}} for _ in images]
            bump = 1 if reason == "CrashLoopBackOff" else 0
            restarts = [c["restartCount"] + bump for c in last]

        def write(obj: JsonObj) -> JsonObj:
            obj["status"] = {
                "phase": phase,
                "podIP": "10.0.0.1",
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                "containerStatuses": [
                    {
                        "name": c["name"],
                        "image": c["image"],
                        "ready": ready,
                        "restartCount": restarts[i],
                        "state": states[i],
                    }
                    for i, c in enumerate(obj["spec"]["containers"])
                ],
            }
            return obj

        self.store.update("pods", key[0], key[1], write)
        return failure is None


def _is_ready(pod: JsonObj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _comparable(status: JsonObj) -> JsonObj:
    """Status without timestamps, to tell whether anything really changed."""
    result = dict(status)
    result["conditions"] = [
        {k: v for k, v in c.items() if k not in ("lastUpdateTime", "lastTransitionTime")}
        for c in status.get("conditions") or []
    ]
    return result
