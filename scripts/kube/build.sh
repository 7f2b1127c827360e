#!/usr/bin/env bash
# Build (or reuse) the Kubernetes control plane the tests start, and print its bin dir.
#
# From the Go module proxy, at the versions pinned in go.mod/go.sum beside this script:
#   kube-apiserver, kube-controller-manager, kube-scheduler  k8s.io/kubernetes v1.37.2
#   etcd        go.etcd.io/etcd/server/v3 (embed) behind our ./cmd/etcd main
#   kwok        sigs.k8s.io/kwok v0.8.0, the node/pod lifecycle simulator, with its
#               default stages (share/kwok/stages.yaml, copied from the module)
# All five come from one `go build` invocation so shared packages compile once.
#
# The output lives outside the work tree, in
#   ${ALPHASWARM_CACHE_DIR:-$HOME/.cache/alphaswarm}/kube/<recipe hash>/bin
# where the hash covers everything that decides the binaries (this script, go.mod,
# go.sum, our sources, the Go version): an unchanged recipe is reused at once, a
# changed one builds into a new directory. The Go module and build caches stay at
# their defaults. With --if-built it only prints the bin dir of an existing build
# (exit 3 if there is none).
#
# Measured on 2 shared cores: about 9 min cold (empty module and build caches: 610 MB
# of modules, ~760 s of CPU), about 15 s with warm Go caches, instant when reused.
# The binaries take about 400 MB.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
KUBE_VERSION=v1.37.2
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
PACKAGES=(
    ./cmd/etcd
    k8s.io/kubernetes/cmd/kube-apiserver
    k8s.io/kubernetes/cmd/kube-controller-manager
    k8s.io/kubernetes/cmd/kube-scheduler
    sigs.k8s.io/kwok/cmd/kwok
)
# The stages kwokctl uses by default (kustomize/stage/fast): nodes become Ready and
# hold a Lease, pods become Running/Ready, deleted pods are removed.
KWOK_STAGES=(node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml)

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
        printf '%s\n' "$LDFLAGS" "${PACKAGES[@]}" "${KWOK_STAGES[@]}"
        cat build.sh go.mod go.sum cmd/etcd/main.go
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
echo "building the Kubernetes $KUBE_VERSION control plane into $out (first time: ~9 min on 2 cores)" >&2
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
for stage in "${KWOK_STAGES[@]}"; do
    printf -- '---\n'
    cat "$kwok_dir/kustomize/stage/$stage"
done >"$staging/share/kwok/stages.yaml"

touch "$staging/.complete"
rm -rf "$out" # an interrupted earlier attempt cannot have left .complete
mv "$staging" "$out"
trap - EXIT
echo "built in $((SECONDS - start)) s" >&2
echo "$out/bin"
