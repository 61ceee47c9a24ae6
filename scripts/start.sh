#!/usr/bin/env bash
# The README's first command: check and install what is missing, build, put the `tsbridge`
# command on PATH for this instance, and run the plugin in the foreground (Ctrl-C stops it).
#   sudo bash scripts/start.sh
# Settings are environment variables (README, Configuration). sudo drops them, and drops an
# nvm-installed node from PATH: keep both with
#   sudo env TSBRIDGE_LOG_LEVEL=debug PATH="$PATH" bash scripts/start.sh
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
# shellcheck source=lib/prereqs.sh
. scripts/lib/prereqs.sh
PREREQ_TAG=start

case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "start: unknown option $1 (settings are environment variables, see the README)" >&2; exit 2 ;;
esac

prereq_root "the plugin creates bridges and firewall rules"
prereq_verdict
# Checks the rest (Node.js, apt, the kernel) before it changes anything.
bash scripts/install-deps.sh --runtime
bash packaging/install-cli.sh --foreground "$(pwd)"
# node's flags as in every launcher (test/unit/launchers.test.ts, docs/benchmarks.md)
exec node --max-semi-space-size=1 --heap-growing-percent=25 dist/src/main.js
