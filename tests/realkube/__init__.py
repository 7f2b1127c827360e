"""A real Kubernetes control plane for the tests, started once per pytest session.

``scripts/kube/build.sh`` builds etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok from the published Go modules; ``cluster.KubeCluster``
runs them on loopback; ``fixtures`` binds them to pytest.
"""
