#!/usr/bin/env bash
# npm run bench: builds, starts what the benchmark needs and is missing, runs bench/run.ts, and
# stops or removes what it started or built — so it runs on a fresh machine as after
# scripts/test.sh (which stops its engine and removes its image).
#
#   TSBRIDGE_ENGINE=28    bash scripts/bench.sh [bench/run.ts flags]   Docker 28.5 (scripts/engine.sh)
#   TSBRIDGE_ENGINE=20.10 bash scripts/bench.sh [flags]                Debian 12's Docker 20.10
#   bash scripts/bench.sh [flags]                                      the engine that answers, else 20.10
#
# The engine comes from scripts/docker-up.sh (a Docker engine it did not start is used as it is
# when TSBRIDGE_ENGINE is unset); the image from scripts/test-image.sh. On a shared machine, run
# it under the e2e lock: flock -o /run/tsbridge-e2e.lock npm run bench.
set -euo pipefail

SELF=$(readlink -f "$0")
cd "$(dirname "$SELF")/.."

RUN_DIR=${TSBRIDGE_RUN_DIR:-/run/tsbridge-test}
IMAGE=${TSBRIDGE_TEST_IMAGE:-tsbridge-test:latest}

die() { echo "bench: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
command -v iperf3 >/dev/null || die "iperf3 is missing (bash scripts/install-deps.sh installs it)"

# docker_ready, alive, ours_running
. scripts/lib/engine-state.sh

started=0
built=0
engine_before=""
cleanup() {
  local rc=$?
  if ((built)); then docker rmi "$IMAGE" >/dev/null 2>&1 || echo "bench: could not remove $IMAGE" >&2; fi
  if ((started)); then
    bash scripts/docker-down.sh || echo "bench: docker-down.sh failed" >&2
    if [ -n "$engine_before" ]; then
      TSBRIDGE_ENGINE=$engine_before bash scripts/docker-up.sh >/dev/null || echo "bench: could not start engine $engine_before again" >&2
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT

npm run build >/dev/null || die "npm run build failed (npm ci first?)"

want=${TSBRIDGE_ENGINE:-}
if [ -z "$want" ] && docker_ready; then
  echo "bench: using the engine that answers ($(docker version --format '{{.Server.Version}}'))"
else
  want=${want:-20.10}
  have=$(cat "$RUN_DIR/engine" 2>/dev/null || echo 20.10)
  if ! ours_running || [ "$have" != "$want" ]; then
    started=1
    if ours_running; then engine_before=$have; fi
  fi
  TSBRIDGE_ENGINE=$want bash scripts/docker-up.sh
fi

docker image inspect "$IMAGE" >/dev/null 2>&1 || built=1
bash scripts/test-image.sh

node dist/bench/run.js "$@"
