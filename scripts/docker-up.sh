#!/usr/bin/env bash
# Starts a Docker engine for the tests, unless one already answers.
#
#   scripts/docker-up.sh                    start containerd (own process) + dockerd, wait ready
#   scripts/docker-up.sh --restart-dockerd  stop the dockerd this script started and start it
#                                           again against the same containerd (crash tests)
#
# containerd runs on its own because dockerd's embedded containerd did not come back after a
# dockerd restart on these machines. PIDs of what this script started go to
# /run/tsbridge-test/{containerd,dockerd}.pid; scripts/docker-down.sh stops only those.
# Logs: /var/log/tsbridge-test/{containerd,dockerd}.log.
set -euo pipefail

RUN_DIR=${TSBRIDGE_RUN_DIR:-/run/tsbridge-test}
LOG_DIR=/var/log/tsbridge-test
CTR_SOCK=/run/containerd/containerd.sock
READY_TIMEOUT=${TSBRIDGE_DOCKER_TIMEOUT:-60}
HERE=$(cd "$(dirname "$0")" && pwd)

die() { echo "docker-up: $*" >&2; exit 1; }
log() { echo "docker-up: $*"; }

[ "$(id -u)" = 0 ] || die "must run as root"

docker_ready() { timeout 10 docker info >/dev/null 2>&1; }
containerd_ready() { [ -S "$CTR_SOCK" ] && timeout 5 ctr --address "$CTR_SOCK" version >/dev/null 2>&1; }

# alive PID NAME: the process exists, is not a zombie and is still NAME (guards against PID reuse).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] || return 1
  # field 3 (after the "(comm)" field) is the state
  [ "$(echo "${stat##*) }" | cut -d' ' -f1)" != Z ]
}

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
  ( close_extra_fds; exec setsid containerd >>"$LOG_DIR/containerd.log" 2>&1 </dev/null ) &
  local pid=$!
  echo "$pid" >"$RUN_DIR/containerd.pid"
  wait_until 30 "$pid" containerd containerd_ready
  log "containerd started (pid $pid)"
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
  ( close_extra_fds; exec setsid dockerd --containerd="$CTR_SOCK" >>"$LOG_DIR/dockerd.log" 2>&1 </dev/null ) &
  local pid=$!
  echo "$pid" >"$RUN_DIR/dockerd.pid"
  wait_until "$READY_TIMEOUT" "$pid" dockerd docker_ready
  log "dockerd started (pid $pid), ready after $((SECONDS - t0))s"
}

mkdir -p "$RUN_DIR" "$LOG_DIR"

case "${1:-}" in
  --restart-dockerd)
    [ -f "$RUN_DIR/dockerd.pid" ] || die "dockerd was not started by docker-up.sh; refusing to restart a dockerd it does not own"
    "$HERE/docker-down.sh" --dockerd-only
    containerd_ready || die "containerd no longer answers on $CTR_SOCK; run docker-down.sh then docker-up.sh"
    start_dockerd
    ;;
  "")
    if docker_ready; then
      log "docker already running; nothing to do"
      exit 0
    fi
    # What the engine is about to change on the host, so docker-down.sh can put it back
    # (kept from the first start if our engine died and is being started again).
    ip link show docker0 >/dev/null 2>&1 || touch "$RUN_DIR/docker0.absent-before"
    [ -f "$RUN_DIR/ip_forward.before" ] || sysctl -n net.ipv4.ip_forward >"$RUN_DIR/ip_forward.before"
    start_containerd
    start_dockerd
    ;;
  *)
    die "usage: $0 [--restart-dockerd]"
    ;;
esac
