#!/usr/bin/env bash
# Tears down multi-host test rigs (test/lib/rig.ts) from what they recorded, never by name:
#
#   scripts/rig-down.sh            every rig under /run/tsbridge-rig/ (leftovers of a run that died)
#   scripts/rig-down.sh DIR...     these rigs only (the rig's own teardown calls this)
#
# A rig records each thing it makes in DIR/manifest as it makes it, one per line:
#   pid PID STARTTIME WHAT    a process (its start time guards against a reused PID)
#   netns NAME                a network namespace
#   link NAME                 a link in the machine's own namespace
#   cgroup PATH               the cgroup parent of a host's containers (/tsbridge-rig-ID-hN)
# This script SIGKILLs the processes that are still those processes (a host's `unshare` takes
# its whole PID namespace with it: containerd, dockerd, shims, containers, its plugin), waits for
# them, deletes the namespaces and links, removes the empty cgroups the killed containers left,
# then DIR. Run it under /run/tsbridge-e2e.lock, or when no rig test runs.
set -uo pipefail

ROOT=${TSBRIDGE_RIG_ROOT:-/run/tsbridge-rig}

log() { echo "rig-down: $*"; }

[ "$(id -u)" = 0 ] || { echo "rig-down: must run as root" >&2; exit 1; }

# field N (3 = state, 22 = start time) of /proc/PID/stat, counted as in proc(5)
stat_field() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  echo "${stat##*) }" | cut -d' ' -f$(($2 - 2))
}

# same PID STARTTIME [WHAT]: that PID is still the process recorded.
same() { [ "$(stat_field "$1" 22)" = "$2" ]; }

gone() { ! same "$@" || [ "$(stat_field "$1" 3)" = Z ]; }

down() {
  local dir=$1 m=$1/manifest rc=0
  [ -f "$m" ] || { log "$dir has no manifest; removing it"; rm -rf "$dir"; return 0; }
  local -a pids=() netns=() links=() cgroups=()
  local kind a b c
  while read -r kind a b c; do
    case "$kind" in
      pid) pids+=("$a $b $c") ;;
      netns) netns+=("$a") ;;
      link) links+=("$a") ;;
      cgroup) cgroups+=("$a") ;;
    esac
  done <"$m"

  # PID 1 of each host's PID namespace first (everything in the namespace dies with it, and its
  # parent, unshare, reaps it), then whatever is left.
  local p n=0 deadline
  for p in "${pids[@]}"; do
    [[ $p == *" init" ]] || continue
    # shellcheck disable=SC2086
    if same $p; then kill -KILL "${p%% *}" 2>/dev/null && n=$((n + 1)); fi
  done
  deadline=$((SECONDS + 10))
  for p in "${pids[@]}"; do
    [[ $p == *" init" ]] || continue
    # shellcheck disable=SC2086
    while ! gone $p && ((SECONDS < deadline)); do sleep 0.1; done
  done
  for p in "${pids[@]}"; do
    [[ $p == *" init" ]] && continue
    # shellcheck disable=SC2086
    if same $p; then kill -KILL "${p%% *}" 2>/dev/null && n=$((n + 1)); fi
  done
  deadline=$((SECONDS + 20))
  for p in "${pids[@]}"; do
    # shellcheck disable=SC2086
    while ! gone $p && ((SECONDS < deadline)); do sleep 0.1; done
    # shellcheck disable=SC2086
    gone $p || { log "process ${p%% *} (${p##* }) would not die"; rc=1; }
  done
  ((n)) && log "killed $n process(es) of $(basename "$dir")"

  local ns
  for ns in "${netns[@]}"; do
    [ -e "/run/netns/$ns" ] || continue
    ip netns del "$ns" || { log "could not delete netns $ns"; rc=1; }
  done
  local l
  for l in "${links[@]}"; do
    ip link show dev "$l" >/dev/null 2>&1 || continue
    # (a veth whose peer's namespace was just deleted may be going away on its own)
    ip link del dev "$l" 2>/dev/null || ! ip link show dev "$l" >/dev/null 2>&1 || { log "could not delete link $l"; rc=1; }
  done
  local cg h d
  for cg in "${cgroups[@]}"; do
    for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
      d=${h%/}$cg
      [ -d "$d" ] || continue
      # Deepest first; a cgroup whose last process was just killed may take a moment to empty.
      deadline=$((SECONDS + 10))
      while [ -d "$d" ] && ((SECONDS < deadline)); do
        find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
        [ -d "$d" ] && sleep 0.2
      done
      [ -d "$d" ] && { log "could not remove cgroup $d"; rc=1; }
    done
  done
  if ((rc == 0)); then
    rm -rf "$dir"
  else
    log "left $dir for another try"
  fi
  return "$rc"
}

dirs=("$@")
if ((${#dirs[@]} == 0)); then
  shopt -s nullglob
  dirs=("$ROOT"/*/)
fi
status=0
for d in "${dirs[@]}"; do
  down "${d%/}" || status=1
done
rmdir "$ROOT" 2>/dev/null || true
exit "$status"
