"""The ``kubernetes`` provider: services as Deployments on any Kubernetes cluster.

Objects (all in the request's namespace, all labelled
``app.kubernetes.io/managed-by=alphaswarm`` and ``alphaswarm.dev/service=<id>``):

* ``Deployment/<id>``: the service. Container ``main`` runs ``spec.image``
  (``spec.command`` overrides the entrypoint), ``spec.env`` as env, the
  ConfigMap below through ``envFrom``, ``spec.resources`` as limits.
* ``Service/<id>``: only when the spec has ports; ``host_port`` (or the
  container port) is the Service port, the container port its target.
* ``ConfigMap/<id>-config``: the service's config (``get_config`` /
  ``apply_config``). Its ``resourceVersion`` is the config version: a PUT
  carrying it is conditional, so a stale ``expected_version`` is ABORTED and
  nothing is written. A change rolls the pods out by updating the pod
  template annotation ``alphaswarm.dev/config-hash``.

Semantics:

* ``start`` converges by server-side apply (field manager ``alphaswarm``,
  forced) of the whole Deployment and Service it wants, never a replace: an
  unchanged spec is a no-op on the server, a changed one is a rolling update.
  The ConfigMap is created empty if missing and never overwritten by start.
  A start that fails deletes what it created (Deployment, ConfigMap).
* ``stop`` deletes what start created for serving (the pods, by setting
  replicas to 0 with the mark ``alphaswarm.dev/state=stopped``, and the
  Service) and keeps the Deployment and ConfigMap as the service's
  definition, as the contract requires: status is STOPPED, a second stop
  succeeds, ``start`` brings it back, ``list`` shows it. A stopped service
  is not scaled up (FAILED_PRECONDITION, "StartDeployment brings it back");
  scaling to 0 without stop keeps the Service.
* ``scale`` patches the ``deployments/scale`` subresource; the same count is
  a no-op. ``status`` reads the Deployment (readiness, observedGeneration,
  Progressing/ReplicaFailure conditions) and its pods (instances, restarts,
  waiting reasons such as CrashLoopBackOff in the message).
* ``list_deployments`` lists with the managed-by label selector, paged with
  ``limit``/``continue`` (``ALPHASWARM_KUBERNETES_PAGE_SIZE``, default 500):
  N deployments cost ceil(N / page) requests; listed statuses carry no
  per-pod instances (that would be a request per deployment).
* ``stream_metrics`` sums metrics.k8s.io PodMetrics of the service's pods;
  without that API the stream fails once with UNIMPLEMENTED.
* ``watch`` is client-go's reflector over the one Deployment (reflector.py):
  list for a fresh collection resourceVersion, watch from it with bookmarks,
  list again on 410 Gone, back off (capped, jittered) on every other failure.
* ``watch_deployments`` (WatchDeployments) is one list+watch of the managed
  Deployments of the namespace, or of every namespace, with the same reflector
  rules: 50 services cost one list and one watch, not 50. Every deployment
  comes as ADDED, then SNAPSHOT_DONE, then ADDED/MODIFIED/DELETED; a relist
  after 410 is diffed against what was sent (nothing lost, nothing repeated).
* ``stream_logs`` reads ``pods/log`` of each running pod (container ``main``,
  ``timestamps=true``, ``tailLines``, ``sinceTime``), merged by time, at most 64
  pod streams open at once, each through a small bounded queue (a slow
  reader slows the reads: backpressure, no unbounded buffer). With follow,
  each pod is then followed from its last line, pods that appear later
  (scale-up, a roll-out, a restart) are found through one pod watch and
  followed with their retained lines, and a follow that breaks is reopened
  from its last line with backoff. Lines are cut at 16 KiB (marked
  truncated). The API does not tell stdout from stderr (UNSPECIFIED). How far
  back: what the kubelet keeps of the current container's log (by default 5
  rotated files of 10 MiB); a deleted pod's log is gone, a restarted
  container's previous log is not read.
* ``delete`` removes the Service and the ConfigMap (if this provider made them),
  then the Deployment, with the uid it read as a precondition and background
  propagation (the garbage collector removes ReplicaSets and pods). The
  Deployment goes last, so a delete that fails half-way leaves the service
  listed and a retry finishes it.
* ``health`` reads ``/version`` and asks SelfSubjectAccessReviews for every
  permission the provider uses; unreachable clusters are UNAVAILABLE with
  the endpoint, KUBECONFIG, context and namespace in the message.

Cluster connection, in order: an injected ``ClusterConnection``; ``KUBECONFIG``
(or ``~/.kube/config``) with context ``ALPHASWARM_KUBERNETES_CONTEXT``; the
in-cluster service account. Settings: ``ALPHASWARM_KUBERNETES_NAMESPACE``
(namespace when a call names none; default: the context's, else
``default``), ``_PAGE_SIZE`` (500), ``_TIMEOUT`` (30 s cap per API call, also
bounded by the gRPC deadline), ``_WATCH_TIMEOUT`` (300 s per watch request),
``_CREATE_NAMESPACES`` (false: a start into a missing namespace is NOT_FOUND;
true: the namespace is created).

Reuse by the cloud providers (stable API)::

    from alphaswarm_controller.providers.kubernetes import ClusterConnection, KubernetesProvider

    provider = KubernetesProvider.from_connection(
        ClusterConnection(endpoint="https://...", ca_data=pem_bytes, token=token),
        env=env,          # the provider's environment (ALPHASWARM_KUBERNETES_* settings)
        alias="aws",      # reported in statuses, samples and health
        kind="aws",       # optional: health's kind (default "kubernetes")
    )

``ClusterConnection(endpoint, ca_data=None, token=None, namespace="default",
verify=True, token_provider=None, description="")``: ``token_provider`` is
called for a fresh bearer token on each request (short-lived EKS/GKE tokens);
``description`` names the cluster in error messages.

A subclass that learns its cluster lazily (EKS, AKS, GKE) overrides one hook::

    async def _discover_connection(self) -> ClusterConnection | None

It runs on the event loop on first use (the constructor does no I/O), at most
once at a time, and only while no connection was given; blocking work goes
through ``self.run_blocking``; an error reaches the call that needed the
cluster, and the next call asks again. The default (None) reads kubeconfig or
the in-cluster service account.
"""

from __future__ import annotations

from .connection import ClusterConnection
from .provider import KubernetesProvider

__all__ = ["ClusterConnection", "KubernetesProvider"]
