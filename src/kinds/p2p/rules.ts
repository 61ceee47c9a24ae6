/**
 * The point-to-point kind's rules. No bridge: the network's interfaces are its endpoints' host
 * veths, named in a set of the network's own (`inet p2p_<id>`), which every rule matches on.
 *
 *   anti-spoofing   (inet guard, before conntrack) a packet from a host veth must carry that
 *                   endpoint's own source address (`p2p4_<id>`, `p2p6_<id>`: veth . address;
 *                   IPv6 link-local and :: too, for neighbour discovery); router advertisements
 *                   and redirects never come from a container. ARP and neighbour advertisements
 *                   need no check: the host reaches each container through its /32 (/128) route
 *                   out of that container's veth, so what a container claims on its own link
 *                   cannot draw another container's traffic.
 *   isolation       (inet forward) into the network only replies, published ports and traffic
 *                   from its own veths; enable_icc=false drops traffic between its veths except
 *                   published ports reached through a host address (DNAT); internal networks
 *                   reach nothing outside and not the host (inet input).
 *   NAT             (inet postrouting) egress masqueraded (or SNATed); hairpin through a host
 *                   address masqueraded to the gateway, as on the bridge; published ports through
 *                   the shared maps, 127.0.0.1 through the shared `bridges` set (route_localnet on
 *                   each host veth).
 */
import type { Endpoint, Network } from '../../domain/types.js';
import type { Element, NetworkRules, SetDecl } from '../../kernel/types.js';
import { p2pSettingsOf } from './settings.js';

const q = (s: string) => `"${s}"`;
const plain = (cidr: string) => cidr.split('/')[0]!;

/** The network's own sets: its host veths, and each one's IPv4 / IPv6 address. */
export function p2pSets(n: Network): { ports: string; addr4: string; addr6: string } {
  const id = n.id.slice(0, 12);
  return { ports: `inet p2p_${id}`, addr4: `inet p2p4_${id}`, addr6: `inet p2p6_${id}` };
}

/** The name a rule uses for a set ("inet p2p_x" → "@p2p_x"). */
const ref = (set: string) => `@${set.split(' ')[1]}`;

export function p2pRules(n: Network): NetworkRules {
  const s = p2pSettingsOf(n);
  const sets = p2pSets(n);
  const P = ref(sets.ports);
  const v6 = n.enableIpv6 ? n.ipv6 : [];
  const guard = [
    `iifname ${P} iifname . ip saddr != ${ref(sets.addr4)} drop`,
    `iifname ${P} icmpv6 type { nd-router-advert, nd-redirect } drop`,
    `iifname ${P} ip6 saddr != { ::, fe80::/10 } iifname . ip6 saddr != ${ref(sets.addr6)} drop`,
  ];
  const input: string[] = [];
  const forward: string[] = [];
  const postrouting: string[] = [];
  if (n.internal) {
    // As an internal bridge: nothing out, nothing in, not the host (but replies to what it opened,
    // and neighbour discovery).
    input.push(`iifname ${P} ct state established,related accept`);
    input.push(`iifname ${P} icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept`);
    input.push(`iifname ${P} drop`);
    forward.push(`iifname ${P} oifname != ${P} drop`);
    forward.push(`oifname ${P} iifname != ${P} drop`);
  } else {
    forward.push(`oifname ${P} iifname != ${P} ct state established,related accept`);
    forward.push(`oifname ${P} iifname != ${P} ct status dnat accept`);
    forward.push(`oifname ${P} iifname != ${P} drop`);
    // Hairpin: a published port of this network reached from it through a host address.
    for (const x of n.ipv4) postrouting.push(`oifname ${P} ip saddr ${x.subnet} ct status dnat masquerade`);
    for (const x of v6) postrouting.push(`oifname ${P} ip6 saddr ${x.subnet} ct status dnat masquerade`);
    if (s.masquerade) {
      for (const x of n.ipv4) postrouting.push(`ip saddr ${x.subnet} oifname != ${P} ${s.snatIpv4 ? `snat ip to ${s.snatIpv4}` : 'masquerade'}`);
      for (const x of v6) postrouting.push(`ip6 saddr ${x.subnet} oifname != ${P} masquerade`);
    }
  }
  if (!s.icc) {
    // Containers of one network meet only in the host's routing: there it is a rule. A published
    // port reached through a host address stays reachable (Docker's meaning, with its proxy).
    if (!n.internal) forward.push(`iifname ${P} oifname ${P} ct status dnat accept`);
    forward.push(`iifname ${P} oifname ${P} drop`);
  }
  const chains: NetworkRules['chains'] = { 'inet guard': guard, 'inet forward': forward };
  if (input.length) chains['inet input'] = input;
  if (postrouting.length) chains['inet postrouting'] = postrouting;
  const decls: SetDecl[] = [
    { set: sets.ports, type: 'ifname' },
    { set: sets.addr4, type: 'ifname . ipv4_addr' },
    { set: sets.addr6, type: 'ifname . ipv6_addr' },
  ];
  // The iptables shim cannot follow per-container interfaces: it lets every host veth through
  // (`tsv+`); nftables above decides (a veth of a bridge never routes: its bridge does).
  return { chains, elements: [], sets: decls, shim: [{ name: 'tsv+', internal: n.internal }] };
}

/** An endpoint's elements: its veth among the network's, its addresses, and (for 127.0.0.1) a way out for loopback-sourced DNAT. */
export function p2pMembers(ep: Endpoint, n: Network): Element[] {
  const sets = p2pSets(n);
  const port = q(ep.hostVeth);
  const out: Element[] = [
    { set: sets.ports, key: port },
    { set: 'inet bridges', key: port },
  ];
  if (ep.ipv4) out.push({ set: sets.addr4, key: `${port} . ${plain(ep.ipv4)}` });
  if (ep.ipv6 && n.enableIpv6) out.push({ set: sets.addr6, key: `${port} . ${plain(ep.ipv6)}` });
  return out;
}
