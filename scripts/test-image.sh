#!/usr/bin/env bash
# Builds the test image tsbridge-test:latest offline (there is no registry here):
# static busybox + its applet links, /bin/udp-echo (test/fixtures/udp-echo.c, gcc -static),
# a minimal /etc. Skips the build when the image's tsbridge.inputs label matches a hash of
# its inputs (busybox binary, the C source, this script).
set -euo pipefail

SELF=$(readlink -f "$0")
cd "$(dirname "$SELF")/.."

IMAGE=${TSBRIDGE_TEST_IMAGE:-tsbridge-test:latest}
SRC=test/fixtures/udp-echo.c
LABEL=tsbridge.inputs

die() { echo "test-image: $*" >&2; exit 1; }

BUSYBOX=$(command -v busybox) || die "busybox not found (apt-get install busybox-static)"
BUSYBOX=$(readlink -f "$BUSYBOX")
file_is_static() { ! ldd "$1" >/dev/null 2>&1; }
file_is_static "$BUSYBOX" || die "$BUSYBOX is dynamically linked; install busybox-static"
command -v gcc >/dev/null || die "gcc not found (apt-get install gcc libc6-dev)"
docker info >/dev/null 2>&1 || die "docker is not running (scripts/docker-up.sh)"

hash=$(cat "$BUSYBOX" "$SRC" "$SELF" | sha256sum | cut -c1-16)

old_id=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
if [ -n "$old_id" ]; then
  have=$(docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$IMAGE" 2>/dev/null || true)
  if [ "$have" = "$hash" ]; then
    echo "test-image: $IMAGE is up to date ($LABEL=$hash)"
    exit 0
  fi
fi

t0=$SECONDS
root=$(mktemp -d /tmp/tsbridge-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT

mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,proc,sys,dev,run,var/run,www}
chmod 1777 "$root/tmp"
cp "$BUSYBOX" "$root/bin/busybox"
# --list-full gives each applet's usual place (bin/, sbin/, usr/bin/, usr/sbin/).
busybox --list-full | while read -r applet; do
  [ "$applet" = bin/busybox ] && continue
  [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
gcc -static -O2 -Wall -Werror -o "$root/bin/udp-echo" "$SRC" || die "compiling $SRC failed"
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
echo 'hello from tsbridge-test' >"$root/www/index.html"

tar -C "$root" --owner=0 --group=0 -c . \
  | docker import -c 'CMD ["/bin/sh"]' -c "LABEL $LABEL=$hash" - "$IMAGE" >/dev/null \
  || die "docker import failed"

# The previous build is now untagged; drop it unless something still uses it.
if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{.Id}}' "$IMAGE")" ]; then
  docker rmi "$old_id" >/dev/null 2>&1 || true
fi
echo "test-image: built $IMAGE ($LABEL=$hash) in $((SECONDS - t0))s"
