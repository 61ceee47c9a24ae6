# The managed plugin's rootfs, for hosts that can pull base images. Not run as a container:
# scripts/plugin-build.sh --dockerfile does docker build → docker create → docker export into
# plugin/build/tsbridge/rootfs and adds config.json (the entrypoint is there).
# Without a registry, scripts/plugin-build.sh --offline assembles the same layout from the host.

ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY tsconfig.json ./
COPY src ./src
COPY bench ./bench
RUN npx tsc -p tsconfig.json \
 && npm prune --omit=dev --no-audit --no-fund --loglevel=error \
 && find dist -name '*.map' -delete

FROM ${NODE_IMAGE}
# The programs tsbridge runs. iptables brings both variants (nft and legacy); the plugin picks
# the one holding Docker's chains at start (plugin/iptables-variant.mjs, TSBRIDGE_IPTABLES).
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 nftables iptables conntrack \
 && rm -rf /var/lib/apt/lists/*
COPY plugin/xtables-links.sh /tmp/xtables-links.sh
RUN sh /tmp/xtables-links.sh / && rm /tmp/xtables-links.sh \
 && mkdir -p /run/docker/plugins /var/lib/tsbridge /host/proc/sys/net
WORKDIR /opt/tsbridge
COPY --from=build /src/package.json /src/package-lock.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
COPY plugin/iptables-variant.mjs ./plugin/
# Kept in step with config.json's entrypoint (docker plugin create ignores this line), node's
# flags with every launcher's (test/unit/launchers.test.ts).
ENTRYPOINT ["/usr/local/bin/node", "--max-semi-space-size=1", "--heap-growing-percent=25", "--import", "/opt/tsbridge/plugin/iptables-variant.mjs", "/opt/tsbridge/dist/src/main.js"]
