"""The ``azure`` provider: one class per backend mode, picked by ``select_backend``.

* ``AciProvider`` (``ALPHASWARM_AZURE_MODE=aci``, the default): each replica an
  Azure Container Instances container group (``aci_provider``; translation in
  ``aci``, ARM calls in ``gateway``, config as environment in ``config``, status
  in ``status``, Azure Monitor in ``metrics``, the polled logs API in ``logs``).
* ``AciRevisionsProvider`` (``aci`` with ``ALPHASWARM_AZURE_REVISIONS_ACCOUNT_URL`` or
  ``_CONNECTION_STRING`` set): the same plus revisions, kept in Azure Blob Storage
  (``aci_revisions_provider``; record in ``revision_record``, blob I/O in
  ``revision_store``, rolls in ``aci_roll``, outcomes in ``aci_rollout``).
* ``AksProvider`` (``aks``): a ``KubernetesProvider`` on an AKS cluster whose
  connection comes from ``listClusterUserCredential`` (``aks_provider``, ``aks``).

Both report alias and kind ``azure`` and share ``clients.AzureAccess``: the
``ALPHASWARM_AZURE_*`` settings (``settings``: the token scope of the ARM
endpoint's cloud), azure-identity's credential chain, the azure-mgmt clients and
their bounded retries (``retry``). Settings, IAM, limits checked before any
call, memory rounding, the one-at-a-time config roll, delete and where logs come
from: the azure section of docs/providers.md.

Install with ``pip install 'alphaswarm-controller[azure]'``. Importing this
package imports the Azure SDK and the kubernetes client; the registry does it
lazily, when the alias is first used.
"""

from __future__ import annotations

from .aci_provider import AciProvider
from .aci_revisions_provider import AciRevisionsProvider
from .aks_provider import AksProvider
from .backend import select_backend

__all__ = ["AciProvider", "AciRevisionsProvider", "AksProvider", "select_backend"]
