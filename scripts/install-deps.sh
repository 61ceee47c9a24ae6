#!/usr/bin/env bash
# Installs what tsbridge needs on a fresh Debian 12 machine, then builds.
#   scripts/install-deps.sh            everything the tests need (Docker engine, compilers, compose)
#   scripts/install-deps.sh --runtime  only what the plugin itself runs (iproute2, nftables, iptables, conntrack)
# Idempotent and quiet: apt-get runs only when a package is missing, `npm ci` only when
# node_modules is missing or older than package-lock.json.
set -euo pipefail

cd "$(dirname "$0")/.."

die() { echo "install-deps: $*" >&2; exit 1; }

if [ "${1:-}" = "--runtime" ]; then
  PACKAGES=(iptables nftables iproute2 conntrack)
else
  PACKAGES=(docker.io iptables nftables iproute2 busybox-static conntrack gcc libc6-dev docker-compose python3)
fi

# A host with a Docker engine from other packages (Docker CE's docker-ce/containerd.io, ...) keeps
# it: Debian's docker.io is never installed over it, nor pulled in as a recommendation.
NO_RECOMMENDS=()
if [ "${1:-}" != "--runtime" ] && foreign=$(bash scripts/engine.sh foreign); then
  echo "install-deps: this host has its own Docker engine ($foreign); not installing Debian's docker.io"
  PACKAGES=("${PACKAGES[@]/docker.io}")
  NO_RECOMMENDS=(--no-install-recommends)
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=()
for p in "${PACKAGES[@]}"; do
  [ -n "$p" ] || continue
  installed "$p" || missing+=("$p")
done

if ((${#missing[@]})); then
  [ "$(id -u)" = 0 ] || die "packages missing (${missing[*]}) and not root: run as root"
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 NEEDRESTART_MODE=l
  apt_log=$(mktemp)
  trap 'rm -f "$apt_log"' EXIT
  # Recommends stay on: docker.io's (apparmor among them) are what the verified setup used.
  apt-get -qq -o DPkg::Lock::Timeout=120 update </dev/null >"$apt_log" 2>&1 \
    || { cat "$apt_log" >&2; die "apt-get update failed"; }
  apt-get -qq -y -o DPkg::Lock::Timeout=120 -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold install "${NO_RECOMMENDS[@]}" "${missing[@]}" </dev/null >"$apt_log" 2>&1 \
    || { cat "$apt_log" >&2; die "apt-get install ${missing[*]} failed"; }
  for p in "${missing[@]}"; do installed "$p" || die "package $p still not installed"; done
fi

command -v node >/dev/null || die "node is not on PATH (Node 20 is expected to be preinstalled)"
command -v npm >/dev/null || die "npm is not on PATH"

# npm writes node_modules/.package-lock.json on every install: a reliable "installed at" stamp.
stamp=node_modules/.package-lock.json
if [ ! -d node_modules ] || [ ! -f "$stamp" ] || { [ -f package-lock.json ] && [ package-lock.json -nt "$stamp" ]; }; then
  echo "install-deps: installing node modules"
  if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error </dev/null || die "npm ci failed"
  else
    npm install --no-audit --no-fund --loglevel=error </dev/null || die "npm install failed"
  fi
  touch "$stamp"
fi

npm run --silent build </dev/null || die "npm run build failed"
echo "install-deps: ok"
