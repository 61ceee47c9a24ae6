#!/usr/bin/env bash
# Installs what tsbridge needs on a Debian 12 machine, then builds.
#   scripts/install-deps.sh            everything the tests need (Docker engine, compilers, compose)
#   scripts/install-deps.sh --runtime  only what the plugin itself runs (iproute2, nftables, iptables, conntrack)
# First checks every prerequisite — root (when something is missing), Debian's apt (when a package
# is missing), Node.js 20 or later with npm, the kernel's bridge/veth/nftables support — and
# changes nothing unless all of them hold; each problem is printed with how to fix it.
# Idempotent and quiet: apt-get runs only when a package is missing, `npm ci` only when
# node_modules is missing or older than package-lock.json. Exit 0: ready; 1: something is missing
# or failed (the message says what).
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")/.."
# shellcheck source=lib/prereqs.sh
. scripts/lib/prereqs.sh
PREREQ_TAG=install-deps

die() { echo "install-deps: $*" >&2; exit 1; }

case "${1:-}" in
  --runtime) PACKAGES=(iptables nftables iproute2 conntrack) ;;
  "") PACKAGES=(docker.io iptables nftables iproute2 busybox-static conntrack gcc libc6-dev docker-compose python3 etcd-server iperf3 openssl) ;;
  -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown option $1 (usage: scripts/install-deps.sh [--runtime])" ;;
esac

# A host with a Docker engine from other packages (Docker CE's docker-ce/containerd.io, ...) keeps
# it: Debian's docker.io is never installed over it, nor pulled in as a recommendation.
NO_RECOMMENDS=()
if [ "${1:-}" != "--runtime" ] && foreign=$(bash scripts/engine.sh foreign); then
  prereq_note "this host has its own Docker engine ($foreign): Debian's docker.io is not installed over it"
  PACKAGES=("${PACKAGES[@]/docker.io}")
  NO_RECOMMENDS=(--no-install-recommends)
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${PACKAGES[@]}"; do
    [ -n "$p" ] || continue
    installed "$p" || missing+=("$p")
  done
else
  # Not Debian: the programs must already be there.
  for p in ip nft iptables conntrack; do command -v "$p" >/dev/null 2>&1 || missing+=("$p")
  done
fi

# ---- every check before any change ------------------------------------------------------------
((${#missing[@]})) && prereq_root "packages are missing (${missing[*]}) and only root can install them"
prereq_apt "${missing[@]}"
prereq_node
prereq_kernel
prereq_verdict

# ---- changes ----------------------------------------------------------------------------------
if ((${#missing[@]})); then
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
  # nft is there now: the kernel check's final word.
  PREREQ_PROBLEMS=() PREREQ_NOTES=()
  prereq_kernel
  prereq_verdict
fi

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
