#!/usr/bin/env bash
# Installs tsbridge as a legacy plugin run by systemd (the managed plugin is preferred; see
# docs/install.md):
#   packaging/install-service.sh              build, copy to /opt/tsbridge, install and start
#                                             tsbridge.service (ordered before docker.service)
#   packaging/install-service.sh --uninstall  stop and remove the service and /opt/tsbridge
#                                             (state in /var/lib/tsbridge is kept: remove it by hand)
# Without a running systemd it installs the files and says how to start the plugin by hand.
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")/.."

# Overridable for a dry run somewhere harmless.
PREFIX=${TSBRIDGE_PREFIX:-/opt/tsbridge}
UNIT=${TSBRIDGE_UNIT_DIR:-/etc/systemd/system}/tsbridge.service

die() { echo "install-service: $*" >&2; exit 1; }
log() { echo "install-service: $*"; }
have_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

[ "$(id -u)" = 0 ] || die "must run as root"

if [ "${1:-}" = --uninstall ]; then
  if have_systemd; then
    systemctl disable --now tsbridge.service 2>/dev/null || true
  fi
  rm -f "$UNIT"
  have_systemd && systemctl daemon-reload
  rm -rf "$PREFIX"
  log "removed $UNIT and $PREFIX; state kept in /var/lib/tsbridge (networks still using tsbridge must be removed first: docker network ls --filter driver=tsbridge)"
  exit 0
fi
[ $# -eq 0 ] || die "usage: $0 [--uninstall]"

NODE=$(command -v node) || die "node (20 or later) is not on PATH"
bash scripts/install-deps.sh --runtime

staging=$(mktemp -d /tmp/tsbridge-install.XXXXXX)
trap 'rm -rf "$staging"' EXIT
cp package.json package-lock.json "$staging/"
mkdir -p "$staging/dist" "$staging/docs"
cp -a dist/src "$staging/dist/"
cp -a node_modules "$staging/"
(cd "$staging" && npm prune --omit=dev --offline --no-audit --no-fund --loglevel=error </dev/null >/dev/null) || die "npm prune failed"
cp docs/install.md "$staging/docs/" 2>/dev/null || true
rm -rf "$PREFIX.new"
mkdir -p "$(dirname "$PREFIX")"
cp -a "$staging" "$PREFIX.new"
rm -rf "$PREFIX"
mv "$PREFIX.new" "$PREFIX"

mkdir -p "$(dirname "$UNIT")"
sed -e "s#^ExecStart=/usr/bin/node #ExecStart=$NODE #" -e "s#/opt/tsbridge#$PREFIX#g" packaging/tsbridge.service >"$UNIT"
chmod 0644 "$UNIT"
log "installed $PREFIX and $UNIT"

if have_systemd; then
  systemctl daemon-reload
  systemctl enable --now tsbridge.service
  log "tsbridge.service is $(systemctl is-active tsbridge.service): docker network create -d tsbridge --ipam-driver tsbridge ..."
else
  log "systemd is not running here: start it by hand with"
  log "  TSBRIDGE_STATE_DIR=/var/lib/tsbridge $NODE $PREFIX/dist/src/main.js"
fi
