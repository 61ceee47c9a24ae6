/**
 * The NAT bridge (the default kind; Docker's own bridge driver, done with nftables): a Linux
 * bridge per network holding the gateway, a veth per endpoint enslaved to it, masquerade (or SNAT)
 * for egress, published ports by DNAT, isolation from every other network, anti-spoofing and
 * enable_icc on the bridge's ports. Per address family, Docker's routed gateway mode replaces the
 * NAT: the same bridge, containers reached at their own addresses (rules.ts).
 */
import type { Endpoint, Network } from '../../domain/types.js';
import { macFromId } from '../../domain/names.js';
import type { SysctlSetting } from '../../kernel/types.js';
import type { Kind } from '../types.js';
import { bridgeMembers, bridgePorts, bridgeRules } from './rules.js';
import { BRIDGE_DEFAULTS, BRIDGE_OPTIONS, parseBridgeSettings, routed, settingsOf, toSettings } from './settings.js';

/** Gateway addresses the bridge holds: IPv4 unless inhibit_ipv4, IPv6 when enabled. */
export function bridgeAddresses(n: Network): string[] {
  const v4 = settingsOf(n).inhibitIpv4 ? [] : n.ipv4.map((x) => x.gateway).filter((g): g is string => !!g);
  const v6 = n.enableIpv6 ? n.ipv6.map((x) => x.gateway).filter((g): g is string => !!g) : [];
  return [...v4, ...v6];
}

const plain = (cidr: string | null | undefined) => (cidr ?? '').split('/')[0]!;

export const bridgeKind: Kind = {
  name: 'bridge',
  options: Object.values(BRIDGE_OPTIONS),
  parse: (options, net) => toSettings(parseBridgeSettings(options, net)),

  network(n) {
    const s = settingsOf(n);
    const sysctls: SysctlSetting[] = [];
    if (n.ipv4.length > 0) sysctls.push({ key: 'net.ipv4.ip_forward', value: '1' });
    if (n.enableIpv6 && n.ipv6.length > 0) sysctls.push({ key: 'net.ipv6.conf.all.forwarding', value: '1' });
    // Published ports reached through 127.0.0.1 are DNATed onto the bridge: allow that source there
    // (routed IPv4 has no host ports, so no such path).
    if (n.ipv4.length > 0 && !routed(s, 4)) sysctls.push({ key: `net.ipv4.conf.${s.bridge}.route_localnet`, value: '1' });
    return {
      bridge: { name: s.bridge, mtu: n.mtu, addresses: bridgeAddresses(n), mac: macFromId(n.id, 'bridge') },
      links: [s.bridge],
      routes: [],
      sysctls,
    };
  },

  endpoint: (ep: Endpoint, n: Network) => ({
    veth: { hostName: ep.hostVeth, peerName: ep.peerVeth, master: settingsOf(n).bridge, mtu: n.mtu, mac: ep.mac, hostAddresses: [] },
    routes: [],
    sysctls: [],
  }),

  hostInterface: (n) => settingsOf(n).bridge,
  rules: bridgeRules,
  members: bridgeMembers,
  ports: bridgePorts,
  publishing(n) {
    if (n.internal) return null;
    const s = settingsOf(n);
    return { defaultHostIp: s.hostBindingIpv4, routed: { v4: routed(s, 4), v6: routed(s, 6) } };
  },

  join(ep, n) {
    // inhibit_ipv4 keeps the address off the bridge, not the route: as with Docker's bridge, the
    // gateway is a router on the bridge's segment (and without one, Docker would hang the
    // container on its docker_gwbridge for egress). An internal network has no way out.
    const gw4 = n.internal ? '' : plain(n.ipv4[0]?.gateway);
    const gw6 = n.internal || !n.enableIpv6 || !ep.ipv6 ? '' : plain(n.ipv6[0]?.gateway);
    return { srcName: ep.peerVeth, dstPrefix: n.ifacePrefix, gateway: gw4, gatewayIpv6: gw6, staticRoutes: [] };
  },

  describe(n) {
    const s = settingsOf(n);
    const D = BRIDGE_DEFAULTS;
    const o: Record<string, string | number | boolean> = {};
    if (s.bridgeNamedByUser) o[BRIDGE_OPTIONS.BRIDGE_NAME] = s.bridge;
    if (s.icc !== D.icc) o[BRIDGE_OPTIONS.ICC] = s.icc;
    if (s.masquerade !== D.masquerade) o[BRIDGE_OPTIONS.MASQUERADE] = s.masquerade;
    if (s.hostBindingIpv4 !== D.hostBindingIpv4) o[BRIDGE_OPTIONS.HOST_BINDING_IPV4] = s.hostBindingIpv4;
    if (s.snatIpv4 !== D.snatIpv4) o[BRIDGE_OPTIONS.HOST_IPV4] = s.snatIpv4;
    if (s.inhibitIpv4 !== D.inhibitIpv4) o[BRIDGE_OPTIONS.INHIBIT_IPV4] = s.inhibitIpv4;
    if (routed(s, 4)) o[BRIDGE_OPTIONS.GATEWAY_MODE_IPV4] = 'routed';
    if (routed(s, 6)) o[BRIDGE_OPTIONS.GATEWAY_MODE_IPV6] = 'routed';
    return o;
  },
};
