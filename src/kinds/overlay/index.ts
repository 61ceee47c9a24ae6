/**
 * The overlay (issue 13): one subnet across Docker hosts. On each host, a NAT bridge holding the
 * overlay's anycast gateway (the same address and MAC everywhere), a VXLAN device on it (learning
 * off, ARP/ND proxy on), and the remote endpoints programmed from etcd (running.ts); etcd is the
 * only coordination (src/cluster). docs/overlay.md has the whole story.
 */
import type { Endpoint, Network } from '../../domain/types.js';
import { macFromIpv4 } from '../../domain/names.js';
import { fail } from '../../errors.js';
import { vxlanOverhead } from '../../cluster/identity.js';
import type { SysctlSetting } from '../../kernel/types.js';
import { bridgeKind } from '../bridge/index.js';
import { bridgeMembers } from '../bridge/rules.js';
import { BRIDGE_OPTIONS } from '../bridge/settings.js';
import { portElements } from '../common/ports.js';
import type { Kind, KindContext } from '../types.js';
import { overlayRules } from './rules.js';
import { startOverlay } from './running.js';
import { OVERLAY_OPTION, OVERLAY_OPTIONS, parseOverlaySettings, settingsOf, toSettings, VXLAN_PORT } from './settings.js';

const plain = (cidr: string | null | undefined) => (cidr ?? '').split('/')[0]!;

/** Completes the settings: joins the overlay in etcd (idempotent) and takes its VNI and gateway MAC, this host's underlay and MTU. */
async function beforeCreate(net: Network, ctx: KindContext) {
  const s = settingsOf(net);
  const cluster = ctx.cluster;
  if (!cluster) fail('CLUSTER_NOT_CONFIGURED', { option: OVERLAY_OPTION });
  const subnet = net.ipv4[0]!.subnet;
  const pool = Object.values(ctx.state?.().pools ?? {}).find((p) => p.pool === subnet);
  if (pool?.overlay?.name !== s.overlay) {
    fail('BAD_OPTION', {
      option: OVERLAY_OPTION,
      value: s.overlay,
      detail: `an overlay's addresses are allocated across hosts by tsbridge's IPAM: create the network with --ipam-driver tsbridge --ipam-opt ${OVERLAY_OPTION}=${s.overlay}`,
    });
  }
  const joined = await cluster.join(s.overlay, subnet, plain(net.ipv4[0]!.gateway));
  const vtep = cluster.underlay.vtep;
  const settings = toSettings({
    ...s,
    vni: joined.config.vni,
    gatewayMac: joined.config.gatewayMac,
    vtep,
    mtu: s.mtuAsked || cluster.underlay.mtu - vxlanOverhead(vtep),
    vteps: cluster.vtepsOf(s.overlay) ?? [],
  });
  return { settings };
}

export const overlayKind: Kind = {
  name: 'overlay',
  options: OVERLAY_OPTIONS,
  claims: (o) => o[OVERLAY_OPTION] !== undefined,
  parse: (o, net) => toSettings(parseOverlaySettings(o, net)),

  network(n) {
    const s = settingsOf(n);
    const sysctls: SysctlSetting[] = [
      { key: 'net.ipv4.ip_forward', value: '1' },
      { key: `net.ipv4.conf.${s.bridge}.route_localnet`, value: '1' },
    ];
    return {
      bridge: { name: s.bridge, mtu: s.mtu, addresses: n.ipv4.map((x) => x.gateway).filter((g): g is string => !!g), mac: s.gatewayMac || '02:74:73:00:00:00' },
      // Not before the settings are complete (a network being checked before creation).
      ...(s.vni ? { vxlan: { name: s.vxlan, vni: s.vni, local: s.vtep, port: VXLAN_PORT, mtu: s.mtu, master: s.bridge } } : {}),
      links: [s.bridge, s.vxlan],
      routes: [],
      sysctls,
    };
  },

  endpoint: (ep: Endpoint, n: Network) => ({
    veth: { hostName: ep.hostVeth, peerName: ep.peerVeth, master: settingsOf(n).bridge, mtu: settingsOf(n).mtu, mac: ep.mac, hostAddresses: [] },
    routes: [],
    sysctls: [],
  }),

  hostInterface: (n) => settingsOf(n).bridge,
  rules: overlayRules,
  members: bridgeMembers,
  ports: (ep, _n, ports) => portElements(ep, ports),
  publishing: (n) => (n.internal ? null : { defaultHostIp: settingsOf(n).hostBindingIpv4 }),

  describe(n) {
    const s = settingsOf(n);
    // The bridge options it was given (as the NAT bridge shows them), and what makes it an overlay.
    const { [BRIDGE_OPTIONS.BRIDGE_NAME]: _name, ...bridge } = bridgeKind.describe(n);
    return { [OVERLAY_OPTION]: s.overlay, vni: s.vni, vtep: s.vtep, mtu: s.mtu, ...bridge };
  },

  /** 02:42 and the four bytes of the IPv4 address, as Docker's overlay (the gateway's is 02:74:73…). */
  endpointMac: (ipv4) => (ipv4 ? macFromIpv4(plain(ipv4)) : null),

  join: (ep, n) => ({ srcName: ep.peerVeth, dstPrefix: n.ifacePrefix, gateway: n.internal ? '' : plain(n.ipv4[0]?.gateway), gatewayIpv6: '', staticRoutes: [] }),

  lifecycle: {
    beforeCreate,
    start: async (net, ctx) => startOverlay(net, ctx),
    async endpointCreated(ep, net, ctx) {
      if (!ep.ipv4) return;
      if (!ctx.cluster) fail('CLUSTER_NOT_CONFIGURED', { option: OVERLAY_OPTION });
      await ctx.cluster.attach(settingsOf(net).overlay, plain(ep.ipv4), ep.mac, ep.id);
    },
  },
};
