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
 */
import type { Endpoint, Network } from '../../domain/types.js';
import type { Element, NetworkRules } from '../../kernel/types.js';
import { guardElements } from '../shared/guard.js';
import { settingsOf } from './settings.js';

const q = (s: string) => `"${s}"`;

export function bridgeRules(n: Network): NetworkRules {
  const s = settingsOf(n);
  const br = q(s.bridge);
  const input: string[] = [];
  const postrouting: string[] = [];
  const forward: string[] = [];
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
    for (const x of n.ipv4) postrouting.push(`oifname ${br} ip saddr ${x.subnet} ct status dnat masquerade`);
    for (const x of n.ipv6) postrouting.push(`oifname ${br} ip6 saddr ${x.subnet} ct status dnat masquerade`);
    if (s.masquerade) {
      for (const x of n.ipv4) postrouting.push(`ip saddr ${x.subnet} oifname != ${br} ${s.snatIpv4 ? `snat ip to ${s.snatIpv4}` : 'masquerade'}`);
      for (const x of n.ipv6) postrouting.push(`ip6 saddr ${x.subnet} oifname != ${br} masquerade`);
    }
    // Into a network: replies, published ports and traffic from the same bridge only — so no
    // other network (tsbridge's, Docker's, anyone's) and no other host reaches a container
    // directly. Out of a network to Docker's own bridges: the forward shim (rules/iptables.ts).
    forward.push(`oifname ${br} iifname != ${br} ct state established,related accept`);
    forward.push(`oifname ${br} iifname != ${br} ct status dnat accept`);
    forward.push(`oifname ${br} iifname != ${br} drop`);
  }
  const chains: NetworkRules['chains'] = {};
  if (input.length) chains['inet input'] = input;
  if (postrouting.length) chains['inet postrouting'] = postrouting;
  chains['inet forward'] = forward;
  return {
    chains,
    elements: [{ set: 'inet bridges', key: br }],
    sets: [],
    shim: [{ name: s.bridge, internal: n.internal }],
  };
}

/** An endpoint's port of the bridge: guarded, and without ICC in the no_icc set. */
export function bridgeMembers(ep: Endpoint, n: Network): Element[] {
  const out = guardElements(ep);
  if (!settingsOf(n).icc) out.push({ set: 'bridge no_icc', key: q(ep.hostVeth) });
  return out;
}
