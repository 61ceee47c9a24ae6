/**
 * nftables rules as a pure function of tsbridge's desired state.
 *
 * tsbridge owns two tables and touches nothing else in nftables:
 *   table inet tsbridge   NAT (masquerade/SNAT, port publishing) and forwarding policy
 *   table bridge tsbridge  what happens between ports of one bridge (ICC, anti-spoofing)
 * Published ports live in maps, so matching a packet costs one lookup however
 * many ports are published, and publishing a port is one `add element`.
 *
 * `fullRuleset` rebuilds both tables in one transaction (start-up, network
 * create/delete); `portDelta` adds or removes one endpoint's map elements.
 */
import type { EndpointRecord, NetworkRecord, PortMapping } from '../../state/types.js';

export const TABLE = 'tsbridge';

export interface FirewallView {
  networks: NetworkRecord[];
  endpoints: EndpointRecord[];
}

const q = (s: string) => `"${s}"`;

function familyOf(addr: string): 4 | 6 {
  return addr.includes(':') ? 6 : 4;
}

function hostOf(cidr: string): string {
  return cidr.split('/')[0]!;
}

/** One map element per (mapping, family) this endpoint has an address for. */
export function portElements(ep: EndpointRecord): { map: string; element: string }[] {
  const out: { map: string; element: string }[] = [];
  for (const p of ep.ports) {
    for (const fam of [4, 6] as const) {
      const target = fam === 4 ? ep.ipv4 : ep.ipv6;
      if (!target) continue;
      if (p.hostIp !== '' && familyOf(p.hostIp) !== fam) continue; // '0.0.0.0' is IPv4 only, '::' IPv6 only
      out.push(portElement(p, fam, hostOf(target)));
    }
  }
  return out;
}

function portElement(p: PortMapping, fam: 4 | 6, target: string): { map: string; element: string } {
  const value = `${target} . ${p.containerPort}`;
  if (p.hostIp === '' || p.hostIp === '0.0.0.0' || p.hostIp === '::') {
    return { map: `ports${fam}`, element: `${p.proto} . ${p.hostPort} : ${value}` };
  }
  return { map: `ports${fam}_addr`, element: `${p.hostIp} . ${p.proto} . ${p.hostPort} : ${value}` };
}

const MAP_TYPES: Record<string, string> = {
  ports4: 'inet_proto . inet_service : ipv4_addr . inet_service',
  ports4_addr: 'ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service',
  ports6: 'inet_proto . inet_service : ipv6_addr . inet_service',
  ports6_addr: 'ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service',
};

/** The whole of tsbridge's nftables state, as one `nft -f` script that replaces it atomically. */
export function fullRuleset(view: FirewallView): string {
  const nets = view.networks.filter((n) => n.phase !== 'deleting').sort((a, b) => a.id.localeCompare(b.id));
  const eps = view.endpoints.filter((e) => e.phase === 'ready' && nets.some((n) => n.id === e.networkId));
  eps.sort((a, b) => a.id.localeCompare(b.id));
  const L: string[] = [];
  // Declaring a table before deleting it makes the delete safe when it does not exist yet.
  L.push(`table inet ${TABLE}`, `delete table inet ${TABLE}`);
  L.push(`table bridge ${TABLE}`, `delete table bridge ${TABLE}`);
  if (nets.length === 0) return L.join('\n') + '\n'; // nothing to do: leave no trace

  L.push(`table inet ${TABLE} {`);
  L.push(...setBlock('bridges', 'ifname', nets.map((n) => q(n.bridge))));
  const elements: Record<string, string[]> = { ports4: [], ports4_addr: [], ports6: [], ports6_addr: [] };
  for (const ep of eps) for (const e of portElements(ep)) elements[e.map]!.push(e.element);
  for (const [name, type] of Object.entries(MAP_TYPES)) L.push(...setBlock(name, type, elements[name]!, 'map'));

  L.push('  chain prerouting {', '    type nat hook prerouting priority dstnat; policy accept;');
  L.push('    fib daddr type local jump publish', '  }');
  L.push('  chain output {', '    type nat hook output priority -100; policy accept;');
  L.push('    fib daddr type local jump publish', '  }');
  L.push('  chain publish {');
  L.push('    meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @ports4_addr');
  L.push('    meta nfproto ipv4 dnat ip to meta l4proto . th dport map @ports4');
  L.push('    meta nfproto ipv6 dnat ip6 to ip6 daddr . meta l4proto . th dport map @ports6_addr');
  L.push('    meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @ports6');
  L.push('  }');

  L.push('  chain postrouting {', '    type nat hook postrouting priority srcnat; policy accept;');
  for (const n of nets) {
    const br = q(n.bridge);
    // Hairpin: a container reaching a published port of its own network through a host address.
    L.push(`    ct status dnat iifname ${br} oifname ${br} masquerade`);
    if (n.internal || !n.masquerade) continue;
    for (const s of n.ipv4) {
      L.push(`    ip saddr ${s.subnet} oifname != ${br} ${n.snatIpv4 ? `snat ip to ${n.snatIpv4}` : 'masquerade'}`);
    }
    for (const s of n.ipv6) L.push(`    ip6 saddr ${s.subnet} oifname != ${br} masquerade`);
  }
  // Published ports reached from the host's loopback: the source must become a bridge address.
  L.push('    oifname @bridges ip saddr 127.0.0.0/8 ct status dnat masquerade');
  L.push('    oifname @bridges ip6 saddr ::1 ct status dnat masquerade');
  L.push('  }');

  L.push('  chain forward {', '    type filter hook forward priority filter - 1; policy accept;');
  for (const n of nets) {
    const br = q(n.bridge);
    if (n.internal) {
      L.push(`    iifname ${br} oifname != ${br} drop`);
      L.push(`    oifname ${br} iifname != ${br} drop`);
      continue;
    }
    // Into a network: replies, published ports and traffic within the network only.
    L.push(`    oifname ${br} iifname != ${br} ct state established,related accept`);
    L.push(`    oifname ${br} iifname != ${br} ct status dnat accept`);
    L.push(`    oifname ${br} iifname != ${br} drop`);
  }
  L.push('  }');
  L.push('}');

  // Between ports of one bridge: only what the bridge family sees.
  L.push(`table bridge ${TABLE} {`);
  const noIcc = eps.filter((e) => nets.find((n) => n.id === e.networkId && !n.icc)).map((e) => q(e.hostVeth));
  L.push(...setBlock('no_icc', 'ifname', noIcc));
  L.push('  chain forward {', '    type filter hook forward priority filter; policy accept;');
  L.push('    iifname @no_icc drop', '  }');
  L.push('}');
  return L.join('\n') + '\n';
}

function setBlock(name: string, type: string, elements: string[], kind: 'set' | 'map' = 'set'): string[] {
  const out = [`  ${kind} ${name} {`, `    type ${type}`];
  if (elements.length > 0) out.push(`    elements = { ${elements.join(', ')} }`);
  out.push('  }');
  return out;
}

/** One transaction adding (or deleting) one endpoint's published ports and ICC membership. */
export function endpointDelta(ep: EndpointRecord, net: NetworkRecord, op: 'add' | 'delete'): string {
  const L: string[] = [];
  // nft 1.0.6 has no `destroy`: adding before deleting makes a delete succeed
  // whether or not the element was there, so a repeated delete is harmless.
  for (const e of portElements(ep)) {
    L.push(`add element inet ${TABLE} ${e.map} { ${e.element} }`);
    if (op === 'delete') L.push(`delete element inet ${TABLE} ${e.map} { ${e.element.split(' : ')[0]} }`);
  }
  if (!net.icc) {
    L.push(`add element bridge ${TABLE} no_icc { ${q(ep.hostVeth)} }`);
    if (op === 'delete') L.push(`delete element bridge ${TABLE} no_icc { ${q(ep.hostVeth)} }`);
  }
  return L.length ? L.join('\n') + '\n' : '';
}
