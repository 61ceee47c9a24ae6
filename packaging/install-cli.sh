#!/usr/bin/env bash
# Puts the `tsbridge` command on PATH for one way of running tsbridge: a small wrapper,
# $TSBRIDGE_BIN_DIR/tsbridge (default /usr/local/bin/tsbridge, on sudo's PATH too), that sets
# TSBRIDGE_STATE_DIR and TSBRIDGE_SOCKET for that install and runs the CLI
# (`node …/dist/src/cli.js`), so `tsbridge ports` finds that instance's state without flags.
# The install scripts call it; run it by hand for a plugin installed from a registry.
#
#   packaging/install-cli.sh --plugin NAME      the managed plugin NAME (e.g. tsbridge:latest): the
#                                               wrapper asks Docker, each time, for the plugin's ID
#                                               and state mount and runs the plugin's own CLI
#   packaging/install-cli.sh --service PREFIX   the systemd service with its code in PREFIX
#                                               (settings: the unit, then /etc/default/tsbridge)
#   packaging/install-cli.sh --foreground DIR   scripts/start.sh in checkout DIR, with the socket
#                                               and state directory in this environment
#   packaging/install-cli.sh --uninstall KIND   remove the wrapper if it is KIND's (plugin, service,
#                                               foreground, or any)
#
# A wrapper of another install is replaced (--foreground leaves a plugin's or a service's alone);
# a `tsbridge` that is no wrapper of this script is never overwritten.
set -euo pipefail

SELF=$(readlink -f "$0")
REPO=$(cd "$(dirname "$SELF")/.." && pwd)
BIN_DIR=${TSBRIDGE_BIN_DIR:-/usr/local/bin}
TARGET=$BIN_DIR/tsbridge
MARK='# tsbridge-cli-wrapper:'

die() { echo "install-cli: $*" >&2; exit 1; }
log() { echo "install-cli: $*"; }
usage() { sed -n '2,21p' "$SELF" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

# The kind of the wrapper at TARGET: plugin/service/foreground, "none", or "foreign".
current_kind() {
  [ -e "$TARGET" ] || [ -L "$TARGET" ] || { echo none; return; }
  local line
  line=$(grep -m1 "^$MARK" "$TARGET" 2>/dev/null) || { echo foreign; return; }
  line=${line#"$MARK "}
  echo "${line%% *}"
}

# Single-quotes a value for sh.
q() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# The node that runs this install (empty when there is none: a managed plugin brings its own).
node_path() {
  local n
  n=$(command -v node) || return 0
  case "$n" in /*) echo "$n" ;; *) readlink -f "$n" ;; esac
}

write_wrapper() {
  local kind=$1 body=$2 was
  was=$(current_kind)
  case "$was" in
    foreign) log "$TARGET exists and is not a tsbridge wrapper: left as it is (run the CLI as node …/dist/src/cli.js)"; return 0 ;;
    plugin|service) if [ "$kind" = foreground ]; then
        log "$TARGET belongs to the $was install: left as it is (for this instance: TSBRIDGE_SOCKET=… node $REPO/dist/src/cli.js …)"
        return 0
      fi ;;
  esac
  mkdir -p "$BIN_DIR"
  local tmp
  tmp=$(mktemp "$BIN_DIR/.tsbridge.XXXXXX")
  printf '%s\n' "$body" >"$tmp"
  chmod 0755 "$tmp"
  mv -f "$tmp" "$TARGET"
  case "$was" in none|"$kind") log "installed $TARGET ($kind)" ;; *) log "installed $TARGET ($kind; replaces the $was one)" ;; esac
}

# Wrapper header: what it is for, and the node (20 or later) found at install time.
header() {
  local n
  n=$(node_path)
  [ -n "$n" ] || [ "$1" != "${1#plugin }" ] || die "node is not on PATH (Node.js 20 or later; see scripts/install-deps.sh)"
  cat <<EOF
#!/bin/sh
$MARK $1
# The tsbridge command for $2.
# Written by packaging/install-cli.sh; the uninstall of that install removes it.
node=$(q "$n")
EOF
}

# Wrapper line: when the install's node is gone, try $1 (if given), then node on PATH.
find_node() {
  local also=""
  [ -n "${1:-}" ] && also=" || { node=$1; [ -x \"\$node\" ]; }"
  echo '[ -x "$node" ]'"$also"' || node=$(command -v node) || { echo "tsbridge: node (20 or later) not found" >&2; exit 1; }'
}

plugin_wrapper() {
  local name=$1
  header "plugin $name" "the managed plugin $name"
  cat <<EOF
plugin=$(q "$name")
# Asked each time: the plugin's ID changes when it is created again (an upgrade), and its state
# directory is its "state" mount, settable with docker plugin set state.source=….
if ! info=\$(docker plugin inspect --format '{{.Id}} {{range .Settings.Mounts}}{{if eq .Destination "/var/lib/tsbridge"}}{{.Source}}{{end}}{{end}}' "\$plugin" 2>&1); then
  echo "tsbridge: cannot find the managed plugin \$plugin: \$info" >&2
  exit 1
fi
id=\${info%% *}
root=\$(docker info --format '{{.DockerRootDir}}') || { echo "tsbridge: docker info failed" >&2; exit 1; }
# The plugin's own copy of the CLI, the same version as the plugin.
cli=\$root/plugins/\$id/rootfs/opt/tsbridge/dist/src/cli.js
[ -r "\$cli" ] || { echo "tsbridge: cannot read \$cli (run as root: sudo tsbridge …)" >&2; exit 1; }
# Without a node on the host (a plugin built with --dockerfile), the plugin's own.
$(find_node '$root/plugins/$id/rootfs/usr/local/bin/node')
export TSBRIDGE_STATE_DIR="\${info#* }"
export TSBRIDGE_SOCKET="/run/docker/plugins/\$id/tsbridge.sock"
exec "\$node" "\$cli" "\$@"
EOF
}

# The value of `Environment=NAME=…` in the installed unit (the defaults the service starts with).
unit_value() {
  sed -n "s/^Environment=$2=//p" "$1" | tail -n1
}

service_wrapper() {
  local prefix=$1 unit=${TSBRIDGE_UNIT_DIR:-/etc/systemd/system}/tsbridge.service socket state
  [ -f "$unit" ] || unit=$REPO/packaging/tsbridge.service
  socket=$(unit_value "$unit" TSBRIDGE_SOCKET)
  state=$(unit_value "$unit" TSBRIDGE_STATE_DIR)
  header "service $prefix" "the systemd service tsbridge.service ($prefix)"
  cat <<EOF
cli=$(q "$prefix/dist/src/cli.js")
# As the service sees them: the unit's values, then /etc/default/tsbridge (systemd's order).
TSBRIDGE_SOCKET=$(q "${socket:-/run/docker/plugins/tsbridge.sock}")
TSBRIDGE_STATE_DIR=$(q "${state:-/var/lib/tsbridge}")
if [ -r /etc/default/tsbridge ]; then
  for var in TSBRIDGE_SOCKET TSBRIDGE_STATE_DIR; do
    value=\$(sed -n "s/^[[:space:]]*\$var=//p" /etc/default/tsbridge | tail -n1)
    value=\${value#[\\"\\']}; value=\${value%[\\"\\']}
    [ -n "\$value" ] && eval "\$var=\\\$value"
  done
fi
export TSBRIDGE_SOCKET TSBRIDGE_STATE_DIR
$(find_node)
exec "\$node" "\$cli" "\$@"
EOF
}

foreground_wrapper() {
  local dir=$1
  header "foreground $dir" "scripts/start.sh in $dir"
  echo "cli=$(q "$dir/dist/src/cli.js")"
  find_node
  echo "export TSBRIDGE_SOCKET=$(q "${TSBRIDGE_SOCKET:-/run/docker/plugins/tsbridge.sock}")"
  # Unset: the CLI derives the same default from the socket as the plugin does.
  if [ -n "${TSBRIDGE_STATE_DIR:-}" ]; then echo "export TSBRIDGE_STATE_DIR=$(q "$(realpath -m "$TSBRIDGE_STATE_DIR")")"; fi
  echo 'exec "$node" "$cli" "$@"'
}

(($#)) || usage 2
case "$1" in
  --plugin) [ -n "${2:-}" ] || die "--plugin needs the plugin's name"; write_wrapper plugin "$(plugin_wrapper "$2")" ;;
  --service) [ -n "${2:-}" ] || die "--service needs the install prefix"; write_wrapper service "$(service_wrapper "$2")" ;;
  --foreground) [ -n "${2:-}" ] || die "--foreground needs the checkout"; write_wrapper foreground "$(foreground_wrapper "$(readlink -f "$2")")" ;;
  --uninstall)
    kind=${2:-any}
    was=$(current_kind)
    case "$was" in
      none) ;;
      foreign) log "$TARGET is not a tsbridge wrapper: left as it is" ;;
      *) if [ "$kind" = any ] || [ "$kind" = "$was" ]; then rm -f "$TARGET"; log "removed $TARGET"
         else log "$TARGET belongs to the $was install: left as it is"; fi ;;
    esac ;;
  -h|--help) usage 0 ;;
  *) echo "install-cli: unknown option $1" >&2; usage 2 ;;
esac
