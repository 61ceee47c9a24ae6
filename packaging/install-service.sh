#!/usr/bin/env bash
# Installs tsbridge as a legacy plugin run by systemd (the managed plugin is preferred; see
# docs/install.md):
#   packaging/install-service.sh              build, copy to /opt/tsbridge, install and start
#                                             tsbridge.service (ordered before docker.service);
#                                             run again to upgrade: the unit is restarted when
#                                             its code, unit file or node changed
#   packaging/install-service.sh --uninstall  stop and remove the service, /opt/tsbridge and the
#                                             tsbridge command (state in /var/lib/tsbridge is kept:
#                                             remove it by hand)
# Also puts the `tsbridge` command on PATH (packaging/install-cli.sh --service).
# Checks every prerequisite (root, Node.js >= 20 with npm, apt, the kernel) before changing
# anything. Without a running systemd it installs the files and says how to start the plugin by hand.
# Environment, for a dry run somewhere harmless: TSBRIDGE_PREFIX (default /opt/tsbridge),
# TSBRIDGE_UNIT_DIR (default /etc/systemd/system), TSBRIDGE_BIN_DIR (default /usr/local/bin),
# TSBRIDGE_SYSTEMCTL (a systemctl to call instead of looking for a running systemd).
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")/.."
# shellcheck source=../scripts/lib/prereqs.sh
. scripts/lib/prereqs.sh
PREREQ_TAG=install-service

PREFIX=${TSBRIDGE_PREFIX:-/opt/tsbridge}
UNIT=${TSBRIDGE_UNIT_DIR:-/etc/systemd/system}/tsbridge.service
SYSTEMCTL=${TSBRIDGE_SYSTEMCTL:-systemctl}

die() { echo "install-service: $*" >&2; exit 1; }
log() { echo "install-service: $*"; }
have_systemd() {
  [ -n "${TSBRIDGE_SYSTEMCTL:-}" ] && return 0
  [ -d /run/systemd/system ] && command -v systemctl >/dev/null
}

case "${1:-}" in
  ""|--uninstall) ;;
  -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
  *) die "usage: $0 [--uninstall]" ;;
esac
[ $# -le 1 ] || die "usage: $0 [--uninstall]"

prereq_root "it installs a systemd unit and files under $PREFIX"
[ "${1:-}" = --uninstall ] || prereq_node
prereq_verdict

if [ "${1:-}" = --uninstall ]; then
  if have_systemd; then
    "$SYSTEMCTL" disable --now tsbridge.service 2>/dev/null || true
  fi
  rm -f "$UNIT"
  if have_systemd; then "$SYSTEMCTL" daemon-reload; fi
  rm -rf "$PREFIX"
  bash packaging/install-cli.sh --uninstall service
  log "removed $UNIT and $PREFIX; state kept in /var/lib/tsbridge (networks still using tsbridge must be removed first: docker network ls --filter driver=tsbridge)"
  exit 0
fi

NODE=$(command -v node)
# Checks apt and the kernel before it changes anything; installs the host tools, npm ci, build.
bash scripts/install-deps.sh --runtime

# fingerprint DIR FILE...: one hash of every file under DIR (paths and contents) and of FILEs.
fingerprint() {
  local dir=$1; shift
  {
    if [ -d "$dir" ]; then (cd "$dir" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum); fi
    for f in "$@"; do if [ -f "$f" ]; then sha256sum <"$f"; fi; done
  } | sha256sum | cut -d' ' -f1
}

staging=$(mktemp -d /tmp/tsbridge-install.XXXXXX)
trap 'rm -rf "$staging"' EXIT
app=$staging/app
mkdir -p "$app/dist" "$app/docs"
cp package.json package-lock.json "$app/"
cp -a dist/src "$app/dist/"
cp -a node_modules "$app/"
(cd "$app" && npm prune --omit=dev --offline --no-audit --no-fund --loglevel=error </dev/null >/dev/null) || die "npm prune failed"
cp docs/install.md "$app/docs/" 2>/dev/null || true
# The node the unit runs, and its version: a new node is a reason to restart too.
printf '%s %s\n' "$NODE" "$("$NODE" --version)" >"$app/.node"
sed -e "s#^ExecStart=/usr/bin/node #ExecStart=$NODE #" -e "s#/opt/tsbridge#$PREFIX#g" packaging/tsbridge.service >"$staging/unit"

before=$(fingerprint "$PREFIX" "$UNIT")
after=$(fingerprint "$app" "$staging/unit")
changed=0
[ "$before" = "$after" ] || changed=1

if ((changed)); then
  rm -rf "$PREFIX.new"
  mkdir -p "$(dirname "$PREFIX")"
  cp -a "$app" "$PREFIX.new"
  rm -rf "$PREFIX"
  mv "$PREFIX.new" "$PREFIX"
  mkdir -p "$(dirname "$UNIT")"
  install -m 0644 "$staging/unit" "$UNIT"
  log "installed $PREFIX and $UNIT"
else
  log "$PREFIX and $UNIT are up to date"
fi
bash packaging/install-cli.sh --service "$PREFIX"

if have_systemd; then
  "$SYSTEMCTL" daemon-reload
  if ((changed)) && "$SYSTEMCTL" is-active --quiet tsbridge.service; then
    # An upgrade: the running process still has the old code.
    "$SYSTEMCTL" enable tsbridge.service
    "$SYSTEMCTL" restart tsbridge.service
    log "restarted tsbridge.service with the new files"
  else
    "$SYSTEMCTL" enable --now tsbridge.service
  fi
  log "tsbridge.service is $("$SYSTEMCTL" is-active tsbridge.service || true): docker network create -d tsbridge --ipam-driver tsbridge ..."
else
  log "systemd is not running here: start it by hand with"
  log "  TSBRIDGE_STATE_DIR=/var/lib/tsbridge $NODE --max-semi-space-size=1 --heap-growing-percent=25 $PREFIX/dist/src/main.js"
fi
