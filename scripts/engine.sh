#!/usr/bin/env bash
# The Docker engines the tests run against, side by side on one Debian 12 machine.
#
#   scripts/engine.sh install ENGINE   make ENGINE runnable (idempotent; prints nothing when it is
#                                      already there)
#   scripts/engine.sh path ENGINE      print the directories to put first on PATH for ENGINE
#                                      (one line, colon-separated; empty for 20.10)
#   scripts/engine.sh version ENGINE   print the versions ENGINE is made of
#   scripts/engine.sh foreign          print the Docker engine this host has from other packages
#                                      (Docker CE, moby-engine, ...) and exit 0; exit 1 if none
#
# ENGINE is one of:
#   20.10  Debian 12's own docker.io 20.10 + containerd 1.6 + runc 1.1 + docker-compose 1.29,
#          installed as system packages by scripts/install-deps.sh.
#   28     docker.io 28.5.x, docker-cli 28.5.x, containerd 2.1.x and docker-compose 2.40.x (Compose
#          v2, a CLI plugin) from Debian's `sid` suite, never installed: the .deb files are fetched
#          with apt's own options pointed at a private sources list and private state/cache
#          directories (the machine's apt configuration is untouched; same mirror and keyring as
#          the machine's Debian source) and unpacked with `dpkg-deb -x` into $TSBRIDGE_ENGINES_DIR/28.
#          sid's runc needs a newer glibc than bookworm's: engine 28 runs bookworm's runc (the
#          `runc` package scripts/install-deps.sh installs with docker.io).
#
# Variables:
#   TSBRIDGE_ENGINES_DIR     where unpacked engines live (default /opt/tsbridge-test/engines);
#                            ENGINE 28 is $TSBRIDGE_ENGINES_DIR/28/usr/{sbin,bin,libexec/docker/cli-plugins}
#   TSBRIDGE_DEBIAN_MIRROR   the Debian mirror URI (default: the machine's, read from
#                            /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list)
#   TSBRIDGE_DEBIAN_KEYRING  the keyring that signs it (default: the machine's Signed-By, else
#                            /usr/share/keyrings/debian-archive-keyring.gpg)
#
# scripts/docker-up.sh starts an engine (TSBRIDGE_ENGINE=20.10|28), scripts/test.sh runs the
# end-to-end tier against each engine of TSBRIDGE_ENGINES (default: "20.10 28").
set -euo pipefail

SELF=$(readlink -f "$0")
ENGINES_DIR=${TSBRIDGE_ENGINES_DIR:-/opt/tsbridge-test/engines}
SUITE=sid
# Package → the version prefix engine 28 is made of (what the tests were written against).
declare -A WANT28=([docker.io]=28.5. [docker-cli]=28.5. [containerd]=2.1. [docker-compose]=2.40.)
# Binaries that must be in an unpacked engine 28 (relative to its directory).
BINARIES28=(usr/sbin/dockerd usr/sbin/docker-proxy usr/bin/containerd usr/bin/containerd-shim-runc-v2
  usr/bin/ctr usr/bin/docker usr/libexec/docker/cli-plugins/docker-compose)
MARKER=.tsbridge-engine

die() { echo "engine: $*" >&2; exit 1; }
log() { echo "engine: $*"; }
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$SELF"; exit "${1:-0}"; }

installed_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null; }

# ---- a Docker engine from other packages ------------------------------------------------------

# Prints what provides a Docker engine on this host other than Debian's docker.io; fails if nothing.
foreign_engine() {
  local p f owner
  for p in docker-ce docker-ee docker-engine moby-engine containerd.io; do
    if installed_pkg "$p"; then
      echo "$p $(pkg_version "$p")"
      return 0
    fi
  done
  for f in "$(command -v dockerd || true)" /usr/bin/dockerd /usr/sbin/dockerd /usr/local/bin/dockerd /usr/local/sbin/dockerd; do
    [ -n "$f" ] && [ -x "$f" ] || continue
    owner=$(dpkg -S "$f" 2>/dev/null | cut -d: -f1 || true)
    [ "$owner" = docker.io ] && continue
    echo "$f (${owner:-not from any package})"
    return 0
  done
  return 1
}

# ---- 20.10: the system's packages -------------------------------------------------------------

check_2010() {
  local f
  if f=$(foreign_engine); then
    die "engine 20.10 is Debian's docker.io, but this host has another Docker engine ($f); it is never replaced. Test against it with TSBRIDGE_ENGINES=host, or use TSBRIDGE_ENGINES=28 with it stopped"
  fi
  installed_pkg docker.io || die "engine 20.10: Debian's docker.io is not installed (scripts/install-deps.sh installs it)"
  case "$(pkg_version docker.io)" in
    20.10.*) ;;
    *) die "engine 20.10: the installed docker.io is $(pkg_version docker.io), not 20.10" ;;
  esac
  for f in containerd runc; do
    command -v "$f" >/dev/null || die "engine 20.10: $f is not installed (scripts/install-deps.sh installs it)"
  done
}

# ---- 28: fetched from sid, unpacked -----------------------------------------------------------

# The machine's Debian mirror URI and keyring, from deb822 sources (first stanza serving a
# bookworm suite that is not the security one), else from a one-line sources.list.
machine_source() {
  local f=/etc/apt/sources.list.d/debian.sources
  if [ -r "$f" ]; then
    awk '
      function flush() {
        if (uris != "" && suites ~ /(^| )bookworm( |$)/ && !done) { print uris "\t" key; done = 1 }
        uris = ""; suites = ""; key = ""
      }
      /^[ \t]*$/ { flush(); next }
      /^URIs:/ { sub(/^URIs:[ \t]*/, ""); split($0, u, /[ \t]+/); uris = u[1] }
      /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
      /^Signed-By:[ \t]*\// { sub(/^Signed-By:[ \t]*/, ""); key = $0 }
      END { flush() }
    ' "$f"
    return
  fi
  [ -r /etc/apt/sources.list ] || return 0
  local type rest opts uri suite _
  while read -r type rest; do
    [ "$type" = deb ] || continue
    opts=""
    if [[ $rest == \[* ]]; then opts=${rest%%]*}; rest=${rest#*]}; fi
    read -r uri suite _ <<<"$rest"
    [ "$suite" = bookworm ] || continue
    printf '%s\t%s\n' "$uri" "$(grep -o 'signed-by=[^ ]*' <<<"$opts" | cut -d= -f2 || true)"
    return 0
  done </etc/apt/sources.list
}

engine28_ok() {
  local dir=$ENGINES_DIR/28 b
  [ -f "$dir/$MARKER" ] || return 1
  for b in "${BINARIES28[@]}"; do [ -x "$dir/$b" ] || return 1; done
}

check_runc() {
  # sid's runc needs glibc 2.38; bookworm's (or any runc that runs here) is what engine 28 uses.
  local r
  r=$(command -v runc) || die "engine 28 runs the host's runc, and there is none: scripts/install-deps.sh installs bookworm's runc (with docker.io)"
  "$r" --version >/dev/null 2>&1 || die "engine 28 runs the host's runc, and $r does not run here"
}

install_28() {
  check_runc
  engine28_ok && return 0
  [ "$(id -u)" = 0 ] || die "installing engine 28 into $ENGINES_DIR needs root"
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || die "apt-get and dpkg-deb are needed to fetch engine 28"
  mkdir -p "$ENGINES_DIR"
  # Two sessions installing at once: the second waits, then finds it done.
  exec 8>"$ENGINES_DIR/.install.lock"
  flock -w 600 8 || die "another install holds $ENGINES_DIR/.install.lock"
  engine28_ok && return 0

  local mirror key src
  src=$(machine_source || true)
  mirror=${TSBRIDGE_DEBIAN_MIRROR:-$(cut -f1 <<<"$src")}
  key=${TSBRIDGE_DEBIAN_KEYRING:-$(cut -f2 -s <<<"$src")}
  key=${key:-/usr/share/keyrings/debian-archive-keyring.gpg}
  [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list; set TSBRIDGE_DEBIAN_MIRROR"
  [ -r "$key" ] || die "keyring $key not found; set TSBRIDGE_DEBIAN_KEYRING"

  local t0=$SECONDS apt=$ENGINES_DIR/.apt
  rm -rf "$apt"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
  # apt drops to the _apt user for downloads; let it write where it downloads.
  if id _apt >/dev/null 2>&1; then chown -R _apt:root "$apt/lists" "$apt/cache" "$apt/debs"; fi
  chmod 755 "$ENGINES_DIR" "$apt"
  echo "deb [signed-by=$key] $mirror $SUITE main" >"$apt/sources.list"
  local opts=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o Dir::Etc::sourceparts=/dev/null
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Dir::Etc::preferencesparts=/dev/null
    -o Dir::Etc::preferences=/dev/null)
  log "fetching Docker engine 28 from Debian $SUITE ($mirror) into $ENGINES_DIR/28"
  apt-get -qq "${opts[@]}" update >"$apt/update.log" 2>&1 </dev/null \
    || { cat "$apt/update.log" >&2; die "apt-get update of the private $SUITE source failed (log: $apt/update.log)"; }

  local pkg v
  for pkg in "${!WANT28[@]}"; do
    v=$(apt-cache "${opts[@]}" show --no-all-versions "$pkg" 2>/dev/null | awk '/^Version:/ { print $2; exit }')
    [ -n "$v" ] || die "Debian $SUITE has no package $pkg"
    case "$v" in
      "${WANT28[$pkg]}"*) ;;
      *) die "Debian $SUITE now carries $pkg $v, not ${WANT28[$pkg]}x; engine 28 was made of docker.io 28.5, containerd 2.1 and docker-compose 2.40 (update WANT28 in $SELF once the tests pass with the new versions)" ;;
    esac
  done
  (cd "$apt/debs" && apt-get -qq "${opts[@]}" download "${!WANT28[@]}" >"$apt/download.log" 2>&1 </dev/null) \
    || { cat "$apt/download.log" >&2; die "apt-get download ${!WANT28[*]} failed (log: $apt/download.log)"; }

  local tmp=$ENGINES_DIR/.28.new f
  rm -rf "$tmp"
  mkdir -p "$tmp"
  for f in "$apt"/debs/*.deb; do
    dpkg-deb -x "$f" "$tmp" || die "dpkg-deb -x $f failed"
  done
  # docker-init points at tini-static, which is not unpacked: use the host's, or none.
  if [ -L "$tmp/usr/bin/docker-init" ] && [ ! -e "$tmp/usr/bin/docker-init" ]; then
    rm -f "$tmp/usr/bin/docker-init"
    for f in /usr/bin/tini-static /usr/bin/docker-init; do
      [ -x "$f" ] && { ln -s "$f" "$tmp/usr/bin/docker-init"; break; }
    done
  fi
  for f in "${BINARIES28[@]}"; do
    [ -x "$tmp/$f" ] || die "$f is missing from the unpacked packages"
  done
  "$tmp/usr/sbin/dockerd" --version >/dev/null 2>&1 || die "the unpacked dockerd does not run on this host"
  "$tmp/usr/bin/containerd" --version >/dev/null 2>&1 || die "the unpacked containerd does not run on this host"
  for pkg in "${!WANT28[@]}"; do
    f=$(ls "$apt"/debs/"${pkg}"_*.deb)
    echo "$pkg=$(dpkg-deb -f "$f" Version)"
  done | sort >"$tmp/$MARKER"
  rm -rf "$ENGINES_DIR/28"
  mv "$tmp" "$ENGINES_DIR/28"
  rm -rf "$apt"
  log "engine 28 ready in $ENGINES_DIR/28 ($(tr '\n' ' ' <"$ENGINES_DIR/28/$MARKER")) in $((SECONDS - t0))s"
}

engine_path() {
  case "$1" in
    20.10) echo "" ;;
    28) echo "$ENGINES_DIR/28/usr/sbin:$ENGINES_DIR/28/usr/bin" ;;
  esac
}

engine_version() {
  case "$1" in
    20.10) for p in docker.io containerd runc docker-compose; do echo "$p=$(pkg_version "$p")"; done ;;
    28)
      engine28_ok || die "engine 28 is not installed (scripts/engine.sh install 28)"
      cat "$ENGINES_DIR/28/$MARKER"
      echo "runc=$(runc --version 2>/dev/null | awk 'NR == 1 { print $3 }') ($(command -v runc))"
      ;;
  esac
}

known() {
  case "${1:-}" in
    20.10|28) ;;
    "") usage 2 ;;
    *) die "unknown engine '$1' (known: 20.10, 28)" ;;
  esac
}

case "${1:-}" in
  install)
    known "${2:-}"
    case "$2" in
      20.10) check_2010 ;;
      28) install_28 ;;
    esac
    ;;
  path) known "${2:-}"; engine_path "$2" ;;
  version) known "${2:-}"; engine_version "$2" ;;
  foreign) foreign_engine ;;
  -h|--help) usage 0 ;;
  *) usage 2 ;;
esac
