#!/usr/bin/env bash
# Stops only what scripts/docker-up.sh started (PIDs in /run/tsbridge-test): SIGTERM, wait,
# then SIGKILL. A Docker engine this script did not start is left alone.
#
#   scripts/docker-down.sh                 stop our dockerd, then our containerd; remove the
#                                          iptables chains the engine leaves behind; put back
#                                          docker0, IPv4/IPv6 forwarding and the FORWARD
#                                          policies as docker-up.sh found them before its first start
#   scripts/docker-down.sh --dockerd-only  stop our dockerd only (used by --restart-dockerd)
#   scripts/docker-down.sh --stale-chains  with no dockerd running at all, remove the iptables
#                                          chains an engine stopped earlier (of any version, by
#                                          anyone) left behind; docker-up.sh calls it before starting
set -euo pipefail

RUN_DIR=${TSBRIDGE_RUN_DIR:-/run/tsbridge-test}

log() { echo "docker-down: $*"; }

# alive (and docker_ready, ours_running)
. "$(cd "$(dirname "$0")" && pwd)/lib/engine-state.sh"

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

# Removes the iptables chains Docker made (DOCKER, DOCKER-USER, DOCKER-FORWARD, ...), the jumps
# to them and the rules for docker0 in the built-in chains, in every table, IPv4 and IPv6: an engine leaves them behind
# when it stops, and the next engine (another version) would find the other one's layout. One
# iptables-restore per table, so a chain still referenced elsewhere leaves that table untouched.
remove_docker_chains() {
  local bin save table script err
  for bin in iptables ip6tables; do
    command -v "$bin-save" >/dev/null || continue
    save=$("$bin-save" 2>/dev/null) || continue
    for table in $(awk '/^\*/ { print substr($0, 2) }' <<<"$save"); do
      script=$(awk -v t="$table" '
        /^\*/ { cur = substr($0, 2); next }
        cur != t { next }
        /^:DOCKER/ { chains[++n] = substr($1, 2); next }
        /^-A (INPUT|FORWARD|OUTPUT|PREROUTING|POSTROUTING) / && (/ -j DOCKER/ || / -[io] docker0( |$)/) { sub(/^-A /, "-D "); dels[++m] = $0 }
        END {
          if (!n && !m) exit
          print "*" t
          for (i = 1; i <= m; i++) print dels[i]
          for (i = 1; i <= n; i++) print "-F " chains[i]
          for (i = 1; i <= n; i++) print "-X " chains[i]
          print "COMMIT"
        }' <<<"$save")
      [ -n "$script" ] || continue
      if err=$("$bin-restore" --noflush <<<"$script" 2>&1); then
        log "removed Docker's $bin chains from the $table table"
      else
        log "left Docker's $bin chains in the $table table (still referenced?): $err"
      fi
    done
  done
}

restore_firewall() {
  local f="$RUN_DIR/firewall.before" bin policy
  [ -f "$f" ] || return 0
  for bin in iptables ip6tables; do
    policy=$(sed -n "s/^$bin-forward-policy=//p" "$f")
    [ -n "$policy" ] && command -v "$bin" >/dev/null && "$bin" -P FORWARD "$policy" 2>/dev/null || true
  done
  rm -f "$f"
}

case "${1:-}" in
  --stale-chains)
    # Docker 20.10 leaves a Docker 28's DOCKER-FORWARD jump in FORWARD where it found it.
    if pgrep -x dockerd >/dev/null; then
      log "a dockerd is running: its chains are not stale; leaving them"
    else
      remove_docker_chains
    fi
    ;;
  --dockerd-only)
    stop dockerd 40
    ;;
  "")
    ours=0
    [ -f "$RUN_DIR/dockerd.pid" ] && ours=1
    stop dockerd 40
    stop containerd 20
    # The next engine (maybe another version) starts from a firewall without this one's chains.
    ((ours)) && remove_docker_chains
    if [ -f "$RUN_DIR/docker0.absent-before" ]; then
      ip link del docker0 2>/dev/null && log "removed docker0" || true
      rm -f "$RUN_DIR/docker0.absent-before"
    fi
    if [ -f "$RUN_DIR/ip_forward.before" ]; then
      sysctl -qw "net.ipv4.ip_forward=$(cat "$RUN_DIR/ip_forward.before")" || true
      rm -f "$RUN_DIR/ip_forward.before"
    fi
    if [ -f "$RUN_DIR/ipv6_forward.before" ]; then
      sysctl -qw "net.ipv6.conf.all.forwarding=$(cat "$RUN_DIR/ipv6_forward.before")" || true
      rm -f "$RUN_DIR/ipv6_forward.before"
    fi
    restore_firewall
    rm -f "$RUN_DIR/engine"
    ;;
  *)
    echo "usage: $0 [--dockerd-only|--stale-chains]" >&2
    exit 2
    ;;
esac
