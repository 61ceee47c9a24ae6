/**
 * Point-to-point (`-o io.tsbridge.mode=p2p`), the design notes' "gateway" topology: no bridge. Each
 * container has a veth of its own whose host end holds its subnet's gateway address — the same on
 * every host end of the network (/32, /128), so the container's neighbour lookups for it are
 * answered by the host as for any local address — and a /32 (/128) route leads to the container
 * through it. Containers of one network reach each other through the host's routing:
 *
 *   IPv4  proxy ARP on each host end answers for the other containers (their /32 routes lead out
 *         of other links), with no proxy delay; an unreachable route for the subnet keeps
 *         addresses no container holds from being answered, or sent out of the host.
 *   IPv6  Linux proxies neighbour discovery only per (address, link) pair — one entry per
 *         container on every other container's link — and delays the answers to multicast
 *         solicitations: instead, Join gives each container routes for both halves of the subnet
 *         via the gateway (more specific than the on-link /64 its address brings), and a link
 *         route to the gateway itself, so it asks only for the gateway.
 *
 * Egress is masqueraded, ports are published through the shared maps, icc and isolation are
 * firewall rules (rules.ts): the same options and meaning as on the NAT bridge.
 */
import type { Endpoint, Network, StaticRoute, Subnet } from '../../domain/types.js';
import type { RouteSpec, SysctlSetting } from '../../kernel/types.js';
import { containsAddress, formatPrefix, parseInterfaceCidr, parsePrefix, subnets } from '../../net/addr.js';
import { portElements } from '../common/ports.js';
import type { Kind } from '../types.js';
import { p2pMembers, p2pRules } from './rules.js';
import { P2P_DEFAULTS, P2P_OPTIONS, p2pSettingsOf, parseP2pSettings } from './settings.js';

const plain = (cidr: string) => cidr.split('/')[0]!;

/** The network's subnet (of its family) holding the endpoint's address; the first when none does. */
function subnetOf(address: string, list: Subnet[]): Subnet | undefined {
  const a = parseInterfaceCidr(address);
  return list.find((x) => containsAddress(parsePrefix(x.subnet), a.family, a.address)) ?? list[0];
}

/** The endpoint's gateways (no prefix length), '' where it has no address of the family. */
export function p2pGateways(ep: Pick<Endpoint, 'ipv4' | 'ipv6'>, n: Network): { v4: string; v6: string } {
  const gw = (address: string | null, list: Subnet[]) => {
    const g = address ? subnetOf(address, list)?.gateway : null;
    return g ? plain(g) : '';
  };
  return { v4: gw(ep.ipv4, n.ipv4), v6: n.enableIpv6 ? gw(ep.ipv6, n.ipv6) : '' };
}

/** The container's IPv6 routes: the gateway on its link, both halves of its subnet through it. */
function v6Routes(ep: Endpoint, n: Network, gw: string): StaticRoute[] {
  const subnet = parsePrefix(subnetOf(ep.ipv6!, n.ipv6)!.subnet);
  const halves = subnet.length < 128 ? [...subnets(subnet, subnet.length + 1)] : [];
  return [
    { destination: `${gw}/128`, type: 'connected', nextHop: '' },
    ...halves.map((h): StaticRoute => ({ destination: formatPrefix(h), type: 'via', nextHop: gw })),
  ];
}

export const p2pKind: Kind = {
  name: 'p2p',
  options: Object.values(P2P_OPTIONS),
  parse: (options, net) => ({ ...parseP2pSettings(options, net) }),

  network(n) {
    const v6 = n.enableIpv6 ? n.ipv6 : [];
    const sysctls: SysctlSetting[] = [];
    if (n.ipv4.length > 0) sysctls.push({ key: 'net.ipv4.ip_forward', value: '1' });
    if (v6.length > 0) sysctls.push({ key: 'net.ipv6.conf.all.forwarding', value: '1' });
    return {
      bridge: null,
      links: [],
      routes: [...n.ipv4, ...v6].map((x): RouteSpec => ({ to: x.subnet, unreachable: true })),
      sysctls,
    };
  },

  endpoint(ep, n) {
    const gw = p2pGateways(ep, n);
    const hostAddresses: string[] = [];
    const routes: RouteSpec[] = [];
    const sysctls: SysctlSetting[] = [];
    if (ep.ipv4 && gw.v4) {
      hostAddresses.push(`${gw.v4}/32`);
      routes.push({ to: `${plain(ep.ipv4)}/32`, dev: ep.hostVeth });
      sysctls.push({ key: `net.ipv4.conf.${ep.hostVeth}.proxy_arp`, value: '1' });
      sysctls.push({ key: `net.ipv4.neigh.${ep.hostVeth}.proxy_delay`, value: '0' });
      // Published ports reached through 127.0.0.1 leave through this link with that source.
      if (!n.internal) sysctls.push({ key: `net.ipv4.conf.${ep.hostVeth}.route_localnet`, value: '1' });
    }
    if (ep.ipv6 && gw.v6) {
      hostAddresses.push(`${gw.v6}/128`);
      routes.push({ to: `${plain(ep.ipv6)}/128`, dev: ep.hostVeth });
    }
    return {
      veth: { hostName: ep.hostVeth, peerName: ep.peerVeth, master: null, mtu: n.mtu, mac: ep.mac, hostAddresses },
      routes,
      sysctls,
    };
  },

  hostInterface: () => null,
  rules: p2pRules,
  members: p2pMembers,
  ports: (ep, _n, ports) => portElements(ep, ports),
  publishing: (n) => (n.internal ? null : { defaultHostIp: p2pSettingsOf(n).hostBindingIpv4 }),

  join(ep, n) {
    const gw = p2pGateways(ep, n);
    return {
      srcName: ep.peerVeth,
      dstPrefix: n.ifacePrefix,
      // An internal network has no way out: no default route (its containers still reach each other).
      gateway: n.internal ? '' : gw.v4,
      gatewayIpv6: n.internal ? '' : gw.v6,
      staticRoutes: ep.ipv6 && gw.v6 ? v6Routes(ep, n, gw.v6) : [],
    };
  },

  describe(n) {
    const s = p2pSettingsOf(n);
    const D = P2P_DEFAULTS;
    const o: Record<string, string | number | boolean> = {};
    if (s.icc !== D.icc) o[P2P_OPTIONS.ICC] = s.icc;
    if (s.masquerade !== D.masquerade) o[P2P_OPTIONS.MASQUERADE] = s.masquerade;
    if (s.hostBindingIpv4 !== D.hostBindingIpv4) o[P2P_OPTIONS.HOST_BINDING_IPV4] = s.hostBindingIpv4;
    if (s.snatIpv4 !== D.snatIpv4) o[P2P_OPTIONS.HOST_IPV4] = s.snatIpv4;
    return o;
  },
};
