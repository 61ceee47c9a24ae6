#!/usr/bin/env bash
# The whole tsbridge test run, unattended (CI runs exactly this; needs root):
#   install deps + build → two lanes side by side:
#     - the namespace lane: unit, integration, then multihost (no root for unit; network
#       namespaces of their own for the others; none uses the Docker engine on
#       /var/run/docker.sock), its output printed when it ends;
#     - the engine lane: for each Docker engine: engine + test image → e2e;
# then puts the machine back (stops the Docker engines and removes the test images this run
# started/built; an engine of scripts/docker-up.sh that was running before is started again) and
# prints, as the very last line:
#   tsbridge: N passed, N failed[, N skipped]
# Extra arguments go to jest in every tier (e.g. -t 'pattern').
#
# The end-to-end tier runs once per engine, one after the other, as tiers e2e@20.10 and e2e@28:
#   TSBRIDGE_ENGINES="20.10 28"  (default) Debian 12's docker.io 20.10 and Docker 28.5 from sid,
#                                unpacked by scripts/engine.sh (see there and scripts/docker-up.sh)
#   TSBRIDGE_ENGINES=28          one engine only, for quick runs
#   TSBRIDGE_ENGINES=host        the Docker engine the host runs by itself (tier e2e@host)
# On a host with a Docker engine from other packages (Docker CE's docker-ce/containerd.io,
# moby-engine, ...), or running a dockerd these scripts did not start, Debian's docker.io is never
# installed over it: unset, TSBRIDGE_ENGINES is then "host" (the running engine is used; if it is
# not running, the run stops with a message saying so).
#   TSBRIDGE_TEST_LANES=1        runs the lanes one after the other (default 2: side by side)
# The e2e tiers build the managed plugin several times (README install + upgrade, the managed-plugin
# test, per engine): TSBRIDGE_PLUGIN_CACHE, set below, has the rootfs assembled once per run.
set -uo pipefail

cd "$(dirname "$(readlink -f "$0")")/.." || exit 1

if [ "$(id -u)" != 0 ]; then
  echo "tsbridge: the tests need root (network namespaces, links, firewall rules, dockerd); run: sudo bash scripts/test.sh" >&2
  echo "tsbridge: 0 passed, 1 failed"
  exit 1
fi
exec </dev/null

IMAGE=tsbridge-test:latest
RUN_DIR=${TSBRIDGE_RUN_DIR:-/run/tsbridge-test}
RESULTS=$(mktemp -d /tmp/tsbridge-results.XXXXXX)
TIERS=(unit integration)   # + e2e@ENGINE for each engine, and multihost, below
started_docker=0
declare -A tier_state   # tier -> "rc=N secs=S" or "notrun=reason"

step() { printf '\n=== tsbridge: %s ===\n' "$*"; }

# run_tier TIER [jest args...]: runs npm's test:<TIER without @engine>; results under TIER.
run_tier() {
  local tier=$1; shift
  local extra=()
  (($#)) && extra=(--passWithNoTests "$@")
  step "$tier tests"
  local t0=$SECONDS
  timeout --kill-after=30 "${TSBRIDGE_TIER_TIMEOUT:-1800}" \
    npm run --silent "test:${tier%%@*}" -- --json --outputFile="$RESULTS/$tier.json" "${extra[@]}"
  local rc=$?
  ((rc == 124 || rc == 137)) && echo "tsbridge: $tier tests timed out after ${TSBRIDGE_TIER_TIMEOUT:-1800}s" >&2
  tier_state[$tier]="rc=$rc secs=$((SECONDS - t0))"
  # (also on disk: a tier of the namespace lane runs in a subshell)
  echo "${tier_state[$tier]}" >"$RESULTS/$tier.state"
}

# docker_ready, alive, ours_running
. scripts/lib/engine-state.sh

not_run() {
  local reason=$1 tier; shift
  for tier in "$@"; do
    [ -n "${tier_state[$tier]:-}" ] || tier_state[$tier]="notrun=$reason"
    [ -f "$RESULTS/$tier.state" ] || echo "${tier_state[$tier]}" >"$RESULTS/$tier.state"
  done
}

# Reads the jest JSON of each tier; prints one line per tier, then the summary line last.
# A tier that did not run, crashed, found no tests or exited non-zero without a failed test
# counts as one failure, so it can never hide behind "0 failed".
summarize() {
  local args=() tier
  local st
  for tier in "${TIERS[@]}"; do
    st=${tier_state[$tier]:-$(cat "$RESULTS/$tier.state" 2>/dev/null)}
    args+=("$tier" "${st:-notrun=interrupted}")
  done
  node - "$RESULTS" "${args[@]}" <<'EOF'
const fs = require('node:fs');
const [dir, ...rest] = process.argv.slice(2);
let passed = 0, failed = 0, skipped = 0;
for (let i = 0; i < rest.length; i += 2) {
  // "notrun=REASON" (the reason may hold spaces) or "rc=N secs=S".
  const tier = rest[i], raw = rest[i + 1];
  const state = raw.startsWith('notrun=') ? { notrun: raw.slice(7) } : Object.fromEntries(raw.split(' ').map((kv) => kv.split('=')));
  if (state.notrun) { failed++; console.log(`tsbridge: ${tier}: not run (${state.notrun})`); continue; }
  let r;
  try { r = JSON.parse(fs.readFileSync(`${dir}/${tier}.json`, 'utf8')); } catch { r = undefined; }
  if (!r) { failed++; console.log(`tsbridge: ${tier}: no results (jest exit ${state.rc})`); continue; }
  const p = r.numPassedTests, f = r.numFailedTests + r.numRuntimeErrorTestSuites, s = r.numPendingTests + r.numTodoTests;
  passed += p; failed += f; skipped += s;
  let note = '';
  if (r.numTotalTests === 0 && r.numRuntimeErrorTestSuites === 0) { failed++; note = ' (no tests found: counted as 1 failure)'; }
  else if (state.rc !== '0' && f === 0) { failed++; note = ` (jest exit ${state.rc}: counted as 1 failure)`; }
  else if (r.numRuntimeErrorTestSuites) note = ` (${r.numRuntimeErrorTestSuites} suite(s) failed to run)`;
  console.log(`tsbridge: ${tier}: ${p} passed, ${f} failed, ${s} skipped in ${state.secs}s${note}`);
}
console.log(`tsbridge: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed ? 1 : 0);
EOF
}

# kill_tree PID: PID and everything it started (the namespace lane when the run is interrupted).
kill_tree() {
  local c
  for c in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$c"; done
  kill -TERM "$1" 2>/dev/null || true
}

finish() {
  trap - EXIT INT TERM
  if [ -n "${lane_pid:-}" ] && kill -0 "$lane_pid" 2>/dev/null; then
    echo "tsbridge: stopping the namespace lane" >&2
    kill_tree "$lane_pid"
    wait "$lane_pid" 2>/dev/null
    bash scripts/rig-down.sh >/dev/null 2>&1 || true
  fi
  remove_image
  if ((started_docker)); then
    step "stopping the Docker engine this run started"
    bash scripts/docker-down.sh || echo "tsbridge: docker-down.sh failed" >&2
    if [ -n "$engine_before" ]; then
      step "starting engine $engine_before again (it was running before this run)"
      TSBRIDGE_ENGINE=$engine_before bash scripts/docker-up.sh || echo "tsbridge: could not start engine $engine_before again" >&2
    fi
  fi
  echo
  summarize
  local rc=$?
  rm -rf "$RESULTS"
  exit "$rc"
}
trap finish EXIT
trap 'echo "tsbridge: interrupted" >&2; exit 130' INT TERM

# The test image of the engine running now, if this run built it (each engine has its own images).
built_image=0
remove_image() {
  if ((built_image)) && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    step "removing $IMAGE (this run built it)"
    docker rmi "$IMAGE" >/dev/null || echo "tsbridge: could not remove $IMAGE" >&2
  fi
  built_image=0
}

# Which engines: TSBRIDGE_ENGINES, else both pinned ones — unless the host has its own engine.
engine_before=
ours_running && engine_before=$(cat "$RUN_DIR/engine" 2>/dev/null || echo 20.10)
foreign=$(bash scripts/engine.sh foreign 2>/dev/null) || foreign=
if [ -z "$foreign" ] && [ -z "$engine_before" ] && docker_ready; then
  foreign="a dockerd these scripts did not start ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
fi
if [ -n "${TSBRIDGE_ENGINES:-}" ]; then
  read -ra ENGINES <<<"$TSBRIDGE_ENGINES"
elif [ -n "$foreign" ]; then
  echo "tsbridge: this host has its own Docker engine ($foreign): testing against it, never installing Debian's docker.io over it (TSBRIDGE_ENGINES=28 tests the unpacked Docker 28 instead, with the host's engine stopped)"
  ENGINES=(host)
else
  ENGINES=(20.10 28)
fi
for e in "${ENGINES[@]}"; do
  case "$e" in
    20.10|28|host) TIERS+=("e2e@$e") ;;
    *) echo "tsbridge: unknown engine '$e' in TSBRIDGE_ENGINES (20.10, 28 or host)" >&2; TIERS+=("e2e@$e") ;;
  esac
done
# The overlay across several Docker hosts: Docker 28 hosts in namespaces (test/lib/rig.ts), etcd on
# their underlay; independent of the engine on docker.sock.
TIERS+=(multihost)

step "dependencies and build"
if ! bash scripts/install-deps.sh; then
  not_run "install-deps.sh failed" "${TIERS[@]}"
  exit 1
fi

# The namespace lane: unit, integration, then the multi-host rig (Docker 28 hosts in namespaces,
# etcd on their underlay) — independent of the engine on docker.sock, so it runs beside the engine
# lane, which is the longer one (the unit tier used to run before both, on the critical path).
namespace_lane() {
  run_tier unit "$@"
  run_tier integration "$@"
  step "multi-host rig (Docker 28 hosts in namespaces, etcd)"
  bash scripts/rig-down.sh >/dev/null 2>&1 || true   # what a crashed run left
  if ((engine28_ready)); then
    run_tier multihost "$@"
    bash scripts/rig-down.sh || echo "tsbridge: scripts/rig-down.sh could not remove everything" >&2
  else
    not_run "Docker 28 could not be installed (scripts/engine.sh install 28)" multihost
  fi
}
# Engine 28's binaries, once, before either lane needs them.
engine28_ready=0
step "Docker 28 binaries (scripts/engine.sh install 28)"
bash scripts/engine.sh install 28 && engine28_ready=1
lane_pid=
if [ "${TSBRIDGE_TEST_LANES:-2}" = 1 ]; then
  namespace_lane "$@"
else
  step "unit, integration and multi-host tiers: running beside the e2e tiers (their output follows when they end)"
  ( trap - EXIT INT TERM; namespace_lane "$@" ) >"$RESULTS/namespace-lane.log" 2>&1 &
  lane_pid=$!
fi

# engine_up ENGINE: the engine answers on /var/run/docker.sock (started if need be).
engine_up() {
  case "$1" in
    host)
      if ! docker_ready; then
        echo "tsbridge: the host's Docker engine${foreign:+ ($foreign)} is not running: start it (e.g. systemctl start docker) and run the tests again" >&2
        return 1
      fi
      if ours_running; then
        echo "tsbridge: the engine running is one scripts/docker-up.sh started, not the host's own" >&2
        return 1
      fi
      echo "tsbridge: using the host's Docker engine $(docker version --format '{{.Server.Version}}')"
      ;;
    20.10|28)
      if ! ours_running || [ "$(cat "$RUN_DIR/engine" 2>/dev/null || echo 20.10)" != "$1" ]; then started_docker=1; fi
      TSBRIDGE_ENGINE=$1 bash scripts/docker-up.sh
      ;;
    *) return 1 ;;
  esac
}

# The managed plugin's rootfs is assembled once per run: plugin-build.sh keeps it under a hash of
# its inputs and later builds with the same inputs (the README's and the managed-plugin test's, on
# each engine) take it from there. Inside this run's own directory: it goes when the run ends.
export TSBRIDGE_PLUGIN_CACHE="$RESULTS/plugin-rootfs"
for e in "${ENGINES[@]}"; do
  tier="e2e@$e"
  step "Docker engine $e"
  remove_image
  if ! engine_up "$e"; then
    not_run "engine $e did not start; see the messages above and /var/log/tsbridge-test/" "$tier"
    continue
  fi
  step "test image ($e)"
  docker image inspect "$IMAGE" >/dev/null 2>&1 || built_image=1
  if ! bash scripts/test-image.sh; then
    not_run "test-image.sh failed" "$tier"
    continue
  fi
  # The tests see the engine's own binaries first (client, docker-compose) and which engine runs.
  prefix=
  case "$e" in 20.10|28) prefix=$(bash scripts/engine.sh path "$e") ;; esac
  PATH="${prefix:+$prefix:}$PATH" TSBRIDGE_ENGINE=$e run_tier "$tier" "$@"
done

if [ -n "$lane_pid" ]; then
  step "waiting for the namespace lane (unit, integration, multihost)"
  wait "$lane_pid"
  lane_pid=
  cat "$RESULTS/namespace-lane.log"
fi
