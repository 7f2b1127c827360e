#!/usr/bin/env bash
# Set up everything the tests need, then run every check and the whole test suite.
#
# Installs the venv with all providers and dev tools, starts (or reuses) a Docker
# engine for the docker_compose provider, builds (or reuses) the Kubernetes control
# plane (scripts/kube/build.sh) and starts one for the run that every test process
# shares (tests/realkube/shared.py), checks the generated stubs and the protos (buf
# lint / format / breaking), runs ruff and mypy, then pytest and, beside it, each
# provider extra alone in a clean venv and at the lowest versions its floors allow
# (scripts/ci/provider_matrix.py). Any failure, including a backend that cannot start,
# fails the run. Extra arguments go to the main pytest run.
#
# A run removes everything it made, also when it fails or is interrupted (Ctrl-C,
# SIGTERM): the control plane, the Docker engine with its bridge and temp dir, the
# run's temp dir (TMPDIR and pytest's base temp point into it), and any process still
# carrying this run's ALPHASWARM_TEST_RUN. Finding such a process at the end of a run
# that was not interrupted fails the run: a test left it behind.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step says when it began (seconds into the run): CI logs show where a run's time goes.
step() { printf '\n== %s (at %ds)\n' "$*" "$SECONDS"; }

# -- the run's temp dir and the clean-up of everything the run made ----------------------

RUN_DIR="$(mktemp -d /tmp/asw-test.XXXXXX)"
export ALPHASWARM_TEST_RUN="${RUN_DIR##*/}"
export TMPDIR="$RUN_DIR/tmp"
mkdir "$TMPDIR"
# As /tmp is: tests make directories there for the unprivileged users they run
# replicas and servers as (pytest's base temp below stays 0700, as it always is).
chmod 0755 "$RUN_DIR"
chmod 1777 "$TMPDIR"
interrupted=""

# Processes of this run: they inherited ALPHASWARM_TEST_RUN (read in bash, no helper).
run_pids() {
    local pid vars
    for pid in /proc/[0-9]*; do
        pid="${pid#/proc/}"
        [[ "$pid" == "$$" || "$pid" == "$BASHPID" ]] && continue
        mapfile -d '' vars 2>/dev/null <"/proc/$pid/environ" || continue
        [[ " ${vars[*]} " == *" ALPHASWARM_TEST_RUN=$ALPHASWARM_TEST_RUN "* ]] && echo "$pid"
    done
}

# Processes still running after the run: fail (unless interrupted) and stop them.
stop_leftover_processes() {
    local deadline=$((SECONDS + 30)) pids=()
    mapfile -t pids < <(run_pids)
    while ((${#pids[@]})) && ((SECONDS < deadline)); do  # ones shutting down get time
        sleep 0.5
        mapfile -t pids < <(run_pids)
    done
    ((${#pids[@]})) || return 0
    local pid
    for pid in "${pids[@]}"; do
        echo "left behind: pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" >&2
    done
    kill -TERM "${pids[@]}" 2>/dev/null || true
    sleep 2
    mapfile -t pids < <(run_pids)
    ((${#pids[@]})) && kill -KILL "${pids[@]}" 2>/dev/null
    [[ -n "$interrupted" ]]
}

cleanup() {
    local status=$? ok=yes
    trap - EXIT
    trap '' INT TERM  # the clean-up is bounded: let it finish
    step "clean-up"
    if [[ -n "${matrix_pid:-}" ]] && kill -TERM "$matrix_pid" 2>/dev/null; then
        wait "$matrix_pid" 2>/dev/null || true  # it stops its jobs, bounded by their kill
    fi
    if [[ -n "${kube_pid:-}" ]] && kill -TERM "$kube_pid" 2>/dev/null; then
        wait "$kube_pid" 2>/dev/null || true  # it stops its components (bounded)
    fi
    if [[ -n "${ALPHASWARM_DOCKERD_ROOT:-}" ]]; then
        bash scripts/ci/stop-dockerd.sh "$ALPHASWARM_DOCKERD_ROOT" || ok=""
    fi
    stop_leftover_processes || ok=""
    rm -rf --one-file-system "$RUN_DIR" || ok=""
    [[ -e "$RUN_DIR" ]] && { echo "could not remove $RUN_DIR" >&2; ok=""; }
    if [[ -n "$ok" ]]; then
        echo "nothing left behind (engine, bridge, temp dirs, processes)"
    elif ((status == 0)); then
        status=1
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'interrupted=yes; exit 130' INT
trap 'interrupted=yes; exit 143' TERM

# -- the steps ---------------------------------------------------------------------------

# The run writes bytecode, whatever the environment says: uv installs packages without
# it, and with PYTHONDONTWRITEBYTECODE set (some machines and CI images set it) every one
# of the run's hundreds of Python processes (pytest workers, servers, CLI calls, the
# matrix's jobs) compiled every module it imported again: twice the CPU of an import
# from bytecode (the SDKs: 3.0 s against 1.3; a CLI call 0.88 s against 0.47, measured).
# Written on first import, where Python writes it: the venvs and the checkout's
# __pycache__ directories (ignored by git, the wheel and the image).
unset PYTHONDONTWRITEBYTECODE

venv="$(bash scripts/venv.sh dev,all-providers)"
export PATH="$PWD/$venv/bin:$PATH"

check_stubs() {
    step "generated stubs match protos/"
    python scripts/generate_protos.py --check
}

check_protos() {
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
}

check_lint() {
    step "ruff and mypy"
    ruff check .
    ruff format --check server client/alphaswarm_client tests benchmarks scripts
    # Its incremental cache outside the tree, beside uv's and the builds': a fresh
    # checkout is checked in seconds, not the 40 s of a cold run.
    MYPY_CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/alphaswarm/mypy" mypy
}

start_docker_engine() {
    step "docker engine"
    local exports
    exports="$(bash scripts/ci/start-dockerd.sh)"  # removes what it made if it fails
    eval "$exports"  # ALPHASWARM_DOCKERD_ROOT tells the clean-up what to stop
}

run_pytest() {
    step "pytest"
    local code=0
    # Workers: ALPHASWARM_TEST_WORKERS (default 4; 0 runs in this process). Most tests
    # wait on a backend, so 4 fit on 2 cores. A module, or a class of the contract
    # suite, stays on one worker with its fixtures. Workers share the Docker engine and
    # the control plane; each removes only what it made.
    python -m pytest -p no:cacheprovider --basetemp="$RUN_DIR/pytest" \
        -n "${ALPHASWARM_TEST_WORKERS:-4}" --dist loadscope --durations=25 "$@" || code=$?
    if ((code == 5)); then
        echo "pytest collected no tests: failing the run" >&2
        return 1
    fi
    return "$code"
}

build_kube_control_plane() {
    step "kubernetes control plane (first build 10-17 min on 2 cores, then reused from the cache)"
    ALPHASWARM_KUBE_BIN_DIR="$(bash scripts/kube/build.sh)"
    export ALPHASWARM_KUBE_BIN_DIR
    echo "$ALPHASWARM_KUBE_BIN_DIR"
}

# One control plane for the whole run, shared by pytest's workers and the matrix's jobs
# (tests/realkube/shared.py says why). It starts while the next steps run; the tests
# wait for it. Its log is printed at the end.
KUBE_DIR="$RUN_DIR/kube"
start_shared_control_plane() {
    step "the run's Kubernetes control plane (starts in the background)"
    mkdir -m 0700 "$KUBE_DIR"
    local pdeathsig=()  # it stops with this script, even one that is killed
    command -v setpriv >/dev/null && pdeathsig=(setpriv --pdeathsig TERM --)
    "${pdeathsig[@]}" python -m tests.realkube.shared "$KUBE_DIR" >"$KUBE_DIR.log" 2>&1 &
    kube_pid=$!
    export ALPHASWARM_TEST_KUBE_SHARED="$KUBE_DIR"
}

build_helm() {
    step "helm from its Go module, for the chart's tests (first build minutes, then reused)"
    ALPHASWARM_HELM="$(bash scripts/helm/build.sh)"
    export ALPHASWARM_HELM
    echo "$ALPHASWARM_HELM"
}

install_azurite() {
    step "Azurite (npm) for the ACI revision records' Blob Storage (first install about a minute)"
    ALPHASWARM_AZURITE="$(bash scripts/azurite/install.sh)"
    export ALPHASWARM_AZURITE  # the azure tests start and stop its blob service themselves
    echo "$ALPHASWARM_AZURITE"
}

install_shells() {
    step "zsh and fish for the shell-completion tests (Debian packages)"
    command -v zsh >/dev/null && command -v fish >/dev/null && return 0
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q zsh fish >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q zsh fish >/dev/null; }
}

# The matrix runs beside pytest: pytest's workers mostly wait on backends (a third of
# the two cores idle), the matrix's jobs fill that. Its log is printed once both ended.
MATRIX_LOG="$RUN_DIR/provider-matrix.log"
start_provider_matrix() {
    python scripts/ci/provider_matrix.py >"$MATRIX_LOG" 2>&1 &
    matrix_pid=$!
}

check_provider_matrix() {
    step "each provider extra alone in a clean venv, and at its lowest allowed versions"
    local code=0
    wait "$matrix_pid" || code=$?
    matrix_pid=""
    cat "$MATRIX_LOG"
    return "$code"
}

check_shared_control_plane() {
    step "the run's Kubernetes control plane"
    cat "$KUBE_DIR.log"
    kill -0 "$kube_pid" 2>/dev/null || { echo "it stopped before the tests ended" >&2; return 1; }
}

check_stubs
check_protos
check_lint
start_docker_engine
build_kube_control_plane
start_shared_control_plane
build_helm
install_azurite
install_shells
# Both run to their end, so that one run reports every failure.
failed=""
start_provider_matrix
run_pytest "$@" || failed=yes
check_provider_matrix || failed=yes
check_shared_control_plane || failed=yes
[[ -z "$failed" ]]
