#!/usr/bin/env bash
# Starts a Docker engine for the tests, unless the requested one already answers.
#
#   scripts/docker-up.sh                    start containerd (own process) + dockerd, wait ready
#   scripts/docker-up.sh --restart-dockerd  stop the dockerd this script started and start it
#                                           again against the same containerd (crash tests)
#
# Which engine (see scripts/engine.sh):
#   TSBRIDGE_ENGINE=20.10  Debian 12's docker.io 20.10 and containerd 1.6 (system packages; the
#                          default): containerd on /run/containerd/containerd.sock, data in
#                          /var/lib/containerd and /var/lib/docker, as the packages set them up.
#   TSBRIDGE_ENGINE=28     Docker 28.5 + containerd 2.1 unpacked in $TSBRIDGE_ENGINES_DIR/28
#                          (scripts/engine.sh install 28 fetches it), its binaries first on PATH,
#                          with directories of its own so the two engines' images, containers and
#                          networks never mix: containerd --address/--state under
#                          /run/tsbridge-engine-28, --root and dockerd's --data-root under
#                          /var/lib/tsbridge-engine-28.
# Unset, it is the engine docker-up.sh started last (recorded in /run/tsbridge-test/engine), else 20.10.
#
# Only one engine owns /var/run/docker.sock at a time: asked for another engine than the one it
# started, this script stops that one first (scripts/docker-down.sh). A Docker engine it did not
# start is never stopped: when one answers, it is used as it is (TSBRIDGE_ENGINE unset) or this
# script refuses (TSBRIDGE_ENGINE set).
#
# containerd runs on its own because dockerd's embedded containerd did not come back after a
# dockerd restart on these machines. PIDs of what this script started go to
# /run/tsbridge-test/{containerd,dockerd}.pid; scripts/docker-down.sh stops only those.
# Logs: /var/log/tsbridge-test/{containerd,dockerd}.log.
set -euo pipefail

RUN_DIR=${TSBRIDGE_RUN_DIR:-/run/tsbridge-test}
LOG_DIR=/var/log/tsbridge-test
READY_TIMEOUT=${TSBRIDGE_DOCKER_TIMEOUT:-60}
HERE=$(cd "$(dirname "$0")" && pwd)
# docker_ready, alive, ours_running
. "$HERE/lib/engine-state.sh"

die() { echo "docker-up: $*" >&2; exit 1; }
log() { echo "docker-up: $*"; }

[ "$(id -u)" = 0 ] || die "must run as root"
mkdir -p "$RUN_DIR" "$LOG_DIR"

# engine_setup ENGINE: PATH and the directories of that engine.
engine_setup() {
  CTR_ARGS=()
  DOCKERD_ARGS=()
  case "$1" in
    20.10)
      bash "$HERE/engine.sh" install 20.10
      CTR_SOCK=/run/containerd/containerd.sock
      ;;
    28)
      bash "$HERE/engine.sh" install 28
      PATH="$(bash "$HERE/engine.sh" path 28):$PATH"
      local run=/run/tsbridge-engine-28 lib=/var/lib/tsbridge-engine-28
      mkdir -p "$run/containerd" "$lib/containerd" "$lib/docker"
      CTR_SOCK=$run/containerd/containerd.sock
      # Like Docker CE's containerd: no CRI (dockerd does not use it).
      printf 'version = 3\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n' >"$run/containerd.toml"
      CTR_ARGS=(--config "$run/containerd.toml" --address "$CTR_SOCK" --root "$lib/containerd" --state "$run/containerd")
      DOCKERD_ARGS=(--data-root "$lib/docker")
      ;;
    *) die "unknown engine '$1' (TSBRIDGE_ENGINE: 20.10 or 28)" ;;
  esac
  export PATH
}

server_version() { timeout 10 docker version --format '{{.Server.Version}}' 2>/dev/null; }
containerd_ready() { [ -S "$CTR_SOCK" ] && timeout 5 ctr --address "$CTR_SOCK" version >/dev/null 2>&1; }

# wait_until SECONDS PID NAME CHECK...: poll CHECK until it succeeds; fail early if PID died.
wait_until() {
  local secs=$1 pid=$2 name=$3; shift 3
  local deadline=$((SECONDS + secs))
  until "$@"; do
    # Until the child has exec'd, its name is still bash or setsid: that is starting, not gone.
    alive "$pid" "$name" || alive "$pid" bash || alive "$pid" setsid || { tail -n 30 "$LOG_DIR/$name.log" >&2; die "$name (pid $pid) exited during start-up; log: $LOG_DIR/$name.log"; }
    ((SECONDS < deadline)) || { tail -n 30 "$LOG_DIR/$name.log" >&2; die "$name not ready after ${secs}s; log: $LOG_DIR/$name.log"; }
    sleep 0.5
  done
}

start_containerd() {
  if containerd_ready; then
    log "containerd already answers on $CTR_SOCK; using it"
    return
  fi
  command -v containerd >/dev/null || die "containerd not installed (run scripts/install-deps.sh)"
  # Not a job-control shell, so the child is no group leader and setsid execs in place: $! is containerd.
  ( close_extra_fds; exec setsid containerd "${CTR_ARGS[@]}" >>"$LOG_DIR/containerd.log" 2>&1 </dev/null ) &
  local pid=$!
  echo "$pid" >"$RUN_DIR/containerd.pid"
  wait_until 30 "$pid" containerd containerd_ready
  log "containerd $(containerd --version | awk '{ print $3 }') started (pid $pid)"
}

# Daemons must not inherit our descriptors beyond 0-2: a lock held by whoever ran this script
# (flock) would otherwise stay held for as long as dockerd runs.
close_extra_fds() {
  local fd
  for fd in /proc/$BASHPID/fd/*; do
    fd=${fd##*/}
    [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-"
  done
  return 0
}

start_dockerd() {
  command -v dockerd >/dev/null || die "dockerd not installed (run scripts/install-deps.sh)"
  local t0=$SECONDS
  # A dockerd that crashed (SIGKILL) leaves its pid file, and the next one refuses to start.
  local old
  old=$(cat /var/run/docker.pid 2>/dev/null || true)
  # (A killed daemon may linger as a zombie here, so look at its state, not just kill -0.)
  if [ -n "$old" ]; then
    local state
    state=$(awk '{print $3}' "/proc/$old/stat" 2>/dev/null || true)
    if [ -z "$state" ] || [ "$state" = Z ] || [ "$state" = X ]; then rm -f /var/run/docker.pid; fi
  fi
  ( close_extra_fds; exec setsid dockerd --containerd="$CTR_SOCK" "${DOCKERD_ARGS[@]}" >>"$LOG_DIR/dockerd.log" 2>&1 </dev/null ) &
  local pid=$!
  echo "$pid" >"$RUN_DIR/dockerd.pid"
  wait_until "$READY_TIMEOUT" "$pid" dockerd docker_ready
  log "dockerd $(server_version) started (pid $pid), ready after $((SECONDS - t0))s"
}

# What the engine is about to change on the host, so docker-down.sh can put it back (kept from
# the first start if our engine died and is being started again).
record_host() {
  ip link show docker0 >/dev/null 2>&1 || touch "$RUN_DIR/docker0.absent-before"
  [ -f "$RUN_DIR/ip_forward.before" ] || sysctl -n net.ipv4.ip_forward >"$RUN_DIR/ip_forward.before"
  [ -f "$RUN_DIR/ipv6_forward.before" ] || sysctl -n net.ipv6.conf.all.forwarding >"$RUN_DIR/ipv6_forward.before" 2>/dev/null || true
  if [ ! -f "$RUN_DIR/firewall.before" ]; then
    # The FORWARD policies before any engine of ours ran (Docker sets DROP).
    local bin policy
    for bin in iptables ip6tables; do
      policy=$($bin -S FORWARD 2>/dev/null | awk '$1 == "-P" { print $3 }')
      echo "$bin-forward-policy=${policy:-ACCEPT}"
    done >"$RUN_DIR/firewall.before"
  fi
}

RECORDED=$(cat "$RUN_DIR/engine" 2>/dev/null || true)
# Started before engines were recorded: that was always 20.10.
[ -n "$RECORDED" ] || ! ours_running || RECORDED=20.10
ENGINE=${TSBRIDGE_ENGINE:-${RECORDED:-20.10}}

case "${1:-}" in
  --restart-dockerd)
    [ -f "$RUN_DIR/dockerd.pid" ] || die "dockerd was not started by docker-up.sh; refusing to restart a dockerd it does not own"
    [ -z "${TSBRIDGE_ENGINE:-}" ] || [ -z "$RECORDED" ] || [ "$TSBRIDGE_ENGINE" = "$RECORDED" ] \
      || die "the running engine is $RECORDED, not TSBRIDGE_ENGINE=$TSBRIDGE_ENGINE"
    engine_setup "$ENGINE"
    "$HERE/docker-down.sh" --dockerd-only
    containerd_ready || die "containerd no longer answers on $CTR_SOCK; run docker-down.sh then docker-up.sh"
    start_dockerd
    ;;
  "")
    if ours_running && [ -n "$RECORDED" ] && [ "$RECORDED" != "$ENGINE" ]; then
      log "stopping engine $RECORDED (started by docker-up.sh) to start engine $ENGINE: only one engine owns /var/run/docker.sock"
      "$HERE/docker-down.sh"
      RECORDED=
    fi
    if docker_ready; then
      if ours_running; then
        log "engine $ENGINE ($(server_version)) already running; nothing to do"
        exit 0
      fi
      [ -z "${TSBRIDGE_ENGINE:-}" ] \
        || die "a Docker engine this script did not start ($(server_version)) owns /var/run/docker.sock; stop it to start engine $ENGINE (this script never stops an engine it did not start)"
      log "a Docker engine this script did not start ($(server_version)) is running; using it"
      exit 0
    fi
    engine_setup "$ENGINE"
    # Chains a stopped engine left (another version's layout) would confuse this one.
    "$HERE/docker-down.sh" --stale-chains
    echo "$ENGINE" >"$RUN_DIR/engine"
    record_host
    start_containerd
    start_dockerd
    ;;
  *)
    die "usage: $0 [--restart-dockerd]"
    ;;
esac
