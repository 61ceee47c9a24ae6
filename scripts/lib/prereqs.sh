# Prerequisite checks shared by the install scripts (sourced, not run). Every check only looks:
# nothing is installed, written or loaded here. A script calls the checks it needs, then
# `prereq_verdict`, which prints every problem found (each with how to fix it) and exits 1 if
# there was one — so a host is never left half-changed because the last of several requirements
# was missing.
#
# The caller sets PREREQ_TAG (the prefix of every message, e.g. "install-deps").

PREREQ_PROBLEMS=()
PREREQ_NOTES=()
# The PATH Debian's sudo gives every command (secure_path in Debian 12's /etc/sudoers).
PREREQ_SECURE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Oldest Node.js major version tsbridge runs on (package.json "engines").
PREREQ_NODE_MAJOR=20

prereq_problem() { PREREQ_PROBLEMS+=("$*"); }
prereq_note() { PREREQ_NOTES+=("$*"); }

# Prints notes and problems; exits 1 when there is a problem. Nothing has been changed yet.
prereq_verdict() {
  local m
  for m in "${PREREQ_NOTES[@]}"; do echo "${PREREQ_TAG:-tsbridge}: note: $m" >&2; done
  ((${#PREREQ_PROBLEMS[@]})) || return 0
  {
    echo "${PREREQ_TAG:-tsbridge}: this host is missing what tsbridge needs (nothing was changed):"
    # A problem's further lines (how to fix it) are indented under it.
    for m in "${PREREQ_PROBLEMS[@]}"; do printf '  - %s\n' "${m//$'\n'/$'\n'    }"; done
  } >&2
  exit 1
}

# Sudo started us: an nvm (or other per-user) node is not on sudo's PATH, TSBRIDGE_* are gone.
prereq_sudo_hint() {
  [ -n "${SUDO_USER:-}" ] || return 0
  printf '%s' " (run through sudo, which sets PATH to $PREREQ_SECURE_PATH and drops TSBRIDGE_* variables: a node installed with nvm is not on that PATH; keep yours with sudo env PATH=\"\$PATH\" bash ${0#./} …)"
}

prereq_root() {
  [ "$(id -u)" = 0 ] && return 0
  prereq_problem "root: $1. Run it as root (sudo bash $0 …, or from a root shell — a root shell on a fresh Debian has no sudo: run the command without it)"
}

# Node.js >= 20 and npm on PATH (with $1 = "no-npm": node only).
prereq_node() {
  local how
  how="How to get Node.js $PREREQ_NODE_MAJOR or later (Debian 12's own nodejs is 18.x and bookworm-backports has none):
  - Debian 13 (trixie) or later: apt-get install nodejs npm (its nodejs is 20.x)
  - Debian 12: NodeSource's nodejs packages for $PREREQ_NODE_MAJOR.x (their instructions add an apt source; npm included)
  - any Linux: the prebuilt binaries from the Node.js download page (nodejs.org), unpacked under /usr/local
  - per user: nvm install $PREREQ_NODE_MAJOR — then run the install scripts as sudo env PATH=\"\$PATH\" bash …"
  local v major
  if ! command -v node >/dev/null 2>&1; then
    prereq_problem "node is not on PATH$(prereq_sudo_hint)."$'\n'"$how"
    return 0
  fi
  v=$(node --version 2>/dev/null) || { prereq_problem "node on PATH ($(command -v node)) does not run."$'\n'"$how"; return 0; }
  major=${v#v}; major=${major%%.*}
  if ! [[ "$major" =~ ^[0-9]+$ ]] || ((major < PREREQ_NODE_MAJOR)); then
    prereq_problem "node $v at $(command -v node) is too old: tsbridge needs $PREREQ_NODE_MAJOR or later$(prereq_sudo_hint)."$'\n'"$how"
  fi
  [ "${1:-}" = no-npm ] && return 0
  command -v npm >/dev/null 2>&1 || prereq_problem "npm is not on PATH$(prereq_sudo_hint): it comes with Node.js's own binaries and NodeSource's nodejs package; with Debian's nodejs install the npm package too"
}

# Debian's package tools, needed only when packages are missing ($@ = the missing packages).
prereq_apt() {
  (($#)) || return 0
  if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
    prereq_problem "packages missing ($*) and this is not a Debian-like system with apt-get: install the programs they carry by other means (ip from iproute2, nft from nftables, iptables, conntrack) and run again"
  fi
}

# prereq_arch WHAT ARCH...: uname -m must be one of ARCH.
prereq_arch() {
  local what=$1 m a; shift
  m=$(uname -m)
  for a in "$@"; do [ "$m" = "$a" ] && return 0; done
  prereq_problem "architecture: $what supports $* only, this host is $m"
}

# The kernel's build configuration, if it can be read (/proc/config.gz, /boot/config-$(uname -r)).
prereq_kernel_config() {
  if [ -r /proc/config.gz ] && command -v zcat >/dev/null 2>&1; then
    zcat /proc/config.gz 2>/dev/null
  elif [ -r "/boot/config-$(uname -r)" ]; then
    cat "/boot/config-$(uname -r)"
  fi
}

# Kernel features tsbridge's rules and links use. Read from the kernel's configuration; a kernel
# whose configuration cannot be read is noted, not refused (a loaded module still counts). With
# nft installed and root, `nft list tables` (read-only) is the final word on nf_tables.
prereq_kernel() {
  local config rel missing=() feature sym mod
  config=$(prereq_kernel_config)
  rel=$(uname -r)
  # CONFIG symbol:module:what
  for feature in BRIDGE:bridge:"Linux bridges" VETH:veth:"veth pairs" NF_TABLES:nf_tables:"nftables" \
    NF_TABLES_INET::"nftables inet family" NF_TABLES_BRIDGE:nf_tables_bridge:"nftables bridge family" \
    NF_CONNTRACK:nf_conntrack:"connection tracking" NF_NAT:nf_nat:"NAT" NFT_NAT:nft_nat:"nftables NAT" \
    NFT_MASQ:nft_masq:"nftables masquerade" NFT_CT:nft_ct:"nftables ct" NFT_FIB_INET:nft_fib_inet:"nftables fib"; do
    sym=${feature%%:*}; mod=${feature#*:}; mod=${mod%%:*}
    [ -n "$mod" ] && [ -d "/sys/module/$mod" ] && continue
    if [ -n "$config" ]; then
      grep -Eq "^CONFIG_${sym}=(y|m)$" <<<"$config" || missing+=("CONFIG_$sym (${feature##*:})")
    elif [ -n "$mod" ] && [ -r "/lib/modules/$rel/modules.dep" ] \
      && grep -Eq "(^|/)${mod}\.ko(\.[a-z]+)?:" "/lib/modules/$rel/modules.dep" "/lib/modules/$rel/modules.builtin" 2>/dev/null; then
      continue
    fi
  done
  if ((${#missing[@]})); then
    prereq_problem "kernel $rel lacks ${missing[*]}: tsbridge needs a kernel with bridges, veth and nftables (every Debian kernel has them)"
  elif [ -z "$config" ]; then
    prereq_note "kernel $rel: its build configuration is not readable here; bridge, veth and nftables support are assumed"
  fi
  if [ "$(id -u)" = 0 ] && command -v nft >/dev/null 2>&1; then
    local out
    out=$(nft list tables 2>&1 >/dev/null) || prereq_problem "nftables does not work in this kernel (nft list tables: ${out:-failed})"
  fi
}

# A Docker client that reaches a running engine.
prereq_docker() {
  if ! command -v docker >/dev/null 2>&1; then
    prereq_problem "docker is not on PATH: $1 needs a Docker engine (Debian: apt-get install docker.io, or Docker CE following Docker's install guide for Debian)"
    return 0
  fi
  local out
  out=$(timeout 20 docker version --format '{{.Server.Version}}' 2>&1) \
    || prereq_problem "no Docker engine answers ($(head -n1 <<<"$out")): $1 needs a running dockerd (systemctl start docker)"
}
