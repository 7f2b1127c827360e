#!/usr/bin/env bash
# Build (or reuse) the Kubernetes control plane the tests start, and print its bin dir.
#
# From the Go module proxy, at the versions pinned in go.mod/go.sum beside this script:
#   kube-apiserver, kube-controller-manager, kube-scheduler  k8s.io/kubernetes v1.37.2
#   etcd        go.etcd.io/etcd/server/v3 (embed) behind our ./cmd/etcd main
#   kwok        sigs.k8s.io/kwok v0.8.0, the node/pod lifecycle simulator, with its
#               default stages and its kubelet-style resource metrics
#               (share/kwok/config.yaml, concatenated from the module's own files)
#   metrics-server  sigs.k8s.io/metrics-server v0.9.0, serving metrics.k8s.io
# All six come from one `go build` invocation so shared packages compile once.
#
# The output lives outside the work tree, in
#   ${ALPHASWARM_CACHE_DIR:-$HOME/.cache/alphaswarm}/kube/<recipe hash>/bin
# where the hash covers everything that decides the binaries (this script but its
# comment lines, go.mod, go.sum, our sources, the Go version): an unchanged recipe
# is reused at once, a changed one builds into a new directory. The Go module and
# build caches stay at their defaults. With --if-built it only prints the bin dir of
# an existing build (exit 3 if there is none).
#
# Measured on 2 shared cores: 17 min cold (empty module and build caches) while other
# jobs kept the load at 5-11, 933 s of CPU, so about 10 min on an idle machine; under a
# minute with warm Go caches; instant when reused. It downloads 680 MB of modules,
# fills 3.8 GB of Go build cache, and the binaries take 450 MB.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KUBE_VERSION=v1.37.2
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok metrics-server)
PACKAGES=(
    ./cmd/etcd
    k8s.io/kubernetes/cmd/kube-apiserver
    k8s.io/kubernetes/cmd/kube-controller-manager
    k8s.io/kubernetes/cmd/kube-scheduler
    sigs.k8s.io/kwok/cmd/kwok
    sigs.k8s.io/metrics-server/cmd/metrics-server
)
# kwok's configuration, from the files kwokctl uses by default (under kustomize/ in
# the module): nodes become Ready and hold a Lease, pods become Running/Ready, deleted
# pods are removed; each node serves /metrics/resource as a kubelet does, with each
# pod using 1m CPU and 1Mi memory unless its annotations say otherwise.
KWOK_CONFIG=(stage/node/fast/node-initialize.yaml
    stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
    stage/pod/fast/pod-ready.yaml stage/pod/fast/pod-complete.yaml stage/pod/fast/pod-delete.yaml
    metrics/resource/metrics-resource.yaml metrics/usage/usage-from-annotation.yaml)

# Static binaries, no paths or VCS state baked in, no symbol tables (about a third
# smaller, less to link); /version reports the release like an official build.
VERSION_PKG=k8s.io/component-base/version
LDFLAGS="-s -w -X $VERSION_PKG.gitVersion=$KUBE_VERSION -X $VERSION_PKG.gitMajor=1"
LDFLAGS+=" -X $VERSION_PKG.gitMinor=37 -X $VERSION_PKG.gitTreeState=clean"
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"

recipe="$(
    cd "$here"
    {
        go version
        printf '%s\n' "$LDFLAGS" "${PACKAGES[@]}" "${KWOK_CONFIG[@]}"
        sed '/^[[:space:]]*#/d' build.sh # a comment edit does not cost a rebuild
        cat go.mod go.sum cmd/etcd/main.go
    } | sha256sum | cut -c1-16
)"
root="${ALPHASWARM_CACHE_DIR:-$HOME/.cache/alphaswarm}/kube"
out="$root/$KUBE_VERSION-$recipe"

complete() { [[ -f "$out/.complete" ]]; }
if complete; then
    echo "$out/bin"
    exit 0
fi
if [[ "${1:-}" == "--if-built" ]]; then
    echo "the Kubernetes control plane is not built yet: run bash scripts/kube/build.sh" >&2
    exit 3
fi

mkdir -p "$root"
exec 9>"$root/.lock"
flock 9 # another run may be building the same recipe: wait for it, then reuse
if complete; then
    echo "$out/bin"
    exit 0
fi

staging="$(mktemp -d "$root/.build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
echo "building the Kubernetes $KUBE_VERSION control plane into $out (first time: 10-17 min on 2 cores)" >&2
start=$SECONDS
(
    cd "$here"
    go build -trimpath -ldflags "$LDFLAGS" -o "$staging/bin/" "${PACKAGES[@]}"
) >&2
for binary in "${BINARIES[@]}"; do
    [[ -x "$staging/bin/$binary" ]] || { echo "build produced no $binary" >&2; exit 1; }
done

kwok_dir="$(cd "$here" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
mkdir -p "$staging/share/kwok"
for file in "${KWOK_CONFIG[@]}"; do
    printf -- '---\n'
    cat "$kwok_dir/kustomize/$file"
done >"$staging/share/kwok/config.yaml"

touch "$staging/.complete"
rm -rf "$out" # an interrupted earlier attempt cannot have left .complete
mv "$staging" "$out"
trap - EXIT
echo "built in $((SECONDS - start)) s" >&2
echo "$out/bin"
