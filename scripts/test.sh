#!/usr/bin/env bash
# Set up everything the tests need, then run every check and the whole test suite.
#
# Installs the venv with all providers and dev tools, starts (or reuses) a Docker
# engine for the docker_compose provider, builds (or reuses) the Kubernetes control plane
# the kubernetes tests start (scripts/kube/build.sh), checks the generated stubs and the protos
# (buf lint / format / breaking), runs ruff and mypy, then pytest. Any failure,
# including a backend that cannot start, fails the run. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="$(bash scripts/venv.sh dev,all-providers)"
export PATH="$PWD/$venv/bin:$PATH"

step() { printf '\n== %s\n' "$*"; }

step "generated stubs match protos/"
python scripts/generate_protos.py --check

step "buf lint, format, breaking"
buf lint
buf format --exit-code --diff >/dev/null || { buf format --diff; exit 1; }
if git rev-parse --verify -q 'HEAD~1' >/dev/null \
    && git cat-file -e 'HEAD~1:protos/alphaswarm/provider/v1/provider_service.proto' 2>/dev/null; then
    buf breaking --against '.git#ref=HEAD~1'
    echo "no breaking change against HEAD~1"
else
    echo "no previous commit with protos: nothing to compare against"
fi

step "ruff and mypy"
ruff check .
ruff format --check server client/alphaswarm_client tests benchmarks scripts
mypy

step "docker engine"
eval "$(bash scripts/ci/start-dockerd.sh)"
if [[ -n "${ALPHASWARM_DOCKERD_ROOT:-}" ]]; then
    trap 'kill "$(cat "$ALPHASWARM_DOCKERD_ROOT/d.pid" 2>/dev/null)" 2>/dev/null || true' EXIT
fi

step "kubernetes control plane (first build 10-17 min on 2 cores, then reused from the cache)"
ALPHASWARM_KUBE_BIN_DIR="$(bash scripts/kube/build.sh)"
export ALPHASWARM_KUBE_BIN_DIR
echo "$ALPHASWARM_KUBE_BIN_DIR"

step "helm from its Go module, for the chart's tests (first build minutes, then reused)"
ALPHASWARM_HELM="$(bash scripts/helm/build.sh)"
export ALPHASWARM_HELM
echo "$ALPHASWARM_HELM"

step "zsh and fish for the shell-completion tests (Debian packages)"
if ! command -v zsh >/dev/null || ! command -v fish >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q zsh fish >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q zsh fish >/dev/null; }
fi

step "pytest"
set +e
python -m pytest -p no:cacheprovider "$@"
code=$?
set -e
if [[ $code -eq 5 ]]; then
    echo "pytest collected no tests: failing the run" >&2
    exit 1
fi
exit $code
