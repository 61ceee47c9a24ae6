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
 * create/delete); `endpointDelta` adds or removes one endpoint's map elements.
 *
 * How each path to a published port works (docs/ports.md has the long form):
 *   from another host     prerouting DNAT; the container sees the client's own address
 *   from the host         output DNAT; via 127.0.0.0/8 the source is masqueraded to the
 *                         bridge address (route_localnet=1 on tsbridge bridges lets it out)
 *   hairpin               a container (or another container of its network) reaching the
 *                         port through a host address: the DNATed packet goes back out the
 *                         bridge it came from, source masqueraded to the bridge address —
 *                         matched on (bridge, source subnet), never on the input interface,
 *                         which netfilter does not know when br_netfilter bridges the packet
 *   other networks        routed between bridges, masqueraded like any egress
 *   ::1                   never DNATed: IPv6 has no route_localnet, a reply to ::1 arriving
 *                         on a bridge is dropped by the kernel; not DNATing lets the host
 *                         refuse at once so a client falls back to 127.0.0.1
 *   127.0.0.0/8 from the wire   dropped in `localnet` before DNAT: a port bound to
 *                         127.0.0.1 must not be reachable from other hosts, and
 *                         route_localnet must not open the host's loopback to containers
 */
import type { EndpointRecord, NetworkRecord, PortMapping } from '../../state/types.js';

export const DEFAULT_TABLE = 'tsbridge';

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

/** One element of a port map: `key : value` is `element`, `key` alone deletes it. */
export interface PortElement {
  map: 'ports4' | 'ports4_addr' | 'ports6' | 'ports6_addr';
  key: string;
  element: string;
}

/** One map element per (mapping, family) this endpoint has an address for. */
export function portElements(ep: EndpointRecord): PortElement[] {
  const out: PortElement[] = [];
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

function portElement(p: PortMapping, fam: 4 | 6, target: string): PortElement {
  const value = `${target} . ${p.containerPort}`;
  const wildcard = p.hostIp === '' || p.hostIp === '0.0.0.0' || p.hostIp === '::';
  const map = wildcard ? (`ports${fam}` as const) : (`ports${fam}_addr` as const);
  const key = wildcard ? `${p.proto} . ${p.hostPort}` : `${p.hostIp} . ${p.proto} . ${p.hostPort}`;
  return { map, key, element: `${key} : ${value}` };
}

const MAP_TYPES: Record<string, string> = {
  ports4: 'inet_proto . inet_service : ipv4_addr . inet_service',
  ports4_addr: 'ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service',
  ports6: 'inet_proto . inet_service : ipv6_addr . inet_service',
  ports6_addr: 'ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service',
};

/** The whole of tsbridge's nftables state, as one `nft -f` script that replaces it atomically. */
export function fullRuleset(view: FirewallView, TABLE: string = DEFAULT_TABLE): string {
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
  const elements: Record<PortElement['map'], string[]> = { ports4: [], ports4_addr: [], ports6: [], ports6_addr: [] };
  const seen = new Set<string>();
  for (const ep of eps) {
    for (const e of portElements(ep)) {
      // A key twice would fail the whole transaction; reservation prevents it, this keeps start-up safe.
      if (seen.has(`${e.map} ${e.key}`)) continue;
      seen.add(`${e.map} ${e.key}`);
      elements[e.map].push(e.element);
    }
  }
  for (const [name, type] of Object.entries(MAP_TYPES)) L.push(...setBlock(name, type, elements[name as PortElement['map']], 'map'));

  // Before any NAT: nothing from the wire (or from a container) may reach 127.0.0.0/8. The
  // kernel drops such martians itself, but only until DNAT has rewritten them — and
  // route_localnet=1 on the bridges would otherwise let containers reach the host's loopback.
  L.push('  chain localnet {', '    type filter hook prerouting priority raw; policy accept;');
  L.push('    iifname != "lo" ip daddr 127.0.0.0/8 drop', '  }');
  L.push('  chain prerouting {', '    type nat hook prerouting priority dstnat; policy accept;');
  L.push('    fib daddr type local jump publish', '  }');
  L.push('  chain output {', '    type nat hook output priority -100; policy accept;');
  L.push('    ip6 daddr ::1 return');
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
    if (n.internal) continue; // no published ports, no egress
    // Hairpin: a published port of this network reached from this network through a host address.
    for (const s of n.ipv4) L.push(`    oifname ${br} ip saddr ${s.subnet} ct status dnat masquerade`);
    for (const s of n.ipv6) L.push(`    oifname ${br} ip6 saddr ${s.subnet} ct status dnat masquerade`);
    if (!n.masquerade) continue;
    for (const s of n.ipv4) {
      L.push(`    ip saddr ${s.subnet} oifname != ${br} ${n.snatIpv4 ? `snat ip to ${n.snatIpv4}` : 'masquerade'}`);
    }
    for (const s of n.ipv6) L.push(`    ip6 saddr ${s.subnet} oifname != ${br} masquerade`);
  }
  // Published ports reached from the host's loopback: the source must become a bridge address.
  L.push('    oifname @bridges ip saddr 127.0.0.0/8 ct status dnat masquerade');
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
export function endpointDelta(ep: EndpointRecord, net: NetworkRecord, op: 'add' | 'delete', TABLE: string = DEFAULT_TABLE): string {
  const L: string[] = [];
  // nft 1.0.6 has no `destroy`: adding before deleting makes a delete succeed
  // whether or not the element was there, so a repeated delete is harmless.
  // All of an endpoint's ports go in one statement per map: one transaction, one
  // parse, however many ports.
  const byMap = new Map<string, PortElement[]>();
  for (const e of portElements(ep)) byMap.set(e.map, [...(byMap.get(e.map) ?? []), e]);
  for (const [map, els] of byMap) {
    L.push(`add element inet ${TABLE} ${map} { ${els.map((e) => e.element).join(', ')} }`);
    if (op === 'delete') L.push(`delete element inet ${TABLE} ${map} { ${els.map((e) => e.key).join(', ')} }`);
  }
  if (!net.icc) {
    L.push(`add element bridge ${TABLE} no_icc { ${q(ep.hostVeth)} }`);
    if (op === 'delete') L.push(`delete element bridge ${TABLE} no_icc { ${q(ep.hostVeth)} }`);
  }
  return L.length ? L.join('\n') + '\n' : '';
}
