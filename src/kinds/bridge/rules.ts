/**
 * The NAT bridge's rules. How each path to a published port works (docs/ports.md has the long form):
 *   from another host     prerouting DNAT; the container sees the client's own address
 *   from the host         output DNAT; via 127.0.0.0/8 the source is masqueraded to the
 *                         bridge address (route_localnet=1 on tsbridge bridges lets it out)
 *   hairpin               a container (or another container of its network) reaching the
 *                         port through a host address: the DNATed packet goes back out the
 *                         bridge it came from, source masqueraded to the bridge address —
 *                         matched on (bridge, source subnet), never on the input interface,
 *                         which netfilter does not know when br_netfilter bridges the packet
 *   other networks        routed between bridges, masqueraded like any egress
 *
 * A family in routed gateway mode (Docker's `gateway_mode_ipv4/6=routed`) has no NAT at all: no
 * masquerade, no hairpin, no DNAT. Other hosts (routing the subnet to this host) and other
 * networks reach its containers at their own addresses — replies, ICMP and the published
 * container ports (the set `routed4_<id>` / `routed6_<id>`: address . protocol . port) only.
 */
import type { Endpoint, Network, PortMapping } from '../../domain/types.js';
import type { Element, NetworkRules, SetDecl } from '../../kernel/types.js';
import { guardElements } from '../common/guard.js';
import { portElements } from '../common/ports.js';
import { routed, settingsOf } from './settings.js';

const q = (s: string) => `"${s}"`;

/** The network's set of published container ports of a routed family ("inet routed4_0123456789ab"). */
export function routedSet(n: Network, family: 4 | 6): string {
  return `inet routed${family}_${n.id.slice(0, 12)}`;
}

export function bridgeRules(n: Network): NetworkRules {
  const s = settingsOf(n);
  const br = q(s.bridge);
  const [r4, r6] = [routed(s, 4), routed(s, 6)];
  const input: string[] = [];
  const postrouting: string[] = [];
  const forward: string[] = [];
  const sets: SetDecl[] = [];
  if (n.internal) {
    // Internal networks reach nothing but each other — not the host either. The host may still
    // open connections to their containers (replies come back); neighbour discovery must pass
    // for it to reach them over IPv6. No published ports, no egress.
    input.push(`iifname ${br} ct state established,related accept`);
    input.push(`iifname ${br} icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept`);
    input.push(`iifname ${br} drop`);
    forward.push(`iifname ${br} oifname != ${br} drop`);
    forward.push(`oifname ${br} iifname != ${br} drop`);
  } else {
    // Hairpin: a published port of this network reached from this network through a host address.
    for (const x of r4 ? [] : n.ipv4) postrouting.push(`oifname ${br} ip saddr ${x.subnet} ct status dnat masquerade`);
    for (const x of r6 ? [] : n.ipv6) postrouting.push(`oifname ${br} ip6 saddr ${x.subnet} ct status dnat masquerade`);
    if (s.masquerade) {
      for (const x of r4 ? [] : n.ipv4) postrouting.push(`ip saddr ${x.subnet} oifname != ${br} ${s.snatIpv4 ? `snat ip to ${s.snatIpv4}` : 'masquerade'}`);
      for (const x of r6 ? [] : n.ipv6) postrouting.push(`ip6 saddr ${x.subnet} oifname != ${br} masquerade`);
    }
    // Into a network: replies, published ports and traffic from the same bridge only — so no
    // other network (tsbridge's, Docker's, anyone's) and no other host reaches a container
    // directly. Out of a network to Docker's own bridges: the forward shim (rules/iptables.ts).
    forward.push(`oifname ${br} iifname != ${br} ct state established,related accept`);
    forward.push(`oifname ${br} iifname != ${br} ct status dnat accept`);
    // Routed: ICMP (all of it, as Docker: path MTU discovery, errors, echo) and the published
    // container ports, at the containers' own addresses.
    if (r4) {
      sets.push({ set: routedSet(n, 4), type: 'ipv4_addr . inet_proto . inet_service' });
      forward.push(`oifname ${br} iifname != ${br} meta l4proto icmp accept`);
      forward.push(`oifname ${br} iifname != ${br} ip daddr . meta l4proto . th dport @${routedSet(n, 4).split(' ')[1]} accept`);
    }
    if (r6) {
      sets.push({ set: routedSet(n, 6), type: 'ipv6_addr . inet_proto . inet_service' });
      forward.push(`oifname ${br} iifname != ${br} meta l4proto ipv6-icmp accept`);
      forward.push(`oifname ${br} iifname != ${br} ip6 daddr . meta l4proto . th dport @${routedSet(n, 6).split(' ')[1]} accept`);
    }
    forward.push(`oifname ${br} iifname != ${br} drop`);
  }
  const chains: NetworkRules['chains'] = {};
  if (input.length) chains['inet input'] = input;
  if (postrouting.length) chains['inet postrouting'] = postrouting;
  chains['inet forward'] = forward;
  return {
    chains,
    elements: [{ set: 'inet bridges', key: br }],
    sets,
    shim: [{ name: s.bridge, internal: n.internal }],
  };
}

/** An endpoint's port of the bridge: guarded, and without ICC in the no_icc set. */
export function bridgeMembers(ep: Endpoint, n: Network): Element[] {
  const out = guardElements(ep);
  if (!settingsOf(n).icc) out.push({ set: 'bridge no_icc', key: q(ep.hostVeth) });
  return out;
}

/**
 * The elements publishing these ports: DNAT map elements for host ports, and for a mapping
 * without one (host port 0: a routed family, see src/driver/ports.ts) the container port in the
 * network's routed set of that family — once each.
 */
export function bridgePorts(ep: Endpoint, n: Network, ports: PortMapping[]): Element[] {
  const s = settingsOf(n);
  const out = portElements(ep, ports.filter((p) => p.hostPort !== 0));
  const seen = new Set<string>();
  for (const p of ports.filter((x) => x.hostPort === 0)) {
    const family = p.hostIp.includes(':') ? 6 : 4;
    const target = family === 4 ? ep.ipv4 : ep.ipv6;
    if (!target || !routed(s, family) || n.internal) continue;
    const key = `${target.split('/')[0]} . ${p.proto} . ${p.containerPort}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ set: routedSet(n, family), key });
  }
  return out;
}
