#!/usr/bin/env bash
# Builds tsbridge as a Docker managed plugin and (unless told not to) installs it:
# rootfs → OUT/tsbridge/{config.json,rootfs/} → docker plugin create → enable [→ push], then puts
# the `tsbridge` command on PATH for it (packaging/install-cli.sh --plugin NAME).
# Works from a fresh clone: the offline build first runs scripts/install-deps.sh --runtime
# (checks Node.js >= 20, npm, apt and the kernel before changing anything; installs iproute2,
# nftables, iptables, conntrack if missing; npm ci; npm run build).
#
#   scripts/plugin-build.sh [options]
#
#   --offline         (default) assemble the rootfs from this host: node, dist/, production
#                     node_modules, ip, nft, iptables (nft + legacy), conntrack and every shared
#                     library they load. No registry, no base image. x86_64 Debian-like hosts only
#                     (the libraries are copied from /usr/lib/x86_64-linux-gnu).
#   --dockerfile      build the rootfs from ./Dockerfile instead (needs a registry for the base
#                     image): docker build → docker create → docker export.
#   --name NAME       plugin name (default tsbridge:latest; ":latest" is added when no tag is given)
#   --out DIR         build directory (default plugin/build); DIR/tsbridge is replaced
#   --prebuilt        use dist/ and node_modules/ as they are (no install-deps, no build; --offline only)
#   --rootfs-only     stop after writing DIR/tsbridge (no docker plugin create)
#   --no-enable       create the plugin but leave it disabled (e.g. to `docker plugin set` first)
#   --state-dir DIR   host directory for the plugin's state (default /var/lib/tsbridge-plugin;
#                     created if missing: the engine refuses to start a plugin whose mount
#                     source does not exist)
#   --force           replace an existing plugin of that name (disable -f, rm -f): the upgrade
#   --push            docker plugin push NAME after creating it (NAME must name a registry repo)
#
# Environment: TSBRIDGE_BIN_DIR (default /usr/local/bin), where the `tsbridge` command goes.
# TSBRIDGE_PLUGIN_CACHE (for the test run only, unset for users): a directory where the offline
# rootfs is kept under a hash of everything that goes into it, and taken from on the next build
# with the same inputs (then checked like a fresh one). See docs/scripts.md.
# The plugin's state lives on the host in /var/lib/tsbridge-plugin (created here if missing);
# it outlives disable, rm and upgrade. See docs/install.md.
set -euo pipefail

SELF=$(readlink -f "$0")
cd "$(dirname "$SELF")/.."
REPO=$(pwd)

MODE=offline
NAME=tsbridge:latest
OUT=plugin/build
PREBUILT=0
CREATE=1
ENABLE=1
FORCE=0
PUSH=0
STATE_SOURCE=/var/lib/tsbridge-plugin

die() { echo "plugin-build: $*" >&2; exit 1; }
log() { echo "plugin-build: $*"; }
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$SELF"; exit "${1:-0}"; }

while (($#)); do
  case "$1" in
    --offline) MODE=offline ;;
    --dockerfile) MODE=dockerfile ;;
    --name) NAME=${2:?--name needs a value}; shift ;;
    --out) OUT=${2:?--out needs a value}; shift ;;
    --prebuilt) PREBUILT=1 ;;
    --rootfs-only) CREATE=0 ;;
    --no-enable) ENABLE=0 ;;
    --state-dir) STATE_SOURCE=${2:?--state-dir needs a value}; shift ;;
    --force) FORCE=1 ;;
    --push) PUSH=1 ;;
    -h|--help) usage 0 ;;
    *) echo "plugin-build: unknown option $1" >&2; usage 2 ;;
  esac
  shift
done
case "$NAME" in *:*) ;; *) NAME="$NAME:latest" ;; esac

# ---- every check before any change -------------------------------------------------------------
# shellcheck source=lib/prereqs.sh
. scripts/lib/prereqs.sh
PREREQ_TAG=plugin-build
# The offline rootfs copies this host's programs and libraries from these places.
TRIPLET=x86_64-linux-gnu
prereq_root "it reads every library, chroots to check the rootfs and talks to dockerd"
if [ "$MODE" = offline ]; then
  prereq_arch "the offline build (it copies /usr/lib/$TRIPLET; elsewhere try --dockerfile, which needs a registry and is untested)" x86_64
  prereq_node
  if ((PREBUILT)); then
    [ -f dist/src/main.js ] || prereq_problem "--prebuilt: dist/src/main.js is missing (npm ci && npm run build, or leave out --prebuilt)"
    [ -d node_modules ] || prereq_problem "--prebuilt: node_modules is missing (npm ci, or leave out --prebuilt)"
    for bin in ip nft conntrack xtables-nft-multi; do
      command -v "$bin" >/dev/null || prereq_problem "--prebuilt: $bin is not on this host (scripts/install-deps.sh --runtime installs iproute2, nftables, iptables, conntrack)"
    done
  fi
fi
if ((CREATE)) || [ "$MODE" = dockerfile ]; then
  prereq_docker "building (--dockerfile) or creating the plugin"
fi
prereq_verdict
if [ "$MODE" = offline ] && ((PREBUILT == 0)); then
  # Checks Node, apt and the kernel before it changes anything; then the host tools, npm ci, build.
  bash scripts/install-deps.sh --runtime || die "scripts/install-deps.sh --runtime failed (see above)"
fi

mkdir -p "$OUT"
OUT=$(readlink -f "$OUT")
BUNDLE="$OUT/tsbridge"
ROOT="$BUNDLE/rootfs"
t0=$SECONDS

# ---- offline rootfs ---------------------------------------------------------------------------

declare -A COPIED=()

# copy_file SRC [DEST]: SRC's content (links followed) at ROOT/DEST (default: the same path).
copy_file() {
  local src=$1 dest=${2:-$1}
  [ -n "${COPIED[$dest]:-}" ] && return 0
  mkdir -p "$ROOT$(dirname "$dest")"
  cp -L --preserve=mode "$src" "$ROOT$dest"
  COPIED[$dest]=1
}

# copy_libs ELF...: every shared library (and the loader) the ELF files need, at their host paths.
copy_libs() {
  local lib
  while read -r lib; do
    [ -n "$lib" ] && copy_file "$lib"
  done < <(ldd "$@" 2>/dev/null | awk '/=> \// { print $3 } /^[ \t]*\/[^ ]+ \(0x/ { print $1 }' | sort -u)
}

host_iptables_variant() {
  local v
  v=$(iptables -V 2>/dev/null) || die "iptables is not installed on this host"
  case "$v" in *legacy*) echo legacy ;; *) echo nft ;; esac
}

assemble_offline() {
  local bin path node xtdir variant
  for bin in node ip nft conntrack xtables-nft-multi; do
    command -v "$bin" >/dev/null || die "$bin not found on this host (scripts/install-deps.sh --runtime installs iproute2, nftables, iptables, conntrack)"
  done
  [ -f dist/src/main.js ] || die "dist/src/main.js missing (npm run build)"
  [ -d node_modules ] || die "node_modules missing (npm ci)"

  mkdir -p "$ROOT"
  # Same top-level layout as the host (Debian 12 is usr-merged: /lib -> usr/lib, ...).
  local target
  for path in bin sbin lib lib32 lib64 libx32; do
    [ -L "/$path" ] || continue
    target=$(readlink "/$path")
    mkdir -p "$ROOT/${target#/}"
    ln -sfn "$target" "$ROOT/$path"
  done
  mkdir -p "$ROOT"/{usr/bin,usr/sbin,usr/lib,usr/local/bin,etc,tmp,root,proc,sys,dev,run/docker/plugins,var/lib/tsbridge,host/proc/sys/net,opt/tsbridge/plugin}
  chmod 1777 "$ROOT/tmp"

  # Programs. node goes where the Dockerfile's base image has it, so one config.json fits both.
  node=$(readlink -f "$(command -v node)")
  copy_file "$node" /usr/local/bin/node
  local elves=("$node")
  for bin in ip nft conntrack xtables-nft-multi xtables-legacy-multi; do
    path=$(command -v "$bin" 2>/dev/null) || { [ "$bin" = xtables-legacy-multi ] && continue; die "$bin not found"; }
    copy_file "$path" "/usr/sbin/$bin"
    elves+=("$(readlink -f "$path")")
  done
  # iptables extensions are loaded with dlopen: copy the directory and what its modules need.
  for xtdir in "/usr/lib/$TRIPLET/xtables" /usr/lib64/xtables /usr/lib/xtables; do
    [ -d "$xtdir" ] && break
  done
  [ -d "$xtdir" ] || die "no xtables extension directory found"
  mkdir -p "$ROOT$(dirname "$xtdir")"
  cp -a "$xtdir" "$ROOT$(dirname "$xtdir")/"
  copy_libs "${elves[@]}" "$xtdir"/*.so

  # iptables names: the host's variant by default; the other one under its own names.
  variant=$(host_iptables_variant)
  for bin in iptables ip6tables; do
    for suffix in "" -restore -save; do
      ln -sfn "xtables-$variant-multi" "$ROOT/usr/sbin/$bin$suffix"
      ln -sfn xtables-nft-multi "$ROOT/usr/sbin/$bin-nft$suffix"
      [ -e "$ROOT/usr/sbin/xtables-legacy-multi" ] && ln -sfn xtables-legacy-multi "$ROOT/usr/sbin/$bin-legacy$suffix"
    done
  done
  sh plugin/xtables-links.sh "$ROOT"
  if [ ! -e "$ROOT/usr/sbin/xtables-legacy-multi" ]; then
    rm -rf "$ROOT/opt/tsbridge/xtables/legacy"
    log "xtables-legacy-multi not on this host: the plugin supports iptables-nft only"
  fi

  # A minimal /etc. The engine bind-mounts /etc/hosts and /etc/resolv.conf over the empty files.
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$ROOT/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$ROOT/etc/group"
  printf 'passwd: files\ngroup: files\nhosts: files dns\nprotocols: files\nservices: files\n' >"$ROOT/etc/nsswitch.conf"
  : >"$ROOT/etc/hosts"
  : >"$ROOT/etc/resolv.conf"
  for path in /etc/protocols /etc/services /etc/ethertypes; do
    [ -f "$path" ] && copy_file "$path"
  done
  [ -d /etc/iproute2 ] && cp -a /etc/iproute2 "$ROOT/etc/"
  [ -d /usr/share/iproute2 ] && mkdir -p "$ROOT/usr/share" && cp -a /usr/share/iproute2 "$ROOT/usr/share/"
  if command -v ldconfig >/dev/null; then
    printf '/usr/local/lib\n/lib/%s\n/usr/lib/%s\n' "$TRIPLET" "$TRIPLET" >"$ROOT/etc/ld.so.conf"
    ldconfig -r "$ROOT" 2>/dev/null || true
  fi

  # The application: compiled sources, production dependencies only, the preload module.
  local app="$ROOT/opt/tsbridge"
  cp package.json package-lock.json "$app/"
  mkdir -p "$app/dist"
  cp -a dist/src "$app/dist/"
  find "$app/dist" -name '*.map' -delete
  cp -a node_modules "$app/"
  (cd "$app" && npm prune --omit=dev --offline --no-audit --no-fund --loglevel=error </dev/null >/dev/null) \
    || die "npm prune --omit=dev failed in $app"
  find "$app/node_modules" -mindepth 1 -type d -empty -delete
  cp plugin/iptables-variant.mjs "$app/plugin/"
}

# ---- the test run's rootfs cache (TSBRIDGE_PLUGIN_CACHE) ---------------------------------------

# rootfs_key: a hash of everything assemble_offline copies or reads: this script and the plugin's
# own files, the compiled code (by content: npm run build rewrites it), the installed modules, the
# host's programs, iptables extensions, shared libraries (every one in the library directories, so
# that no ldd is needed) and files it takes (by path, size and modification time).
rootfs_key() {
  local bin p elves=()
  for bin in node ip nft conntrack xtables-nft-multi xtables-legacy-multi; do
    if p=$(command -v "$bin" 2>/dev/null); then elves+=("$(readlink -f "$p")"); fi
  done
  {
    echo "iptables: $(iptables -V 2>&1)"
    sha256sum "$SELF" plugin/xtables-links.sh plugin/iptables-variant.mjs package.json package-lock.json
    find dist/src -type f ! -name '*.map' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    find node_modules -printf '%P %y %s %T@ %l\n' | LC_ALL=C sort
    stat -L -c '%n %s %Y' "${elves[@]}"
    find "/usr/lib/$TRIPLET" /usr/lib64 /usr/lib/xtables /etc/protocols /etc/services /etc/ethertypes /etc/iproute2 /usr/share/iproute2 \
      -maxdepth 2 -printf '%p %y %s %T@ %l\n' 2>/dev/null | LC_ALL=C sort
    for p in bin sbin lib lib32 lib64 libx32; do
      if [ -L "/$p" ]; then echo "/$p -> $(readlink "/$p")"; fi
    done
  } | sha256sum | cut -c1-32
}

# ---- rootfs from the Dockerfile ---------------------------------------------------------------

assemble_dockerfile() {
  local tag="tsbridge-plugin-rootfs:build-$$" cid
  log "docker build (Dockerfile)"
  docker build -t "$tag" -f Dockerfile . || die "docker build failed (the base image must be pullable)"
  cid=$(docker create "$tag") || { docker rmi "$tag" >/dev/null 2>&1; die "docker create failed"; }
  mkdir -p "$ROOT"
  if ! docker export "$cid" | tar -x -C "$ROOT"; then
    docker rm "$cid" >/dev/null 2>&1; docker rmi "$tag" >/dev/null 2>&1
    die "docker export failed"
  fi
  docker rm "$cid" >/dev/null
  docker rmi "$tag" >/dev/null
}

# ---- checks: every program starts inside the rootfs, the whole module graph loads -------------

check_rootfs() {
  # The plugin's own environment: PATH only (no NODE_OPTIONS, NODE_EXTRA_CA_CERTS, ... from here).
  local run=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin chroot "$ROOT")
  "${run[@]}" /usr/local/bin/node -e 'process.exit(0)' || die "node does not start inside the rootfs"
  "${run[@]}" /usr/local/bin/node --input-type=module -e "await import('/opt/tsbridge/dist/src/main.js')" \
    || die "dist/src/main.js does not load inside the rootfs (missing module?)"
  "${run[@]}" ip -V >/dev/null 2>&1 || die "ip does not run inside the rootfs"
  "${run[@]}" nft --version >/dev/null || die "nft does not run inside the rootfs"
  "${run[@]}" conntrack --version >/dev/null 2>&1 || die "conntrack does not run inside the rootfs"
  local v
  for v in "$ROOT"/opt/tsbridge/xtables/*; do
    "${run[@]}" "/opt/tsbridge/xtables/$(basename "$v")/iptables" -V >/dev/null || die "iptables ($(basename "$v")) does not run inside the rootfs"
  done
}

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE"
CACHED=
if [ -n "${TSBRIDGE_PLUGIN_CACHE:-}" ] && [ "$MODE" = offline ]; then
  KEY=$(rootfs_key) || die "could not hash the rootfs inputs (TSBRIDGE_PLUGIN_CACHE)"
  CACHED="$TSBRIDGE_PLUGIN_CACHE/rootfs-$KEY"
fi
if [ -n "$CACHED" ] && [ -d "$CACHED" ]; then
  # Hard links where it can (nothing writes into a rootfs once assembled), else a copy.
  cp -al "$CACHED" "$ROOT" 2>/dev/null || { rm -rf "$ROOT"; cp -a "$CACHED" "$ROOT"; }
  log "rootfs taken from TSBRIDGE_PLUGIN_CACHE (inputs unchanged since a build of this run: $KEY)"
else
  case "$MODE" in
    offline) assemble_offline ;;
    dockerfile) assemble_dockerfile ;;
  esac
fi
cp config.json "$BUNDLE/config.json"
check_rootfs
if [ -n "$CACHED" ] && [ ! -d "$CACHED" ]; then
  # Only a rootfs that passed the checks; written aside, then renamed (a concurrent build of the
  # same inputs can only find a whole one).
  mkdir -p "$TSBRIDGE_PLUGIN_CACHE"
  rm -rf "$CACHED.tmp.$$"
  { cp -al "$ROOT" "$CACHED.tmp.$$" 2>/dev/null || { rm -rf "$CACHED.tmp.$$"; cp -a "$ROOT" "$CACHED.tmp.$$"; }; } &&
    mv -T "$CACHED.tmp.$$" "$CACHED" 2>/dev/null || rm -rf "$CACHED.tmp.$$"
  log "rootfs kept in TSBRIDGE_PLUGIN_CACHE for later builds of this run ($KEY)"
fi
log "rootfs ready in $BUNDLE ($(du -sh "$ROOT" | cut -f1), $((SECONDS - t0))s)"

((CREATE)) || exit 0

if docker plugin inspect "$NAME" >/dev/null 2>&1; then
  ((FORCE)) || die "plugin $NAME already exists (--force replaces it; its networks keep their state in $STATE_SOURCE)"
  log "replacing plugin $NAME"
  docker plugin disable -f "$NAME" >/dev/null 2>&1 || true
  docker plugin rm -f "$NAME" >/dev/null
fi
# The engine does not create a bind mount's source, and will not start the plugin without it.
mkdir -p "$STATE_SOURCE"
STATE_SOURCE=$(readlink -f "$STATE_SOURCE")
t1=$SECONDS
docker plugin create "$NAME" "$BUNDLE" >/dev/null || die "docker plugin create failed"
if [ "$STATE_SOURCE" != /var/lib/tsbridge-plugin ]; then
  docker plugin set "$NAME" "state.source=$STATE_SOURCE" || die "docker plugin set $NAME state.source=$STATE_SOURCE failed"
fi
log "created plugin $NAME in $((SECONDS - t1))s"
if ((ENABLE)); then
  docker plugin enable "$NAME" >/dev/null || die "docker plugin enable $NAME failed (see dockerd's log)"
  log "enabled: docker network create -d $NAME --ipam-driver $NAME ..."
fi
if ((PUSH)); then
  docker plugin push "$NAME" || die "docker plugin push $NAME failed"
  log "pushed $NAME: docker plugin install $NAME"
fi
# `tsbridge ports` etc. for this plugin, without flags (asks Docker for its state mount and ID).
bash packaging/install-cli.sh --plugin "$NAME" || die "packaging/install-cli.sh --plugin $NAME failed"
