#!/usr/bin/env bash
# Build (or reuse) the helm binary that lints and renders deploy/helm, and print its path.
#
# From the Go module proxy, at the version pinned in go.mod/go.sum beside this script
# (helm.sh/helm/v3 v3.22.0; tools.go names its main package so `go mod tidy` keeps it).
# The output lives outside the work tree, in
#   ${ALPHASWARM_CACHE_DIR:-$HOME/.cache/alphaswarm}/helm/<recipe hash>/helm
# where the hash covers what decides the binary (this script but its comment lines,
# go.mod, go.sum, the Go version): an unchanged recipe is reused at once. With
# --if-built it only prints the path of an existing build (exit 3 if there is none).
#
# Measured on 2 shared cores: 27 min cold while other jobs kept the machine busy (the
# Kubernetes client packages dominate), under a minute with warm Go caches, instant
# when reused.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
HELM_VERSION=v3.22.0
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"
# Helm's release builds stamp the version, and the Kubernetes version that `helm
# template` and `helm lint` assume, from the client-go it links (its Makefile's LDFLAGS:
# client-go v0.37.x -> Kubernetes 1.37).
client_go="$(cd "$here" && go list -m -f '{{.Version}}' k8s.io/client-go)"
k8s_minor="$(echo "$client_go" | cut -d. -f2)"
LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
LDFLAGS+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    LDFLAGS+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done

recipe="$(
    cd "$here"
    {
        go version
        printf '%s\n' "$LDFLAGS"
        sed '/^[[:space:]]*#/d' build.sh
        cat go.mod go.sum
    } | sha256sum | cut -c1-16
)"
root="${ALPHASWARM_CACHE_DIR:-$HOME/.cache/alphaswarm}/helm"
out="$root/$HELM_VERSION-$recipe"

if [[ -x "$out/helm" ]]; then
    echo "$out/helm"
    exit 0
fi
if [[ "${1:-}" == "--if-built" ]]; then
    echo "helm is not built yet: run bash scripts/helm/build.sh" >&2
    exit 3
fi

mkdir -p "$root"
exec 9>"$root/.lock"
flock 9 # another run may be building the same recipe: wait for it, then reuse
if [[ -x "$out/helm" ]]; then
    echo "$out/helm"
    exit 0
fi
staging="$(mktemp -d "$root/.build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
echo "building helm $HELM_VERSION into $out (first time: a few minutes)" >&2
start=$SECONDS
(cd "$here" && go build -trimpath -ldflags "$LDFLAGS" -o "$staging/helm" helm.sh/helm/v3/cmd/helm) >&2
"$staging/helm" version --short >&2
rm -rf "$out"
mv "$staging" "$out" # the binary appears only once it is whole
trap - EXIT
echo "built in $((SECONDS - start)) s" >&2
echo "$out/helm"
