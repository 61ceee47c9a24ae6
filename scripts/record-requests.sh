#!/usr/bin/env bash
# Re-records the requests a Docker engine sends to a network + IPAM plugin, into the fixtures the
# unit tier replays (test/unit/server.test.ts, test/unit/protocol.test.ts):
#
#   flock -o /run/tsbridge-e2e.lock bash scripts/record-requests.sh 28      → test/fixtures/docker/28.5-requests.jsonl
#   flock -o /run/tsbridge-e2e.lock bash scripts/record-requests.sh 20.10   → /tmp/tsbridge-20.10-requests.jsonl
#                                                                             (the 20.10 fixture was recorded
#                                                                             by hand; compare before replacing)
#   scripts/record-requests.sh ENGINE OUT.jsonl                             → anywhere
#
# Starts the engine (scripts/docker-up.sh with TSBRIDGE_ENGINE=ENGINE) and the test image unless
# they are there, runs scripts/record-requests.mjs (a recording proxy between dockerd and
# tsbridge, then the scenarios listed there), and stops/removes what it started. Needs root, and
# the e2e lock like every command that starts an engine.
set -euo pipefail

SELF=$(readlink -f "$0")
cd "$(dirname "$SELF")/.."

die() { echo "record-requests: $*" >&2; exit 1; }

ENGINE=${1:-}
case "$ENGINE" in
  28) OUT=${2:-test/fixtures/docker/28.5-requests.jsonl} ;;
  20.10) OUT=${2:-/tmp/tsbridge-20.10-requests.jsonl} ;;
  *) die "usage: $0 20.10|28 [OUT.jsonl]" ;;
esac
[ "$(id -u)" = 0 ] || die "must run as root"

RUN_DIR=${TSBRIDGE_RUN_DIR:-/run/tsbridge-test}
ours_before=$(cat "$RUN_DIR/engine" 2>/dev/null || true)
started=0
built=0
cleanup() {
  if ((built)); then docker rmi tsbridge-test:latest >/dev/null 2>&1 || true; fi
  if ((started)); then
    bash scripts/docker-down.sh
    [ -z "$ours_before" ] || TSBRIDGE_ENGINE=$ours_before bash scripts/docker-up.sh
  fi
}
trap cleanup EXIT

npm run --silent build </dev/null
if [ "$ours_before" != "$ENGINE" ] || ! timeout 10 docker info >/dev/null 2>&1; then started=1; fi
TSBRIDGE_ENGINE=$ENGINE bash scripts/docker-up.sh
prefix=$(bash scripts/engine.sh path "$ENGINE")
export PATH="${prefix:+$prefix:}$PATH"
docker image inspect tsbridge-test:latest >/dev/null 2>&1 || built=1
bash scripts/test-image.sh
node scripts/record-requests.mjs "$OUT" --engine "$ENGINE"
