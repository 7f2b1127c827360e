#!/usr/bin/env bash
# Stop a Docker engine started by start-dockerd.sh and remove everything it made.
#
#     bash scripts/ci/stop-dockerd.sh "$ALPHASWARM_DOCKERD_ROOT"
#
# In order: every container and user-defined network through the engine's API (so the
# engine itself takes down their veths, br-* bridges and mounts), dockerd (SIGTERM, then
# SIGKILL), any containerd or shim still naming the temp dir, containers whose engine
# died (through runc), mounts left under it, the engine's bridge and the br-* bridge of
# every network it ever made, the temp dir. Then
# it checks: no process names the temp dir, the dir is gone, no bridge of the engine and
# no iptables rule naming one is left. Prints what it removed on stderr; exits 1 when
# something could not be removed. Safe to run twice, and on a half-started engine.
set -uo pipefail

log() { printf 'stop-dockerd: %s\n' "$*" >&2; }

ROOT="${1:?usage: stop-dockerd.sh ENGINE_ROOT (the ALPHASWARM_DOCKERD_ROOT to stop)}"
# Only what start-dockerd.sh makes: never a system engine's directory.
[[ "$ROOT" =~ ^/tmp/dkr\.[A-Za-z0-9]{6}$ ]] || { log "not an engine root of start-dockerd.sh: $ROOT"; exit 1; }
[[ -d "$ROOT" ]] || { log "$ROOT is gone already"; exit 0; }
SOCK="unix://$ROOT/d.sock"
WAIT_SECONDS="${ALPHASWARM_DOCKERD_STOP_WAIT:-30}"

# Processes whose command line names the temp dir: dockerd, its containerd, the shims.
# Read in bash: a grep of the path would name the temp dir itself.
engine_pids() {
    local pid args
    for pid in /proc/[0-9]*; do
        pid="${pid#/proc/}"
        mapfile -d '' args 2>/dev/null <"/proc/$pid/cmdline" || continue
        [[ " ${args[*]} " == *"$ROOT/"* ]] && echo "$pid"
    done
}

wait_gone() {  # wait_gone SECONDS PID...: true when every PID has exited in time
    local deadline=$((SECONDS + $1)) pid alive
    shift
    while :; do
        alive=""
        for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=yes; done
        [[ -z "$alive" ]] && return 0
        ((SECONDS >= deadline)) && return 1
        sleep 0.2
    done
}

# br-<first 12 hex digits of the network id> is the bridge of each user-defined network;
# the ids are in the engine's network store, so they are known even if it died.
network_bridges() {
    local store="$ROOT/data/network/files/local-kv.db" id
    [[ -f "$store" ]] || return 0
    grep -aoE '[0-9a-f]{64}' "$store" | sort -u | while read -r id; do
        ip link show "br-${id:0:12}" >/dev/null 2>&1 && echo "br-${id:0:12}"
    done
}

BRIDGE="$(cat "$ROOT/bridge" 2>/dev/null || true)"
bridges=("${BRIDGE:-}")
mapfile -t -O 1 bridges < <(network_bridges)

if DOCKER_HOST="$SOCK" timeout 10 docker version >/dev/null 2>&1; then
    containers="$(DOCKER_HOST="$SOCK" docker ps -aq)"
    if [[ -n "$containers" ]]; then
        # shellcheck disable=SC2086 # one id per word
        DOCKER_HOST="$SOCK" timeout 60 docker rm -f $containers >/dev/null 2>&1 \
            && log "removed $(wc -w <<<"$containers") container(s)"
    fi
    DOCKER_HOST="$SOCK" timeout 60 docker network prune -f >/dev/null 2>&1
fi

pids=($(engine_pids))
if ((${#pids[@]})); then
    dockerd_pid="$(cat "$ROOT/d.pid" 2>/dev/null || true)"
    if [[ -n "$dockerd_pid" ]] && [[ " ${pids[*]} " == *" $dockerd_pid "* ]]; then
        kill -TERM "$dockerd_pid" 2>/dev/null  # dockerd stops containerd and the shims itself
        wait_gone "$WAIT_SECONDS" "$dockerd_pid" || log "dockerd $dockerd_pid ignored SIGTERM"
    fi
    pids=($(engine_pids))
    if ((${#pids[@]})); then
        kill -TERM "${pids[@]}" 2>/dev/null
        wait_gone 10 "${pids[@]}" || kill -KILL "${pids[@]}" 2>/dev/null
        wait_gone 10 "${pids[@]}"
    fi
    log "stopped dockerd and containerd"
fi

# Containers of an engine that died: their processes outlive the shims. runc knows them
# from the engine's exec root, and removes their processes and cgroups.
runc_root="$ROOT/exec/runtime-runc/moby"
if [[ -d "$runc_root" ]] && command -v runc >/dev/null; then
    for id in $(runc --root "$runc_root" list -q 2>/dev/null); do
        runc --root "$runc_root" delete --force "$id" && log "removed orphaned container $id"
    done
fi

# Mounts dockerd did not undo (it was killed): deepest first.
mapfile -t mounts < <(awk -v root="$ROOT/" 'index($2, root) == 1 { print $2 }' /proc/self/mounts | sort -r)
for mount in "${mounts[@]}"; do umount -l "$mount" 2>/dev/null; done
((${#mounts[@]})) && log "unmounted ${#mounts[@]} mount(s) under $ROOT"

for bridge in "${bridges[@]}"; do
    [[ -n "$bridge" ]] && ip link show "$bridge" >/dev/null 2>&1 || continue
    ip link delete "$bridge" && log "removed bridge $bridge"
done
rm -rf --one-file-system "$ROOT" && log "removed $ROOT"

left=()
[[ -e "$ROOT" ]] && left+=("directory $ROOT")
for pid in $(engine_pids); do left+=("process $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"); done
for bridge in "${bridges[@]}"; do
    [[ -n "$bridge" ]] || continue
    ip link show "$bridge" >/dev/null 2>&1 && left+=("bridge $bridge")
    if command -v iptables-save >/dev/null; then
        while read -r rule; do left+=("iptables rule: $rule"); done \
            < <(iptables-save 2>/dev/null | grep -wF -- "$bridge")
    fi
done
if ((${#left[@]})); then
    log "could not remove:"
    printf '  %s\n' "${left[@]}" >&2
    exit 1
fi
