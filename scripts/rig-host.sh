#!/usr/bin/env bash
# Boot script of one Docker host of the multi-host test rig (test/lib/rig.ts starts it; see
# docs/overlay.md "The multi-host rig"). It runs as PID 1 of the host's own PID namespace, in the
# host's network namespace and in a private mount namespace of its own:
#
#   nsenter --net=/run/netns/NS unshare --mount --propagation private --pid --fork --kill-child \
#     --mount-proc bash scripts/rig-host.sh DIR ENGINE_PATH CGROUP_PARENT
#
# It gives the host a fresh /sys (so /sys/class/net shows the host's interfaces, with the
# machine's cgroups bound back in), its own /run/docker/plugins (a tmpfs: the host's plugins
# only), then starts the host's containerd and dockerd with everything under DIR:
#   DIR/containerd.sock   DIR/docker.sock   DIR/{containerd,docker,exec}/   DIR/*.log
# and waits. Killing the `unshare` process above (root namespace) kills this PID namespace and
# everything in it — containerd, dockerd, shims, containers — at once: that is how a host "dies".
# A clean stop sends SIGTERM to dockerd first (it stops its containers), see test/lib/rig.ts.
set -euo pipefail

DIR=$1
ENGINE_PATH=$2
CGROUP_PARENT=$3
export PATH="$ENGINE_PATH:$PATH"

die() { echo "rig-host: $*" >&2; exit 1; }

[ "$$" = 1 ] || die "must run as PID 1 of its own PID namespace (unshare --pid --fork)"
mkdir -p "$DIR/cgroup" "$DIR/containerd/root" "$DIR/containerd/state" "$DIR/docker" "$DIR/exec"

# A fresh sysfs for this network namespace; the machine's cgroup mounts go back on top of it.
mount --rbind /sys/fs/cgroup "$DIR/cgroup"
mount -t sysfs sysfs /sys
mount --rbind "$DIR/cgroup" /sys/fs/cgroup
umount -l "$DIR/cgroup"
mkdir -p /run/docker/plugins
mount -t tmpfs -o mode=0755 tmpfs /run/docker/plugins

printf 'version = 3\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n' >"$DIR/containerd.toml"
echo '{}' >"$DIR/daemon.json"

containerd --config "$DIR/containerd.toml" --address "$DIR/containerd.sock" \
  --root "$DIR/containerd/root" --state "$DIR/containerd/state" >>"$DIR/containerd.log" 2>&1 </dev/null &
ctr_pid=$!
for _ in $(seq 1 100); do
  [ -S "$DIR/containerd.sock" ] && break
  kill -0 "$ctr_pid" 2>/dev/null || die "containerd exited; log: $DIR/containerd.log"
  sleep 0.1
done
[ -S "$DIR/containerd.sock" ] || die "containerd did not open $DIR/containerd.sock; log: $DIR/containerd.log"

# The cgroup parent (/tsbridge-rig-ID-HOST) names this host, so the teardown finds what its
# containers leave in the machine's cgroup hierarchies.
dockerd --containerd="$DIR/containerd.sock" --data-root "$DIR/docker" --exec-root "$DIR/exec" \
  --pidfile "$DIR/dockerd.pid" --config-file "$DIR/daemon.json" -H "unix://$DIR/docker.sock" \
  --cgroup-parent "$CGROUP_PARENT" \
  >>"$DIR/dockerd.log" 2>&1 </dev/null &

# PID 1 stays a shell: it reaps the orphans (exited shims) the namespace hands it. It ends when
# dockerd does (a clean stop) — the rig then kills the namespace.
wait -n || true
