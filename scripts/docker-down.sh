#!/usr/bin/env bash
# Stops only what scripts/docker-up.sh started (PIDs in /run/tsbridge-test): SIGTERM, wait,
# then SIGKILL. A Docker engine this script did not start is left alone.
#
#   scripts/docker-down.sh                 stop our dockerd, then our containerd; put back
#                                          docker0 / ip_forward as docker-up.sh found them
#   scripts/docker-down.sh --dockerd-only  stop our dockerd only (used by --restart-dockerd)
set -euo pipefail

RUN_DIR=${TSBRIDGE_RUN_DIR:-/run/tsbridge-test}

log() { echo "docker-down: $*"; }

alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ] || return 1
  [ "$(echo "${stat##*) }" | cut -d' ' -f1)" != Z ]
}

# stop NAME GRACE_SECONDS
stop() {
  local name=$1 grace=$2 f="$RUN_DIR/$1.pid" pid deadline
  if [ ! -f "$f" ]; then
    log "$name was not started by docker-up.sh; leaving it alone"
    return 0
  fi
  pid=$(cat "$f")
  if alive "$pid" "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + grace))
    while alive "$pid" "$name" && ((SECONDS < deadline)); do sleep 0.2; done
    if alive "$pid" "$name"; then
      log "$name (pid $pid) ignored SIGTERM for ${grace}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      deadline=$((SECONDS + 10))
      while alive "$pid" "$name" && ((SECONDS < deadline)); do sleep 0.2; done
    fi
    alive "$pid" "$name" && { log "$name (pid $pid) would not die"; return 1; }
    log "$name (pid $pid) stopped"
  else
    log "$name (pid $pid) was not running"
  fi
  rm -f "$f"
  # A dockerd killed hard leaves its pid file; a stale one can block the next start.
  if [ "$name" = dockerd ] && [ -f /var/run/docker.pid ] && ! alive "$(cat /var/run/docker.pid)" dockerd; then
    rm -f /var/run/docker.pid
  fi
}

case "${1:-}" in
  --dockerd-only)
    stop dockerd 40
    ;;
  "")
    stop dockerd 40
    stop containerd 20
    if [ -f "$RUN_DIR/docker0.absent-before" ]; then
      ip link del docker0 2>/dev/null && log "removed docker0" || true
      rm -f "$RUN_DIR/docker0.absent-before"
    fi
    if [ -f "$RUN_DIR/ip_forward.before" ]; then
      sysctl -qw "net.ipv4.ip_forward=$(cat "$RUN_DIR/ip_forward.before")" || true
      rm -f "$RUN_DIR/ip_forward.before"
    fi
    ;;
  *)
    echo "usage: $0 [--dockerd-only]" >&2
    exit 2
    ;;
esac
