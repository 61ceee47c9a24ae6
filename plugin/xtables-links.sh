#!/bin/sh
# Makes the iptables link directories plugin/iptables-variant.mjs chooses from:
#   ROOT/opt/tsbridge/xtables/{nft,legacy}/{iptables,ip6tables}{,-restore,-save}
# each a link to /usr/sbin/xtables-<variant>-multi (which dispatches on the name it is called by).
# Used by scripts/plugin-build.sh (offline rootfs) and by the Dockerfile.
#   xtables-links.sh ROOT
set -eu
root=${1:?usage: xtables-links.sh ROOT}
for variant in nft legacy; do
  dir="$root/opt/tsbridge/xtables/$variant"
  mkdir -p "$dir"
  for name in iptables ip6tables iptables-restore ip6tables-restore iptables-save ip6tables-save; do
    ln -sfn "/usr/sbin/xtables-$variant-multi" "$dir/$name"
  done
done
