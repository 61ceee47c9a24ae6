#!/usr/bin/env bash
# The whole tsbridge test run, unattended (CI runs exactly this; needs root):
#   install deps + build → unit → integration → Docker engine + test image → e2e,
# then puts the machine back (stops the Docker engine and removes the test image if this run
# started/built them) and prints, as the very last line:
#   tsbridge: N passed, N failed[, N skipped]
# Extra arguments go to jest in every tier (e.g. -t 'pattern').
set -uo pipefail

cd "$(dirname "$(readlink -f "$0")")/.." || exit 1

if [ "$(id -u)" != 0 ]; then
  echo "tsbridge: the tests need root (network namespaces, links, firewall rules, dockerd); run: sudo bash scripts/test.sh" >&2
  echo "tsbridge: 0 passed, 1 failed"
  exit 1
fi
exec </dev/null

IMAGE=tsbridge-test:latest
TIERS=(unit integration e2e)
RESULTS=$(mktemp -d /tmp/tsbridge-results.XXXXXX)
started_docker=0
built_image=0
declare -A tier_state   # tier -> "rc=N secs=S" or "notrun=reason"

step() { printf '\n=== tsbridge: %s ===\n' "$*"; }

run_tier() {
  local tier=$1; shift
  local extra=()
  (($#)) && extra=(--passWithNoTests "$@")
  step "$tier tests"
  local t0=$SECONDS
  timeout --kill-after=30 "${TSBRIDGE_TIER_TIMEOUT:-1800}" \
    npm run --silent "test:$tier" -- --json --outputFile="$RESULTS/$tier.json" "${extra[@]}"
  local rc=$?
  ((rc == 124 || rc == 137)) && echo "tsbridge: $tier tests timed out after ${TSBRIDGE_TIER_TIMEOUT:-1800}s" >&2
  tier_state[$tier]="rc=$rc secs=$((SECONDS - t0))"
}

not_run() {
  local reason=$1 tier; shift
  for tier in "$@"; do [ -n "${tier_state[$tier]:-}" ] || tier_state[$tier]="notrun=$reason"; done
}

# Reads the jest JSON of each tier; prints one line per tier, then the summary line last.
# A tier that did not run, crashed, found no tests or exited non-zero without a failed test
# counts as one failure, so it can never hide behind "0 failed".
summarize() {
  local args=() tier
  for tier in "${TIERS[@]}"; do args+=("$tier" "${tier_state[$tier]:-notrun=interrupted}"); done
  node - "$RESULTS" "${args[@]}" <<'EOF'
const fs = require('node:fs');
const [dir, ...rest] = process.argv.slice(2);
let passed = 0, failed = 0, skipped = 0;
for (let i = 0; i < rest.length; i += 2) {
  const tier = rest[i], state = Object.fromEntries(rest[i + 1].split(' ').map((kv) => kv.split('=')));
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

finish() {
  trap - EXIT INT TERM
  if ((built_image)) && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    step "removing $IMAGE (this run built it)"
    docker rmi "$IMAGE" >/dev/null || echo "tsbridge: could not remove $IMAGE" >&2
  fi
  if ((started_docker)); then
    step "stopping the Docker engine this run started"
    bash scripts/docker-down.sh || echo "tsbridge: docker-down.sh failed" >&2
  fi
  echo
  summarize
  local rc=$?
  rm -rf "$RESULTS"
  exit "$rc"
}
trap finish EXIT
trap 'echo "tsbridge: interrupted" >&2; exit 130' INT TERM

step "dependencies and build"
if ! bash scripts/install-deps.sh; then
  not_run "install-deps.sh failed" "${TIERS[@]}"
  exit 1
fi

run_tier unit "$@"
run_tier integration "$@"

step "Docker engine"
if docker info >/dev/null 2>&1; then
  echo "tsbridge: using the Docker engine already running"
else
  started_docker=1
  bash scripts/docker-up.sh || { not_run "docker-up.sh failed; see /var/log/tsbridge-test/" e2e; exit 1; }
fi

step "test image"
docker image inspect "$IMAGE" >/dev/null 2>&1 || built_image=1
bash scripts/test-image.sh || { not_run "test-image.sh failed" e2e; exit 1; }

run_tier e2e "$@"
