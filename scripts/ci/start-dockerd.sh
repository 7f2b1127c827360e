#!/usr/bin/env bash
# Start a private Docker engine for the docker_compose provider's tests and benchmark.
#
# Prints shell to eval, so the caller gets DOCKER_HOST pointing at the engine:
#
#     eval "$(bash scripts/ci/start-dockerd.sh)"
#
# Installs what is missing from Debian's packages (docker.io for dockerd and the
# docker CLI, busybox-static which the offline test images copy, iptables and
# iproute2 for the bridge). Reuses an engine that already answers on DOCKER_HOST;
# otherwise starts dockerd with its own data root, exec root, pid file, bridge and
# unix socket under a short temp dir (unix socket paths must stay under 108 bytes),
# so it never touches a system engine. Diagnostics go to stderr, only the exports to
# stdout. Exits non-zero when the engine does not answer in time: CI must fail then.
#
# Besides DOCKER_HOST it exports ALPHASWARM_DOCKERD_ROOT (the temp dir; the pid is in
# $ALPHASWARM_DOCKERD_ROOT/d.pid and the log in dockerd.log) when it started one. Stop
# that engine and remove everything it made with
#
#     bash scripts/ci/stop-dockerd.sh "$ALPHASWARM_DOCKERD_ROOT"
#
# The engine runs with --iptables=false: it adds no iptables chain or rule to the
# machine, so nothing is left there. The tests need none: they publish ports only to
# 127.0.0.1 (served by Docker's userland proxy over the bridge), build offline and
# never route between containers or off the machine. If this script fails or is
# interrupted it removes what it had made so far.
set -euo pipefail

log() { printf 'start-dockerd: %s\n' "$*" >&2; }

WAIT_SECONDS="${ALPHASWARM_DOCKERD_WAIT:-60}"

engine_answers() {
    DOCKER_HOST="$1" timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

static_busybox() {
    [[ -x /bin/busybox ]] && [[ "$(ldd /bin/busybox 2>&1 || true)" == *"not a dynamic executable"* ]]
}

packages=()
command -v dockerd >/dev/null && command -v docker >/dev/null || packages+=(docker.io)
static_busybox || packages+=(busybox-static)
command -v iptables >/dev/null || packages+=(iptables)
command -v ip >/dev/null || packages+=(iproute2)
if ((${#packages[@]})); then
    if [[ "$(id -u)" != 0 ]]; then
        log "missing ${packages[*]} and not root: apt-get install ${packages[*]}"
        exit 1
    fi
    log "installing ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
fi

if [[ -n "${DOCKER_HOST:-}" ]] && engine_answers "$DOCKER_HOST"; then
    log "reusing the engine at $DOCKER_HOST"
    printf 'export DOCKER_HOST=%q\n' "$DOCKER_HOST"
    exit 0
fi

if [[ "$(id -u)" != 0 ]]; then
    log "dockerd needs root (network namespaces, cgroups, mounts)"
    exit 1
fi

ROOT="$(mktemp -d /tmp/dkr.XXXXXX)"
SOCK="$ROOT/d.sock"
here="$(cd "$(dirname "$0")" && pwd)"
started=""
# Whatever ends this script before the engine answers (an error, Ctrl-C, SIGTERM)
# removes what it made: the bridge, dockerd and containerd, the temp dir.
trap '[[ -n "$started" ]] || bash "$here/stop-dockerd.sh" "$ROOT" >&2' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$ROOT/data" "$ROOT/exec"

# A bridge and subnet of its own, so this engine never fights another one on the
# machine (a system engine, or a developer's left running) over docker0. The lock
# keeps two engines starting at once from picking the same /24.
BRIDGE="as$(basename "$ROOT" | tr -dc 'a-zA-Z0-9' | tail -c 8)"
echo "$BRIDGE" >"$ROOT/bridge"  # for stop-dockerd.sh
SUBNET=""
exec {lock}>/run/lock/alphaswarm-dockerd-subnets.lock
flock -w 60 "$lock"
# Read once, then matched in bash: `ip ... | grep -q` under pipefail reports a taken /24
# as free whenever grep's early exit kills ip with SIGPIPE. The search starts at a
# random /24 so that engines started without this lock rarely pick the same one.
addresses="$(ip -4 -o addr show)"
offset=$((RANDOM % 241))
for i in $(seq 0 240); do
    third=$((10 + (offset + i) % 241))
    if [[ "$addresses" != *" 172.29.$third."* ]]; then
        SUBNET="172.29.$third"
        break
    fi
done
[[ -n "$SUBNET" ]] || { log "no free /24 left in 172.29.0.0/16"; exit 1; }
ip link add name "$BRIDGE" type bridge
ip addr add "$SUBNET.1/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
# User-defined networks (each Compose project's <project>_default) get /24s from a /16
# of their own: one no route uses yet and no other engine of this script has claimed
# (their claims are in /tmp/dkr.*/pool), picked under the same lock.
routes="$(ip -4 route show)"
claimed="$(cat /tmp/dkr.*/pool 2>/dev/null || true)"
POOL=""
offset=$((RANDOM % 50))
for i in $(seq 0 49); do
    second=$((200 + (offset + i) % 50))
    if [[ "$routes" != *"10.$second."* ]] && ! grep -qx "$second" <<<"$claimed"; then
        POOL="$second"
        break
    fi
done
[[ -n "$POOL" ]] || { log "no free /16 left in 10.200.0.0-10.249.255.255"; exit 1; }
echo "$POOL" >"$ROOT/pool"
flock -u "$lock"
exec {lock}>&-

log "starting dockerd under $ROOT (bridge $BRIDGE on $SUBNET.0/24, networks in 10.$POOL.0.0/16)"
setsid dockerd \
    --data-root "$ROOT/data" \
    --exec-root "$ROOT/exec" \
    --pidfile "$ROOT/d.pid" \
    -H "unix://$SOCK" \
    --bridge "$BRIDGE" \
    --iptables=false \
    --ip-masq=false \
    --default-address-pool "base=10.$POOL.0.0/16,size=24" \
    >"$ROOT/dockerd.log" 2>&1 </dev/null &
dockerd_pid=$!

deadline=$((SECONDS + WAIT_SECONDS))
until engine_answers "unix://$SOCK"; do
    if ((SECONDS >= deadline)) || ! kill -0 "$dockerd_pid" 2>/dev/null; then
        log "dockerd did not answer within ${WAIT_SECONDS}s (or exited); its log follows"
        tail -n 40 "$ROOT/dockerd.log" >&2 || true
        exit 1
    fi
    sleep 0.5
done

log "engine ready: $(DOCKER_HOST="unix://$SOCK" docker version --format \
    'server {{.Server.Version}}, API {{.Server.APIVersion}}')"
started=yes
printf 'export DOCKER_HOST=%q\n' "unix://$SOCK"
printf 'export ALPHASWARM_DOCKERD_ROOT=%q\n' "$ROOT"
