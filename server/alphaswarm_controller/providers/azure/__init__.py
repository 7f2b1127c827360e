"""The ``azure`` provider: Azure Container Instances (default) or an AKS cluster.

Install with ``pip install 'alphaswarm-controller[azure]'``. Importing this
package imports the Azure SDK; the registry does it lazily, on first use.

Settings (``ALPHASWARM_AZURE_*``)
---------------------------------

* ``SUBSCRIPTION_ID``, ``RESOURCE_GROUP`` (required), ``LOCATION`` (required in
  Container Instances mode, e.g. ``westeurope``).
* ``MODE``: ``aci`` (default) or ``aks``; ``AKS_CLUSTER``: the managed
  cluster's name in ``RESOURCE_GROUP`` (AKS mode).
* ``ARM_ENDPOINT``: Azure Resource Manager base URL (default
  ``https://management.azure.com``); set it for sovereign clouds or an ARM
  emulator. Tokens are still requested for the management scope
  ``https://management.azure.com/.default``.
* ``MAX_PARALLEL`` (8): container groups created/deleted at once by one call.
* ``POLL_INTERVAL`` (2 s): polling of ARM long-running operations.

Credentials come from azure-identity's ``DefaultAzureCredential``: a service
principal (``AZURE_CLIENT_ID``, ``AZURE_TENANT_ID``, ``AZURE_CLIENT_SECRET``),
workload identity (``AZURE_CLIENT_ID``, ``AZURE_TENANT_ID``,
``AZURE_FEDERATED_TOKEN_FILE``, e.g. on AKS), a managed identity, or
``az login``. ``health`` asks for a management-scope token (none:
FAILED_PRECONDITION naming these sources) and lists the resource group.
IAM: the **Contributor** role on the resource group (Container Instances) or,
in AKS mode, the "Azure Kubernetes Service Cluster User Role" on the cluster
plus what the kubernetes provider needs inside it. AuthorizationFailed is
PERMISSION_DENIED naming the role; quota errors are RESOURCE_EXHAUSTED;
throttling (429) is UNAVAILABLE with the Retry-After ARM sent.

Container Instances mode
------------------------

* A replica is a container group ``<namespace>-<service>-<ordinal>`` (one
  container named after the service) tagged ``alphaswarm-managed``,
  ``-service``, ``-namespace``, ``-ordinal``, ``-spec-hash``,
  ``-config-version``, ``-instance`` (a token per creation: the instance id
  is ``<group>/<token>``) and ``-stopped``; the spec's labels are tags too.
  Names ARM rejects (over 63 characters with the largest ordinal, ``--``),
  labels that are not valid tag names, CPU outside 0.1-4 cores, memory outside
  0.1-16 GB, remapped ports (ACI cannot remap: ``host_port`` is 0 or the
  container port, and a set one is exposed on a public IP) and specs with no
  image are INVALID_ARGUMENT naming the field, before any request. Defaults:
  1 core, 1.5 GB, restart policy ``Always`` (``provider_options
  restart_policy``: Always, OnFailure, Never).
* ``start`` converges from one listing of the resource group: it creates
  missing groups, deletes and recreates those whose spec hash differs, deletes
  surplus ordinals, restarts a stopped service, and sends no write when the
  spec holds. Creates return once ARM accepted the PUT (provisioning goes on;
  ``status`` shows it); deletes are waited for, since a name can be reused
  only after its group is gone.
* ``scale`` creates or deletes groups concurrently (at most ``MAX_PARALLEL``
  at once), copying an existing replica; a failed scale-up deletes the groups
  it had created and reports the first error.
* ``stop`` (and scale to 0) deletes every group but ordinal 0 and keeps that
  one **stopped** (ACI's stop operation; tagged ``alphaswarm-stopped``), so
  the service keeps its definition and config, a second stop succeeds, it
  is listed as STOPPED, and start/scale bring it back with ACI's start
  operation. A stopped group bills no compute. Delete the groups (e.g.
  ``az container delete``) to forget a service.
* ``status`` lists the resource group once and reads each running group
  (GET, with its instance view): a replica is ready when provisioning
  succeeded and its containers run. ``list_deployments`` uses that one
  listing only (ARM lists no instance views): a provisioned group counts as
  ready there.
* Config is the containers' environment: config keys become variables next
  to ``spec.env`` (config wins on a clash), ``ALPHASWARM_CONFIG_KEYS`` lists
  them, the version is the groups' ``alphaswarm-config-version`` tag (a
  counter, ``"0"`` before any config). ``apply_config`` checks
  ``expected_version`` (ABORTED when stale, nothing written), then recreates
  the groups one at a time. Keys written ``secret.NAME`` become variable
  ``NAME`` with ACI's ``secureValue``; Azure never returns it, so reads show
  ``<secret>`` and an operation that must create a group (scale up, a start
  that adds or replaces replicas, apply_config without the secret in
  ``set``) is FAILED_PRECONDITION (SECRET_VALUES_UNREADABLE) naming the keys.
  The version check reads the tags, then writes: two controllers applying at
  the same instant are not serialized by ARM.
* Metrics: Azure Monitor ``CpuUsage`` (millicores) and ``MemoryUsage``
  (bytes) of each running group, newest point of the last five minutes,
  summed; ``cpu_percent`` is percent of one core. Azure publishes them with
  a delay of a minute or two. A failed read yields ``ok=False`` and the
  stream goes on.

AKS mode
--------

``ALPHASWARM_AZURE_MODE=aks`` fetches the cluster's user kubeconfig
(``managedClusters/listClusterUserCredential``) once, takes the API server,
its CA and the user token from it, and delegates every call to the
kubernetes provider (``KubernetesProvider.from_connection``, alias
``azure``), whose ``ALPHASWARM_KUBERNETES_*`` settings apply. Clusters whose
users authenticate only through Microsoft Entra ID (``kubelogin``) are
refused with a clear error: the cluster needs local accounts.
"""

from __future__ import annotations

from .aci_provider import AciProvider
from .aks_provider import AksProvider
from .backend import select_backend

__all__ = ["AciProvider", "AksProvider", "select_backend"]
