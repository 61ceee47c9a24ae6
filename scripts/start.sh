#!/usr/bin/env bash
# The README's first command: install what is missing, build, and run the plugin in the
# foreground on /run/docker/plugins/tsbridge.sock (override with TSBRIDGE_SOCKET etc.).
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."
if [ "$(id -u)" != 0 ]; then
  echo "tsbridge: the plugin creates bridges and firewall rules and needs root: sudo bash scripts/start.sh" >&2
  exit 1
fi
bash scripts/install-deps.sh --runtime
exec npm start --silent
